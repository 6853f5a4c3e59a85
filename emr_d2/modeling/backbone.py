"""Registered backbones for N-slice input (B, N, H, W).

- ``build_channel_fusion_backbone``: the N slices are N input channels of a ResNet-FPN stem.
- ``build_early_fusion_backbone``: one backbone with shared weights runs on every slice; a fusion
  module (any of FUSION_REGISTRY, cross-slice attention included) merges the N feature maps at
  the FPN levels MODEL.FUSION.LEVELS (all by default); other levels pass the centre slice's.
  The levels MODEL.FUSION.CENTER_OUTPUTS also go out unfused, as ``<level>_center`` (the centre
  slice's own features, e.g. for PointRend's point head: ``MODEL.POINT_HEAD.IN_FEATURES``).
- ``build_late_fusion_backbone``: shared backbone; returns the centre slice's (or fused)
  features for the RPN and every slice's features (``<level>_slices``) for the ROI heads
  (SliceFusionROIHeads).

The shared-backbone variants split their work into ``forward_slices`` (per slice, independent of
the window) and ``combine`` (per window), which lets whole-volume inference compute each slice's
features once.
"""
from __future__ import annotations

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone
from detectron2.modeling.backbone.fpn import build_resnet_fpn_backbone
from torch import nn
from torch.utils.checkpoint import checkpoint

from .fusion import build_fusion

SLICES_SUFFIX = "_slices"
CENTER_SUFFIX = "_center"
# Where late fusion's RPN features come from: the centre slice, or the MODEL.FUSION.NAME fusion.
PROPOSAL_SOURCES = ("center", "fused")
# Backbones that hand every slice's features to the ROI heads (SliceFusionROIHeads).
LATE_FUSION_BACKBONES = ("build_late_fusion_backbone",)


@BACKBONE_REGISTRY.register()
def build_channel_fusion_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """ResNet-FPN whose stem takes the N slices as N channels (input_shape.channels == N).

    A 1- or 3-channel stem in MODEL.WEIGHTS is adapted on loading (see
    ``emr_d2.modeling.checkpoint``).
    """
    return build_resnet_fpn_backbone(cfg, input_shape)


class SharedSliceBackbone(Backbone):
    """Runs ``slice_backbone`` (1 input channel) on each of the N slices with shared weights."""

    def __init__(self, slice_backbone: Backbone, num_slices: int, checkpoint_slices: bool = False):
        super().__init__()
        self.slice_backbone = slice_backbone
        self.num_slices = num_slices
        self.checkpoint_slices = checkpoint_slices

    @property
    def size_divisibility(self) -> int:
        return self.slice_backbone.size_divisibility

    @property
    def padding_constraints(self) -> dict:
        return self.slice_backbone.padding_constraints

    def output_shape(self) -> dict[str, ShapeSpec]:
        return self.slice_backbone.output_shape()

    def forward_slices(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, S, H, W) slices -> {level: (B, S, C, h, w)}, each slice on its own.

        With ``checkpoint_slices`` and gradients on, each window position runs under activation
        checkpointing: its activations are recomputed in the backward pass, one at a time.
        """
        b, s, h, w = x.shape
        if self.checkpoint_slices and torch.is_grad_enabled():
            per_slice = [checkpoint(self.slice_backbone, x[:, n : n + 1], use_reentrant=False)
                         for n in range(s)]
            return {k: torch.stack([f[k] for f in per_slice], dim=1) for k in per_slice[0]}
        features = self.slice_backbone(x.reshape(b * s, 1, h, w))
        return {k: v.reshape(b, s, *v.shape[1:]) for k, v in features.items()}

    def combine(self, slice_features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{level: (B, N, C, h, w)} of one window -> the features the heads read."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, N, H, W) normalised N-slice stacks."""
        if x.shape[1] != self.num_slices:
            raise ValueError(f"expected {self.num_slices} slices per input, got {x.shape[1]}")
        return self.combine(self.forward_slices(x))


