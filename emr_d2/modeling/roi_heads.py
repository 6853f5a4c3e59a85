"""ROI heads: the z-extent branch (every detection also predicts how far its object reaches in
z), late fusion (pool every proposal from every slice and fuse the N ROI features), and the
neighbour-mask head (every ROI also predicts its object's mask in each neighbour slice, so that
training needs what the neighbours show)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, cat
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.mask_head import (ROI_MASK_HEAD_REGISTRY,
                                                     MaskRCNNConvUpsampleHead,
                                                     build_mask_head, mask_rcnn_inference,
                                                     mask_rcnn_loss)
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


class ZExtentHead(nn.Module):
    """Two numbers per ROI from its (R, C, S, S) pooled features: how far its object reaches
    below and above the ROI's slice, in units of ``scale_um``. A stride-2 convolution and two
    fully connected layers: (R, C, S, S) -> (R, 2)."""

    @configurable
    def __init__(self, *, channels: int, pooler_resolution: int, fc_dim: int):
        """
        Args:
            channels: C, the channels of the pooled features.
            pooler_resolution: S, the side of the pooled features.
            fc_dim: width of the fully connected layer.
        """
        super().__init__()
        self.conv = Conv2d(channels, channels, kernel_size=3, stride=2, padding=1,
                           activation=F.relu)
        side = (pooler_resolution + 1) // 2
        self.fc = nn.Linear(channels * side * side, fc_dim)
        self.predictor = nn.Linear(fc_dim, 2)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.constant_(self.predictor.bias, 1.0)  # start at the typical reach

    @classmethod
    def from_config(cls, cfg, channels: int) -> dict:
        return {
            "channels": channels,
            "pooler_resolution": cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION,
            "fc_dim": cfg.MODEL.Z_EXTENT.FC_DIM,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (R, C, S, S) pooled ROI features -> (R, 2) reaches, in units of the scale."""
        return self.predictor(F.relu(self.fc(self.conv(x).flatten(1))))


def z_extent_loss(predicted: torch.Tensor, instances: list[Instances],
                  scale_um: float) -> torch.Tensor:
    """Smooth L1 between (R, 2) predicted reaches (units of scale_um) of the foreground proposals
    and their ``gt_z_extent`` (um) / scale_um, averaged over the sides in ``gt_z_extent_valid``
    (a side cut by the stack end, or without a 3D reference, is not trained)."""
    instances = [i for i in instances if len(i)]
    targets = cat([i.gt_z_extent for i in instances],
                  dim=0) / scale_um if instances else predicted[:0]
    valid = cat([i.gt_z_extent_valid for i in instances],
                dim=0) if instances else predicted[:0].bool()
    if valid.sum() == 0:
        return predicted.sum() * 0
    return F.smooth_l1_loss(predicted[valid], targets[valid].to(predicted.dtype), beta=0.1)


