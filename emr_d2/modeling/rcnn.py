"""SliceStackRCNN: detectron2's GeneralizedRCNN on N-slice stacks, with an intensity front-end."""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN
from detectron2.structures import ImageList

from .intensity import build_intensity_front_end


@META_ARCH_REGISTRY.register()
class SliceStackRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose inputs' ``image`` is an (N, H, W) stack of normalised slices.

    The learnable intensity front-end (MODEL.INTENSITY) acts on the normalised stack before
    MODEL.PIXEL_MEAN / PIXEL_STD (one value per slice) and the backbone.
    """

    @configurable
    def __init__(self, *, intensity: torch.nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.intensity = intensity

    @classmethod
    def from_config(cls, cfg):
        ret = super().from_config(cfg)
        ret["intensity"] = build_intensity_front_end(cfg)
        return ret

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        images = [self.intensity(self._move_to_current_device(x["image"])) for x in batched_inputs]
        return self._batch([(x - self.pixel_mean) / self.pixel_std for x in images])

    def preprocess_slices(self, slices: torch.Tensor) -> ImageList:
        """(S, H, W) normalised slices, each on its own -> ImageList of (S, 1, H_pad, W_pad),
        preprocessed as preprocess_image does (for per-slice backbone features; needs one
        PIXEL_MEAN / PIXEL_STD value for all slices)."""
        x = self.intensity(self._move_to_current_device(slices))[:, None]
        return self._batch(list((x - self.pixel_mean[0]) / self.pixel_std[0]))

    def _batch(self, images: list[torch.Tensor]) -> ImageList:
        return ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )
