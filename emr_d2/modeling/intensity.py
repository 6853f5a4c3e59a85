"""Learnable intensity front-end, applied to the normalised input before the backbone."""
from __future__ import annotations

import torch
from torch import nn

INTENSITY_MODES = ("none", "gamma", "gamma_contrast")


class IntensityFrontEnd(nn.Module):
    """x -> clamp((x - low) / (high - low), eps) ** gamma on inputs normalised to about [0, 1].

    ``gamma`` learns gamma = exp(log_gamma) only; ``gamma_contrast`` also learns the contrast
    limits low and high. Starts as the identity on [0, 1].
    """

    def __init__(self, mode: str):
        super().__init__()
        if mode not in INTENSITY_MODES[1:]:
            raise ValueError(f"MODEL.INTENSITY.NAME must be one of {INTENSITY_MODES}, got {mode!r}")
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.limits = nn.Parameter(torch.tensor([0.0, 1.0]), requires_grad=mode == "gamma_contrast")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., H, W) normalised intensities; returns the same shape."""
        low, high = self.limits[0], self.limits[1]
        scaled = (x - low) / (high - low).clamp(min=1e-3)
        return scaled.clamp(min=1e-4) ** self.log_gamma.exp()


def build_intensity_front_end(cfg) -> nn.Module:
    """MODEL.INTENSITY.NAME's front-end: (B, N, H, W) normalised stacks in and out."""
    mode = cfg.MODEL.INTENSITY.NAME
    return nn.Identity() if mode == "none" else IntensityFrontEnd(mode)
