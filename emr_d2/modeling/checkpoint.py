"""Checkpoint loading that adapts a pretrained stem to the number of input channels."""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..atomic import atomic_write

logger = logging.getLogger(__name__)

STEM_SUFFIXES = ("stem.conv1.weight", "conv1_w")


def adapt_stem_weight(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """(O, C, k, k) stem kernel -> (O, in_channels, k, k): the mean over the C input channels,
    repeated and scaled by C / in_channels, so that equal inputs on all channels give the
    same response as before."""
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, in_channels, 1, 1) * (weight.shape[1] / in_channels)


class CheckpointMismatchError(ValueError):
    """A checkpoint whose parameters do not fit the model built from the config."""


def check_weights(weights: str, random_weights: bool | None = None) -> None:
    """MODEL.WEIGHTS of a tool that applies a trained model: a file. ``random_weights``: the
    tool's --random-weights flag (None: it has none), which asks for an untrained model and then
    must come without weights."""
    if random_weights:
        if weights:
            raise ValueError(
                f"--random-weights and MODEL.WEIGHTS {weights} contradict each other; give one")
        return
    if not weights:
        alternative = (
            ", or --random-weights to run an untrained model" if random_weights is not None else ""
        )
        raise ValueError(
            f"MODEL.WEIGHTS is empty: give the trained model (MODEL.WEIGHTS DIR/model_final.pth)"
            f"{alternative}")
    if "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: no such checkpoint file (MODEL.WEIGHTS)")


class SliceStackCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that adapts 1- or 3-channel stems to the model's input channels
    (channel fusion: N; shared per-slice backbones: 1) instead of dropping them, and that writes
    checkpoints and ``last_checkpoint`` atomically."""

    def __init__(self, model, save_dir: str = "", *, strict: bool = False, **kwargs):
        """strict: loading a checkpoint that does not fit the model (missing parameters or other
        shapes) is an error instead of a warning; for inference, where nothing is trained."""
        super().__init__(model, save_dir, **kwargs)
        self.strict = strict
        self._path = None  # the file being loaded, for error messages

    def load(self, path: str, checkpointables=None):
        if not path:
            if self.strict:
                logger.warning(
                    "MODEL.WEIGHTS is empty: predicting with randomly initialised weights")
            return {}
        self._path = path
        return super().load(path, checkpointables)

    def _load_model(self, checkpoint):
        model_stems = {k: v for k, v in self.model.state_dict().items()
                       if k.endswith(STEM_SUFFIXES[0])}
        if len(model_stems) == 1:
            target = next(iter(model_stems.values()))
            weights = checkpoint["model"]
            for key in [k for k in weights if k.endswith(STEM_SUFFIXES)]:
                value = weights[key]
                value = torch.as_tensor(value) if isinstance(value, np.ndarray) else value
                if (
                    value.dim() == 4
                    and value.shape[1] != target.shape[1]
                    and value.shape[0] == target.shape[0]
                ):
                    weights[key] = adapt_stem_weight(value.float(), target.shape[1]).to(value.dtype)
                    logger.info(
                        f"Adapted the stem {key} from {value.shape[1]} to {target.shape[1]} input "
                        "channels (mean over channels, repeated and rescaled)"
                    )
        incompatible = super()._load_model(checkpoint)
        if self.strict and (incompatible.missing_keys or incompatible.incorrect_shapes
                            or incompatible.unexpected_keys):
            problems = [f"{k}: shape {tuple(a)} in the checkpoint, {tuple(b)} in the model"
                        for k, a, b in incompatible.incorrect_shapes]
            problems += [f"{k}: in the model, missing in the checkpoint"
                         for k in incompatible.missing_keys]
            problems += [f"{k}: in the checkpoint, not in the model"
                         for k in incompatible.unexpected_keys]
            saved = os.path.join(os.path.dirname(os.path.abspath(self._path)), "config.yaml")
            hint = (
                f"; its training config is {saved}: pass it as --config-file"
                if os.path.isfile(saved)
                else ""
            )
            raise CheckpointMismatchError(
                f"{self._path}: does not match the config's model ({len(problems)} problems, e.g. "
                f"{'; '.join(problems[:2])}){hint}")
        return incompatible

    def save(self, name: str, **kwargs) -> None:
        """Like Checkpointer.save, but written to a temporary name and renamed, so that a kill at
        any moment leaves either the previous file or the complete new one."""
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(os.path.join(self.save_dir, "last_checkpoint"),
                     lambda f: f.write(last_filename_basename), "w")
