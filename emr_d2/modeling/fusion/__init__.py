"""Slice-fusion modules: (B, N, C, H, W) features of N slices -> (B, C, H, W), one registry."""
from .base import (FUSION_REGISTRY, SliceFusion, build_fusion, fusion_weights, mean_slice_weights,
                   static_slice_logits)
from . import modules  # noqa: F401  (registers the modules)

__all__ = ["FUSION_REGISTRY", "SliceFusion", "build_fusion", "fusion_weights", "mean_slice_weights",
           "static_slice_logits"]
