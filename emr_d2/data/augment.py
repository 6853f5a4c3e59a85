"""Augmentations applied identically to all N slices of a window (and to the centre-slice masks).

Geometric ones are detectron2 / fvcore transforms on (H, W, N) float arrays, so that masks go
through ``apply_segmentation`` of the very same transform; intensity ones act on the normalised
window as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform


class Rot90Transform(Transform):
    """Rotate an (H, W, ...) array by k * 90 degrees (counter-clockwise, like ``np.rot90``)."""

    def __init__(self, k: int, h: int, w: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(img, self.k, axes=(0, 1)))

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return self.apply_image(segmentation)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        h, w = self.h, self.w
        for _ in range(self.k % 4):
            coords = np.stack([coords[:, 1], w - coords[:, 0]], axis=1)
            h, w = w, h
        return coords

    def inverse(self) -> Transform:
        h, w = (self.w, self.h) if self.k % 2 else (self.h, self.w)
        return Rot90Transform((4 - self.k) % 4, h, w)


class RandomRot90(T.Augmentation):
    """Rotate by 0, 90, 180 or 270 degrees, each with probability 1/4."""

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        return Rot90Transform(int(np.random.randint(4)), h, w)


class RandomRelativeScale(T.Augmentation):
    """Resize by a factor drawn uniformly in [min_scale, max_scale] (bilinear image, nearest masks).
    """

    def __init__(self, min_scale: float, max_scale: float):
        super().__init__()
        self._init(locals())

    def get_transform(self, image: np.ndarray) -> Transform:
        h, w = image.shape[:2]
        scale = np.random.uniform(self.min_scale, self.max_scale)
        new_h, new_w = max(int(round(h * scale)), 1), max(int(round(w * scale)), 1)
        if (new_h, new_w) == (h, w):
            return T.NoOpTransform()
        return T.ResizeTransform(h, w, new_h, new_w)


def build_slice_augmentations(cfg, is_train: bool) -> list[T.Augmentation]:
    """Resize (detectron2's INPUT.MIN_SIZE_*), then for training: scale jitter, random crop
    (INPUT.CROP.*), flip (INPUT.RANDOM_FLIP) and 90-degree rotations (INPUT.RANDOM_ROT90)."""
    augmentations = utils.build_augmentation(cfg, is_train)
    if not is_train:
        return augmentations
    low, high = cfg.INPUT.SCALE_JITTER
    if (low, high) != (1.0, 1.0):
        augmentations.insert(1, RandomRelativeScale(low, high))
    if cfg.INPUT.CROP.ENABLED:
        augmentations.insert(2, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.RANDOM_ROT90:
        augmentations.append(RandomRot90())
    return augmentations


@dataclass
class IntensityAugmentation:
    """Gamma, contrast and Gaussian noise drawn once and applied to a whole normalised window."""

    gamma: tuple[float, float] = (0.7, 1.4)
    contrast: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.03

    @classmethod
    def from_config(cls, cfg) -> "IntensityAugmentation | None":
        aug = cfg.INPUT.INTENSITY_AUG
        if not aug.ENABLED:
            return None
        return cls(tuple(aug.GAMMA), tuple(aug.CONTRAST), float(aug.NOISE_STD))

    def __call__(self, window: np.ndarray, rng) -> np.ndarray:
        """window: float32 (H, W, N) normalised to about [0, 1]; returns the same shape.

        rng: the ``np.random`` module (which detectron2 seeds in every data-loader worker) or a
        ``np.random.RandomState``.
        """
        gamma = float(np.exp(rng.uniform(np.log(self.gamma[0]), np.log(self.gamma[1]))))
        contrast = float(rng.uniform(*self.contrast))
        noise_std = float(rng.uniform(0.0, self.noise_std)) if self.noise_std > 0 else 0.0
        # torch's vectorised pow is several times faster than numpy's on large windows
        out = torch.from_numpy(np.array(window, dtype=np.float32)).clamp_(min=0.0).pow_(gamma)
        mean = float(out.mean())
        out.sub_(mean).mul_(contrast).add_(mean)
        if noise_std > 0:
            generator = torch.Generator().manual_seed(int(rng.randint(2**31)))
            out.add_(torch.randn(out.shape, generator=generator), alpha=noise_std)
        return out.numpy()
