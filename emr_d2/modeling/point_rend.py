"""PointRend mask heads (detectron2.projects.point_rend) on slice stacks.

detectron2's PointRendMaskHead (and ImplicitPointRendMaskHead) pool their coarse ROI features and
sample their points from the features the ROI heads hand them: the fused features of early and
channel fusion, as they are. Late fusion hands per-slice features (``(B, N, C, h, w)`` by level):
SliceFusionPointRendMaskHead fuses the coarse head's N ROI features with MODEL.FUSION.LATE.NAME and
samples the points from the centre slice's own features, because the boundary is a property of
the centre slice while the neighbours tell whether and how far the object is there.
"""
from __future__ import annotations

import torch
from detectron2.modeling.roi_heads.mask_head import ROI_MASK_HEAD_REGISTRY
from detectron2.projects.point_rend import PointRendMaskHead

from .fusion import build_fusion

# Mask heads that pool for themselves (MODEL.ROI_MASK_HEAD.POOLER_TYPE "").
POINT_REND_HEADS = ("PointRendMaskHead", "ImplicitPointRendMaskHead",
                    "SliceFusionPointRendMaskHead")


@ROI_MASK_HEAD_REGISTRY.register()
class SliceFusionPointRendMaskHead(PointRendMaskHead):
    """PointRendMaskHead for late fusion: coarse ROI features pooled from each of the N slices
    and fused ((R, N, C, S, S) -> (R, C, S, S)); point features from the centre slice."""

    def __init__(self, cfg, input_shape):
        super().__init__(cfg, input_shape)
        channels = sum(input_shape[f].channels for f in self.roi_pooler_in_features)
        self.fusion = build_fusion(cfg.MODEL.FUSION.LATE.NAME, cfg, channels, cfg.INPUT.NUM_SLICES)

    def _roi_pooler(self, features: dict[str, torch.Tensor], boxes) -> torch.Tensor:
        num_slices = next(iter(features.values())).shape[1]
        pool = super()._roi_pooler
        pooled = [pool({k: f[:, n] for k, f in features.items()}, boxes) for n in range(num_slices)]
        return self.fusion(torch.stack(pooled, dim=1))

    def _point_pooler(self, features: dict[str, torch.Tensor], boxes, point_coords) -> torch.Tensor:
        centre = {k: f[:, f.shape[1] // 2] for k, f in features.items()}
        return super()._point_pooler(centre, boxes, point_coords)
