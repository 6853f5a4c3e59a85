"""ROI heads: late fusion (pool every proposal from every slice and fuse the N ROI features), and
the neighbour-mask head (every ROI also predicts its object's mask in each neighbour slice, so
that training needs what the neighbours show)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.mask_head import (ROI_MASK_HEAD_REGISTRY, MaskRCNNConvUpsampleHead,
                                                     mask_rcnn_inference, mask_rcnn_loss)
from detectron2.structures import Instances
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


def neighbor_mask_loss(logits: torch.Tensor, instances: list[Instances]) -> torch.Tensor:
    """Binary cross-entropy of (R, M, S, S) neighbour-mask logits of the foreground proposals
    against ``gt_neighbor_masks`` cropped to the proposal boxes, averaged over the valid
    (proposal, neighbour) pairs."""
    size = logits.shape[-1]
    targets, valid = [], []
    for item in instances:
        if len(item) == 0:
            continue
        t, v = item.gt_neighbor_masks.crop_and_resize(item.proposal_boxes.tensor, size)
        targets.append(t)
        valid.append(v)
    if not targets:
        return logits.sum() * 0
    targets, valid = cat(targets, dim=0), cat(valid, dim=0).to(logits.dtype)
    if valid.sum() == 0:
        return logits.sum() * 0
    per_mask = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=(2, 3))
    return (per_mask * valid).sum() / valid.sum()


@ROI_MASK_HEAD_REGISTRY.register()
class NeighborMaskHead(MaskRCNNConvUpsampleHead):
    """MaskRCNNConvUpsampleHead with num_slices - 1 more (class-agnostic) mask logits: the ROI's
    object in each neighbour slice of the window, in window order without the centre.

    Training adds ``loss_neighbor_mask`` (weight MODEL.ROI_MASK_HEAD.NEIGHBOR_LOSS_WEIGHT);
    inference adds ``pred_neighbor_masks``: (R, M, S, S) probabilities, pasted to the image by
    ``SliceStackRCNN``. With one slice it is MaskRCNNConvUpsampleHead.
    """

    @configurable
    def __init__(self, input_shape, *, num_classes: int, num_neighbors: int, neighbor_loss_weight: float,
                 **kwargs):
        super().__init__(input_shape, num_classes=num_classes, **kwargs)
        self.num_classes = num_classes
        self.num_neighbors = num_neighbors
        self.neighbor_loss_weight = neighbor_loss_weight
        if num_neighbors:
            old = self.predictor
            self.predictor = Conv2d(old.in_channels, num_classes + num_neighbors, kernel_size=1)
            nn.init.normal_(self.predictor.weight, std=0.001)
            nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["num_neighbors"] = cfg.INPUT.NUM_SLICES - 1
        ret["neighbor_loss_weight"] = cfg.MODEL.ROI_MASK_HEAD.NEIGHBOR_LOSS_WEIGHT
        return ret

    def forward(self, x: torch.Tensor, instances: list[Instances]):
        x = self.layers(x)  # (R, num_classes + M, S, S)
        centre, neighbors = x[:, : self.num_classes], x[:, self.num_classes :]
        if self.training:
            losses = {"loss_mask": mask_rcnn_loss(centre, instances, self.vis_period) * self.loss_weight}
            if self.num_neighbors:
                losses["loss_neighbor_mask"] = neighbor_mask_loss(neighbors, instances) * self.neighbor_loss_weight
            return losses
        mask_rcnn_inference(centre, instances)
        if self.num_neighbors:
            probabilities = neighbors.sigmoid().split([len(i) for i in instances])
            for item, p in zip(instances, probabilities):
                item.pred_neighbor_masks = p
        return instances
