"""Models: fusion backbones, ROI heads (z-extent branch, late fusion), the neighbour-mask and
PointRend mask heads, the meta-architecture, intensity front-end, checkpoint adaptation.

Importing this package registers them with detectron2's registries.
"""
from . import backbone, point_rend, rcnn, roi_heads  # noqa: F401  (registration)
from .checkpoint import SliceStackCheckpointer
from .fusion import FUSION_REGISTRY, build_fusion, fusion_weights

__all__ = ["SliceStackCheckpointer", "FUSION_REGISTRY", "build_fusion", "fusion_weights"]