@ROI_HEADS_REGISTRY.register()
class SliceStackROIHeads(StandardROIHeads):
    """StandardROIHeads with the z-extent branch (MODEL.Z_EXTENT.ENABLED): every detection also
    predicts ``pred_z_extent`` (R, 2), the distances in um from its slice down to the first and
    up to the last slice of its object, from the same pooled features as the mask head (fused
    over the slices by whichever fusion the model uses). Training adds ``loss_z_extent``
    against the proposals' ``gt_z_extent`` (SliceStackMapper). Without it, StandardROIHeads."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        extent = cfg.MODEL.Z_EXTENT
        if extent.ENABLED:
            levels = ret["z_extent_in_features"] = list(cfg.MODEL.ROI_HEADS.IN_FEATURES)
            resolution = cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION
            ret["z_extent_head"] = ZExtentHead(cfg, channels=input_shape[levels[0]].channels)
            ret["z_extent_scale_um"] = extent.SCALE_UM
            ret["z_extent_loss_weight"] = extent.LOSS_WEIGHT
            if ret["mask_pooler"] is None:  # a mask head that pools for itself (PointRend)
                ret["z_extent_pooler"] = ROIPooler(resolution,
                                                   tuple(1.0 / input_shape[k].stride
                                                         for k in levels),
                                                   cfg.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO,
                                                   "ROIAlignV2")
        return ret

    @classmethod
    def _init_mask_head(cls, cfg, input_shape):
        """detectron2's; a mask head that pools for itself (PointRend) also gets the features its
        point head reads beyond ROI_HEADS.IN_FEATURES (``p2_center``:
        MODEL.FUSION.CENTER_OUTPUTS)."""
        if not cfg.MODEL.MASK_ON or cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE:
            return super()._init_mask_head(cfg, input_shape)
        in_features = list(
            dict.fromkeys([*cfg.MODEL.ROI_HEADS.IN_FEATURES, *cfg.MODEL.POINT_HEAD.IN_FEATURES]))
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.POINT_HEAD.IN_FEATURES: {missing} are not among the backbone's outputs "
                f"{list(input_shape)}")
        return {"mask_in_features": in_features, "mask_pooler": None,
                "mask_head": build_mask_head(cfg, {f: input_shape[f] for f in in_features})}

    @configurable
    def __init__(self, *, z_extent_head: nn.Module | None = None,
                 z_extent_pooler: nn.Module | None = None,
                 z_extent_in_features: list[str] | None = None, z_extent_scale_um: float = 4.0,
                 z_extent_loss_weight: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.z_extent_head = z_extent_head
        self.z_extent_in_features = z_extent_in_features
        self.z_extent_pooler = z_extent_pooler  # None: the mask pooler's features
        self.z_extent_scale_um = z_extent_scale_um
        self.z_extent_loss_weight = z_extent_loss_weight

    def _mask_level_features(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The features the mask pooler reads, by level."""
        return features

    def _z_extent_logits(self, features: dict[str, torch.Tensor], boxes: list) -> torch.Tensor:
        levels = self._mask_level_features(features)
        pooler = self.mask_pooler if self.z_extent_pooler is None else self.z_extent_pooler
        return self.z_extent_head(pooler([levels[f] for f in self.z_extent_in_features], boxes))

    def forward(self, images, features, proposals, targets=None):
        instances, losses = super().forward(images, features, proposals, targets)
        if self.training and self.z_extent_head is not None:
            foreground, _ = select_foreground_proposals(instances, self.num_classes)
            logits = self._z_extent_logits(features, [x.proposal_boxes for x in foreground])
            losses["loss_z_extent"] = (z_extent_loss(logits, foreground, self.z_extent_scale_um)
                                       * self.z_extent_loss_weight)
        return instances, losses

    def _forward_mask(self, features, instances):
        if self.training and self.mask_on and not any(
                (x.gt_classes != self.num_classes).any() for x in instances):
            # A batch without foreground (every crop empty) has no mask loss; detectron2's
            # PointRend heads cannot take one (their point sampling concatenates nothing).
            return {"loss_mask": sum(p.sum() for p in self.mask_head.parameters()) * 0.0}
        return super()._forward_mask(features, instances)

    def detect_boxes(self, features: dict[str, torch.Tensor],
                     proposals: list[Instances]) -> list[Instances]:
        """Inference of the box head alone: per image, ``pred_boxes``, ``scores`` and
        ``pred_classes`` after its score threshold and NMS (no masks; test-time augmentation
        merges the boxes of every transform before the mask heads run)."""
        return self._forward_box(features, proposals)

    def forward_with_given_boxes(self, features, instances):
        instances = super().forward_with_given_boxes(features, instances)
        if self.z_extent_head is not None:
            logits = self._z_extent_logits(features, [x.pred_boxes for x in instances])
            reach = logits.clamp(min=0) * self.z_extent_scale_um
            for item, r in zip(instances, reach.split([len(i) for i in instances])):
                item.pred_z_extent = r
        return instances


