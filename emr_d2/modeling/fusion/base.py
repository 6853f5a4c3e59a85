"""The fusion registry, the common base class and the static per-slice prior."""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.utils.registry import Registry
from torch import nn

FUSION_REGISTRY = Registry("SLICE_FUSION")
FUSION_REGISTRY.__doc__ = """
Slice-fusion modules, by class name (MODEL.FUSION.NAME, MODEL.FUSION.LATE.NAME). Each maps
features (B, N, C, H, W) to (B, C, H, W); it is built from keyword arguments, or from a config as
``cls(cfg, channels=C, num_slices=N)`` (its ``from_config``).
"""

STATIC_INITS = ("zero", "only_center", "gaussian")
# A logit this low gives an exactly zero softmax weight in float32 (exp underflows).
EXCLUDED_LOGIT = -1e4


def static_slice_logits(num_slices: int, init: str, sigma: float = 1.0) -> torch.Tensor:
    """Initial static logits over the N window positions, (N,).

    zero: uniform weights; only_center: all weight on the centre slice; gaussian: weights
    proportional to exp(-dz^2 / (2 sigma^2)) over the slice offset dz.
    """
    offsets = torch.arange(num_slices, dtype=torch.float32) - num_slices // 2
    if init == "zero":
        return torch.zeros(num_slices)
    if init == "only_center":
        return torch.where(offsets == 0, 0.0, EXCLUDED_LOGIT)
    if init == "gaussian":
        return -(offsets**2) / (2 * sigma**2)
    raise ValueError(f"init must be one of {STATIC_INITS}, got {init!r}")


class SliceFusion(nn.Module):
    """Base of the fusion modules: a static per-slice prior and the weights of the last forward.

    Subclasses implement ``forward(x)`` with x of shape (B, N, C, H, W), returning (B, C, H, W),
    and store what they weighted the slices with in ``self.last_weights``: (B, N) global
    weights, or (B, N, h, w) weights per window / pixel, detached.
    """

    # Whether the module learns the static per-slice logits (else they are a fixed buffer).
    uses_static_prior = True

    @configurable
    def __init__(
        self,
        *,
        channels: int,
        num_slices: int,
        static_init: str,
        gaussian_sigma: float,
        freeze_static: bool,
    ):
        """
        Args:
            channels: C, the channels of the features to fuse.
            num_slices: N, the window positions.
            static_init: initial static per-slice logits, one of STATIC_INITS.
            gaussian_sigma: width (in slices) of the "gaussian" prior.
            freeze_static: keep the static logits fixed during training.
        """
        super().__init__()
        self.channels = channels
        self.num_slices = num_slices
        logits = static_slice_logits(num_slices, static_init, gaussian_sigma)
        if self.uses_static_prior:
            self.static_logits = nn.Parameter(logits, requires_grad=not freeze_static)
        else:
            self.register_buffer("static_logits", logits, persistent=False)
        self.last_weights: torch.Tensor | None = None

    @classmethod
    def from_config(cls, cfg, channels: int, num_slices: int) -> dict:
        fusion = cfg.MODEL.FUSION
        return {
            "channels": channels,
            "num_slices": num_slices,
            "static_init": fusion.STATIC_INIT,
            "gaussian_sigma": fusion.GAUSSIAN_SIGMA,
            "freeze_static": fusion.FREEZE_STATIC,
        }

    def _weighted_sum(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over slices of (dynamic logits + static prior), then the weighted sum.

        x: (B, N, C, H, W); logits: (B, N) or (B, N, H, W).
        """
        prior = self.static_logits.view(1, -1, *([1] * (logits.dim() - 2)))
        weights = torch.softmax(logits + prior, dim=1)
        self.last_weights = weights.detach()
        expanded = weights[:, :, None] if weights.dim() == 4 else weights[:, :, None, None, None]
        # softmax runs in float32 under autocast; the weighted sum stays in the features' dtype
        return (x * expanded.to(x.dtype)).sum(dim=1)

    def slice_weights(self) -> torch.Tensor | None:
        """Weights of the last forward pass: (B, N) or (B, N, h, w)."""
        return self.last_weights


def build_fusion(name: str, cfg, channels: int, num_slices: int) -> SliceFusion:
    """Build the fusion module registered as ``name`` from ``cfg`` for (B, N, C, H, W) features
    with C = channels and N = num_slices."""
    return FUSION_REGISTRY.get(name)(cfg, channels=channels, num_slices=num_slices)


def fusion_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Last slice weights of every fusion module in a model, by module name."""
    return {
        name: module.last_weights
        for name, module in model.named_modules()
        if isinstance(module, SliceFusion) and module.last_weights is not None
    }


def mean_slice_weights(weights: torch.Tensor) -> torch.Tensor:
    """(B, N) or (B, N, h, w) slice weights -> (N,) mean weight of every window position."""
    return weights.transpose(0, 1).reshape(weights.shape[1], -1).float().mean(dim=1)


def init_logit_layer(layer: nn.Module) -> nn.Module:
    """Start input-dependent logits near zero, so that training starts from the static prior.

    Small random weights rather than zeros, so that the layers before it get gradients too.
    """
    nn.init.normal_(layer.weight, std=1e-3)
    nn.init.zeros_(layer.bias)
    return layer
