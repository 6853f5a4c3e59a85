"""Models: fusion backbones, late-fusion ROI heads and the neighbour-mask head, the meta-architecture,
intensity front-end, checkpoint adaptation.

Importing this package registers them with detectron2's registries.
"""
from . import backbone, rcnn, roi_heads  # noqa: F401  (registration)
from .checkpoint import SliceStackCheckpointer
from .fusion import FUSION_REGISTRY, build_fusion, fusion_weights

__all__ = ["SliceStackCheckpointer", "FUSION_REGISTRY", "build_fusion", "fusion_weights"]
