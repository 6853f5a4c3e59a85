"""Late fusion: ROI heads that pool every proposal from every slice and fuse the N ROI features."""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from torch import nn

from .backbone import SLICES_SUFFIX
from .fusion import SliceFusion, build_fusion


class SliceFusionPooler(nn.Module):
    """Pools the same boxes from each slice's features and fuses the N ROI features.

    Input: a list (one per level) of (B, N, C, h, w) features and B Boxes; output: (R, C, S, S).
    """

    def __init__(self, pooler: ROIPooler, fusion: SliceFusion):
        super().__init__()
        self.pooler = pooler
        self.fusion = fusion

    def forward(self, features: list[torch.Tensor], boxes: list) -> torch.Tensor:
        num_slices = features[0].shape[1]
        pooled = [self.pooler([f[:, n] for f in features], boxes) for n in range(num_slices)]
        return self.fusion(torch.stack(pooled, dim=1))


@ROI_HEADS_REGISTRY.register()
class SliceFusionROIHeads(StandardROIHeads):
    """StandardROIHeads whose mask head (and, with MODEL.FUSION.LATE.BOX, box head) reads ROI
    features fused over the N slices by MODEL.FUSION.LATE.NAME. Needs a backbone that returns
    ``<level>_slices`` features (``build_late_fusion_backbone``)."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        late = cfg.MODEL.FUSION.LATE
        num_slices = cfg.INPUT.NUM_SLICES
        if ret.get("mask_pooler") is None or not cfg.MODEL.MASK_ON:
            raise ValueError("SliceFusionROIHeads needs MODEL.MASK_ON and a mask pooler")
        mask_channels = input_shape[ret["mask_in_features"][0]].channels
        ret["mask_pooler"] = SliceFusionPooler(
            ret["mask_pooler"], build_fusion(late.NAME, mask_channels, num_slices, cfg))
        ret["fuse_box"] = late.BOX
        if late.BOX:
            box_channels = input_shape[ret["box_in_features"][0]].channels
            ret["box_pooler"] = SliceFusionPooler(
                ret["box_pooler"], build_fusion(late.NAME, box_channels, num_slices, cfg))
        return ret

    @configurable
    def __init__(self, *, fuse_box: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.fuse_box = fuse_box

    @staticmethod
    def _slice_features(features: dict[str, torch.Tensor], levels: list[str]) -> dict:
        missing = [f for f in levels if f + SLICES_SUFFIX not in features]
        if missing:
            raise KeyError(f"late fusion needs per-slice features {missing}; use "
                           "MODEL.BACKBONE.NAME build_late_fusion_backbone")
        return {f: features[f + SLICES_SUFFIX] for f in levels}

    def _forward_box(self, features, proposals):
        if self.fuse_box:
            features = self._slice_features(features, self.box_in_features)
        return super()._forward_box(features, proposals)

    def _forward_mask(self, features, instances):
        return super()._forward_mask(self._slice_features(features, self.mask_in_features), instances)
