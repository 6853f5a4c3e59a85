"""Checkpoint loading that adapts a pretrained stem to the number of input channels."""
from __future__ import annotations

import logging

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

logger = logging.getLogger(__name__)

STEM_SUFFIXES = ("stem.conv1.weight", "conv1_w")


def adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, C, k, k) stem kernel -> (O, in_channels, k, k): the mean over the C input channels,
    repeated and scaled by C / in_channels, so that equal inputs on all channels give the
    same response as before."""
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


class SliceStackCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that adapts 1- or 3-channel stems to the model's input channels
    (channel fusion: N; shared per-slice backbones: 1) instead of dropping them."""

    def _load_model(self, checkpoint):
        model_stems = {k: v for k, v in self.model.state_dict().items() if k.endswith(STEM_SUFFIXES[0])}
        if len(model_stems) == 1:
            target = next(iter(model_stems.values()))
            weights = checkpoint["model"]
            for key in [k for k in weights if k.endswith(STEM_SUFFIXES)]:
                value = weights[key]
                value = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
                if value.dim() == 4 and value.shape[1] != target.shape[1] and value.shape[0] == target.shape[0]:
                    weights[key] = adapt_stem_weight(value.float(), target.shape[1]).to(value.dtype)
                    logger.info(
                        f"Adapted the stem {key} from {value.shape[1]} to {target.shape[1]} input "
                        "channels (mean over channels, repeated and rescaled)"
                    )
        return super()._load_model(checkpoint)
