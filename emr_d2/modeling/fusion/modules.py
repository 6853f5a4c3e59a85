"""The registered fusion modules. Input (B, N, C, H, W) -> output (B, C, H, W)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from torch import nn

from .base import FUSION_REGISTRY, SliceFusion, init_logit_layer


@FUSION_REGISTRY.register()
class MeanFusion(SliceFusion):
    """Uniform weights: the mean over slices (no parameters)."""

    uses_static_prior = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_weights = torch.full(x.shape[:2], 1.0 / x.shape[1], device=x.device)
        return x.mean(dim=1)


@FUSION_REGISTRY.register()
class CenterFusion(SliceFusion):
    """The centre slice's features, unchanged; the neighbours are ignored (no parameters)."""

    uses_static_prior = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.zeros(x.shape[:2], device=x.device)
        weights[:, self.num_slices // 2] = 1.0
        self.last_weights = weights
        return x[:, self.num_slices // 2]


@FUSION_REGISTRY.register()
class MLPFusion(SliceFusion):
    """Squeeze-and-excitation over slices: global average pool of every slice, an MLP on the
    concatenation, one logit per slice, softmax over slices, weighted sum."""

    @configurable
    def __init__(self, *, hidden_dim: int, **kwargs):
        """
        Args:
            hidden_dim: width of the MLP's hidden layer.
            kwargs: those of :class:`SliceFusion`.
        """
        super().__init__(**kwargs)
        channels, num_slices, hidden = self.channels, self.num_slices, hidden_dim
        self.mlp = nn.Sequential(
            nn.Linear(num_slices * channels, hidden),
            nn.ReLU(inplace=True),
            init_logit_layer(nn.Linear(hidden, num_slices)),
        )

    @classmethod
    def from_config(cls, cfg, channels: int, num_slices: int) -> dict:
        return super().from_config(cfg, channels, num_slices) | {
            "hidden_dim": cfg.MODEL.FUSION.HIDDEN_DIM
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(3, 4)).flatten(1)  # (B, N*C)
        return self._weighted_sum(x, self.mlp(pooled))


class _LocalWeightFusion(SliceFusion):
    """Slice logits per k x k window of the feature map (k = 1: per pixel) from 1x1 convolutions
    on the concatenated, window-averaged slice features."""

    @configurable
    def __init__(self, *, hidden_dim: int, window: int, **kwargs):
        """
        Args:
            hidden_dim: width of the hidden 1x1 convolution.
            window: k, the side of the square of feature pixels that share slice weights.
            kwargs: those of :class:`SliceFusion`.
        """
        super().__init__(**kwargs)
        self.window = window
        num_slices = self.num_slices
        self.logit_net = nn.Sequential(
            nn.Conv2d(num_slices * self.channels, hidden_dim, 1),
            nn.ReLU(inplace=True),
            init_logit_layer(nn.Conv2d(hidden_dim, num_slices, 1)),
        )

    @classmethod
    def from_config(cls, cfg, channels: int, num_slices: int) -> dict:
        return super().from_config(cfg, channels, num_slices) | {
            "hidden_dim": cfg.MODEL.FUSION.HIDDEN_DIM
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        stacked = x.reshape(b, n * c, h, w)
        k = self.window
        if k > 1:
            stacked = F.avg_pool2d(stacked, k, stride=k, ceil_mode=True)
        logits = self.logit_net(stacked)  # (B, N, ceil(H/k), ceil(W/k))
        if k > 1:
            logits = logits.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)[:, :, :h, :w]
        return self._weighted_sum(x, logits)


@FUSION_REGISTRY.register()
class WindowedFusion(_LocalWeightFusion):
    """Slice weights per k x k window (MODEL.FUSION.WINDOW_SIZE feature pixels)."""

    @classmethod
    def from_config(cls, cfg, channels: int, num_slices: int) -> dict:
        return super().from_config(cfg, channels, num_slices) | {
            "window": int(cfg.MODEL.FUSION.WINDOW_SIZE)
        }


@FUSION_REGISTRY.register()
class PixelAttentionFusion(_LocalWeightFusion):
    """Slice weights per pixel."""

    @configurable
    def __init__(self, **kwargs):
        """
        Args:
            kwargs: those of :class:`_LocalWeightFusion` but ``window`` (1).
        """
        super().__init__(window=1, **kwargs)


@FUSION_REGISTRY.register()
class Conv3dFusion(SliceFusion):
    """A 3D convolution over the slice axis, kernel (N, 1, 1), that collapses N slices into one.

    Initialised as the static prior's softmax weights times the identity; its inspectable
    weights are every slice's share of the kernel's absolute sum, (1, N).
    """

    uses_static_prior = False  # the prior only initialises the kernel

    @configurable
    def __init__(self, **kwargs):
        """
        Args:
            kwargs: those of :class:`SliceFusion`.
        """
        super().__init__(**kwargs)
        channels, num_slices = self.channels, self.num_slices
        self.conv = nn.Conv3d(channels, channels, kernel_size=(num_slices, 1, 1))
        prior = torch.softmax(self.static_logits, dim=0)
        with torch.no_grad():
            self.conv.weight.zero_()
            eye = torch.eye(channels)
            for i in range(num_slices):
                self.conv.weight[:, :, i, 0, 0] = prior[i] * eye
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x.transpose(1, 2)).squeeze(2)  # (B, C, N, H, W) -> (B, C, H, W)
        share = self.conv.weight.detach().abs().sum(dim=(0, 1, 3, 4))
        self.last_weights = (share / share.sum())[None]
        return out


@FUSION_REGISTRY.register()
class CrossSliceAttentionFusion(SliceFusion):
    """Centre-slice features attend to all N slices at every pixel (multi-head attention over the
    slice axis with a learned embedding of the slice offset); the result is added to the centre
    features. Inspectable weights: attention per slice, averaged over heads, (B, N, H, W)."""

    uses_static_prior = False  # attention replaces it

    @configurable
    def __init__(self, *, num_heads: int, **kwargs):
        """
        Args:
            num_heads: attention heads (they divide the channels).
            kwargs: those of :class:`SliceFusion`.
        """
        super().__init__(**kwargs)
        channels = self.channels
        self.offset_embedding = nn.Parameter(torch.zeros(self.num_slices, channels))
        nn.init.normal_(self.offset_embedding, std=0.02)
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, num_heads, batch_first=True)

    @classmethod
    def from_config(cls, cfg, channels: int, num_slices: int) -> dict:
        return super().from_config(cfg, channels, num_slices) | {
            "num_heads": cfg.MODEL.FUSION.ATTENTION.NUM_HEADS
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = x.shape
        tokens = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, n, c)
        tokens = self.norm(tokens + self.offset_embedding)
        query = tokens[:, n // 2 : n // 2 + 1]
        out, attn = self.attention(query, tokens, tokens, need_weights=True)  # attn (BHW, 1, N)
        self.last_weights = attn.detach().reshape(b, h, w, n).permute(0, 3, 1, 2)
        return x[:, n // 2] + out.reshape(b, h, w, c).permute(0, 3, 1, 2)