class _LevelFusion(nn.Module):
    """Fusion at the given FPN levels: one module per level, or one shared by them all. Levels
    without fusion pass the centre slice's features."""

    def __init__(self, name: str, levels: list[str], channels: int, num_slices: int, cfg,
                 per_level: bool):
        super().__init__()
        if per_level:
            self.modules_by_level = nn.ModuleDict(
                {level: build_fusion(name, cfg, channels, num_slices) for level in levels})
        else:
            shared = build_fusion(name, cfg, channels, num_slices)
            self.modules_by_level = nn.ModuleDict({"shared": shared})
        self.levels = list(levels)
        self.per_level = per_level
        self.centre = num_slices // 2

    def forward(self, level: str, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C, h, w) features of one level -> (B, C, h, w)."""
        if level not in self.levels:
            return x[:, self.centre]
        return self.modules_by_level[level if self.per_level else "shared"](x)


class EarlyFusionBackbone(SharedSliceBackbone):
    """Fuses the N slices' features at the chosen FPN levels; ``center_outputs`` levels are also
    output as the centre slice's own features, ``<level>_center`` (B, C, h, w)."""

    def __init__(self, slice_backbone: Backbone, num_slices: int, fusion: _LevelFusion,
                 checkpoint_slices: bool = False, center_outputs: tuple[str, ...] = ()):
        super().__init__(slice_backbone, num_slices, checkpoint_slices)
        self.fusion = fusion
        self.center_outputs = tuple(center_outputs)

    def output_shape(self) -> dict[str, ShapeSpec]:
        shapes = self.slice_backbone.output_shape()
        return shapes | {level + CENTER_SUFFIX: shapes[level] for level in self.center_outputs}

    def combine(self, slice_features):
        out = {level: self.fusion(level, f) for level, f in slice_features.items()}
        for level in self.center_outputs:
            out[level + CENTER_SUFFIX] = slice_features[level][:, self.num_slices // 2]
        return out


class LateFusionBackbone(SharedSliceBackbone):
    """Passes every slice's features on to the ROI heads; the RPN gets the centre slice's
    features, or features fused by ``proposal_fusion`` when given."""

    def __init__(self, slice_backbone: Backbone, num_slices: int,
                 proposal_fusion: _LevelFusion | None = None, checkpoint_slices: bool = False):
        super().__init__(slice_backbone, num_slices, checkpoint_slices)
        self.proposal_fusion = proposal_fusion

    def combine(self, slice_features):
        centre = self.num_slices // 2
        out = {}
        for level, f in slice_features.items():
            out[level] = self.proposal_fusion(level, f) if self.proposal_fusion else f[:, centre]
            out[level + SLICES_SUFFIX] = f
        return out


def _slice_backbone(cfg) -> Backbone:
    return BACKBONE_REGISTRY.get(cfg.MODEL.FUSION.SLICE_BACKBONE)(cfg, ShapeSpec(channels=1))


def _levels_and_channels(backbone: Backbone) -> tuple[list[str], int]:
    shapes = backbone.output_shape()
    channels = {s.channels for s in shapes.values()}
    if len(channels) != 1:
        raise ValueError(f"slice fusion needs one channel count on all levels, got {shapes}")
    return list(shapes), channels.pop()


def _fusion_levels(cfg, levels: list[str]) -> list[str]:
    """MODEL.FUSION.LEVELS (all levels when empty), checked against the backbone's levels."""
    wanted = list(cfg.MODEL.FUSION.LEVELS) or levels
    unknown = [level for level in wanted if level not in levels]
    if unknown:
        raise ValueError(
            f"MODEL.FUSION.LEVELS: {unknown} are not among the backbone's levels {levels}")
    return wanted


@BACKBONE_REGISTRY.register()
def build_early_fusion_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Shared per-slice backbone + MODEL.FUSION.NAME at MODEL.FUSION.LEVELS
    (MODEL.FUSION.PER_LEVEL), and the centre slice's own features of MODEL.FUSION.CENTER_OUTPUTS."""
    slice_backbone = _slice_backbone(cfg)
    levels, channels = _levels_and_channels(slice_backbone)
    fusion = _LevelFusion(cfg.MODEL.FUSION.NAME, _fusion_levels(cfg, levels), channels,
                          input_shape.channels,
                          cfg, cfg.MODEL.FUSION.PER_LEVEL)
    unknown = [level for level in cfg.MODEL.FUSION.CENTER_OUTPUTS if level not in levels]
    if unknown:
        raise ValueError(
            f"MODEL.FUSION.CENTER_OUTPUTS: {unknown} are not among the backbone's levels {levels}")
    return EarlyFusionBackbone(slice_backbone, input_shape.channels, fusion,
                               cfg.MODEL.FUSION.CHECKPOINT_SLICES,
                               tuple(cfg.MODEL.FUSION.CENTER_OUTPUTS))


@BACKBONE_REGISTRY.register()
def build_late_fusion_backbone(cfg, input_shape: ShapeSpec) -> Backbone:
    """Shared per-slice backbone for late fusion (use with ROI_HEADS.NAME SliceFusionROIHeads)."""
    slice_backbone = _slice_backbone(cfg)
    fusion = None
    if cfg.MODEL.FUSION.LATE.PROPOSALS_FROM == "fused":
        levels, channels = _levels_and_channels(slice_backbone)
        fusion = _LevelFusion(cfg.MODEL.FUSION.NAME, _fusion_levels(cfg, levels), channels,
                              input_shape.channels, cfg, cfg.MODEL.FUSION.PER_LEVEL)
    return LateFusionBackbone(slice_backbone, input_shape.channels, fusion,
                              cfg.MODEL.FUSION.CHECKPOINT_SLICES)