@ROI_HEADS_REGISTRY.register()
class SliceFusionROIHeads(SliceStackROIHeads):
    """SliceStackROIHeads whose mask head and z-extent branch (and, with MODEL.FUSION.LATE.BOX,
    box head) read ROI features fused over the N slices by MODEL.FUSION.LATE.NAME. Needs a backbone
    that returns ``<level>_slices`` features (``build_late_fusion_backbone``)."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        late = cfg.MODEL.FUSION.LATE
        num_slices = cfg.INPUT.NUM_SLICES
        if not cfg.MODEL.MASK_ON:
            raise ValueError("SliceFusionROIHeads needs MODEL.MASK_ON")
        mask_channels = input_shape[ret["mask_in_features"][0]].channels
        # else the mask head fuses (SliceFusionPointRendMaskHead)
        if ret["mask_pooler"] is not None:
            ret["mask_pooler"] = SliceFusionPooler(
                ret["mask_pooler"], build_fusion(late.NAME, cfg, mask_channels, num_slices))
        if ret.get("z_extent_pooler") is not None:
            ret["z_extent_pooler"] = SliceFusionPooler(
                ret["z_extent_pooler"], build_fusion(late.NAME, cfg, mask_channels, num_slices))
        ret["fuse_box"] = late.BOX
        if late.BOX:
            box_channels = input_shape[ret["box_in_features"][0]].channels
            ret["box_pooler"] = SliceFusionPooler(
                ret["box_pooler"], build_fusion(late.NAME, cfg, box_channels, num_slices))
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

    def _mask_level_features(self, features):
        return self._slice_features(features, self.mask_in_features)

    def _forward_mask(self, features, instances):
        return super()._forward_mask(self._mask_level_features(features), instances)


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
    per_mask = F.binary_cross_entropy_with_logits(logits, targets,
                                                  reduction="none").mean(dim=(2, 3))
    return (per_mask * valid).sum() / valid.sum()


def predicts_neighbor_masks(cfg) -> bool:
    """Whether the model of ``cfg`` predicts neighbour masks: a mask head that is a
    :class:`NeighborMaskHead`, and neighbour slices to predict."""
    head = ROI_MASK_HEAD_REGISTRY.get(cfg.MODEL.ROI_MASK_HEAD.NAME)
    return (
        bool(cfg.MODEL.MASK_ON) and cfg.INPUT.NUM_SLICES > 1 and issubclass(head, NeighborMaskHead)
    )


@ROI_MASK_HEAD_REGISTRY.register()
class NeighborMaskHead(MaskRCNNConvUpsampleHead):
    """MaskRCNNConvUpsampleHead with num_slices - 1 more (class-agnostic) mask logits: the ROI's
    object in each neighbour slice of the window, in window order without the centre.

    Training adds ``loss_neighbor_mask`` (weight MODEL.ROI_MASK_HEAD.NEIGHBOR_LOSS_WEIGHT);
    inference adds ``pred_neighbor_masks``: (R, M, S, S) probabilities, pasted to the image by
    ``SliceStackRCNN``. With one slice it is MaskRCNNConvUpsampleHead.
    """

    @configurable
    def __init__(self, input_shape, *, num_classes: int, num_neighbors: int,
                 neighbor_loss_weight: float,
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
            losses = {"loss_mask": mask_rcnn_loss(centre, instances, self.vis_period)
                      * self.loss_weight}
            if self.num_neighbors:
                losses["loss_neighbor_mask"] = (
                    neighbor_mask_loss(neighbors, instances) * self.neighbor_loss_weight
                )
            return losses
        mask_rcnn_inference(centre, instances)
        if self.num_neighbors:
            probabilities = neighbors.sigmoid().split([len(i) for i in instances])
            for item, p in zip(instances, probabilities):
                item.pred_neighbor_masks = p
        return instances
