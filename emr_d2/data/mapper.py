"""SliceStackMapper: a slice record -> the model's input dict (N-slice image + centre Instances)."""
from __future__ import annotations

import copy

import numpy as np
import pycocotools.mask as mask_util
import torch
from scipy import ndimage
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from .augment import IntensityAugmentation, build_slice_augmentations
from .window import VolumeWindowReader


def annotations_to_label_map(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """Paint the RLE masks of one slice into an (H, W) int32 map of 1-based annotation indices."""
    label_map = np.zeros((height, width), dtype=np.int32)
    if annotations:
        masks = mask_util.decode([a["segmentation"] for a in annotations])  # (H, W, K)
        for k in range(masks.shape[2]):
            label_map[masks[:, :, k] > 0] = k + 1
    return label_map


def label_map_to_instances(label_map: np.ndarray) -> Instances:
    """Centre-slice Instances (gt_boxes from the masks, gt_classes 0, gt_masks as BitMasks)."""
    ids = np.unique(label_map)
    ids = ids[ids > 0]
    instances = Instances(label_map.shape)
    instances.gt_masks = BitMasks(torch.from_numpy(label_map[None] == ids[:, None, None]))
    slices = ndimage.find_objects(label_map, max_label=int(ids.max()) if len(ids) else 0)
    boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in (slices[i - 1] for i in ids)]
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.zeros(len(ids), dtype=torch.int64)
    return instances


class SliceStackMapper:
    """Turns a slice record (see ``emr_d2.data.slices``) into an input of the model.

    Returns a dict with
        image: float32 tensor (N, H, W), slices z-N//2 .. z+N//2 of the normalised volume,
            padded at the volume edges by ``padding``, augmented alike;
        instances: the centre slice's Instances (training only);
        volume_id, z, frame, sequence, file_name, image_id, height, width (native size).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        num_slices: int,
        padding: str,
        percentiles: tuple[float, float],
        intensity_augmentation: IntensityAugmentation | None = None,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.num_slices = num_slices
        self.padding = padding
        self.intensity_augmentation = intensity_augmentation
        self.reader = VolumeWindowReader(percentiles)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        return {
            "is_train": is_train,
            "augmentations": build_slice_augmentations(cfg, is_train),
            "num_slices": cfg.INPUT.NUM_SLICES,
            "padding": cfg.INPUT.SLICE_PADDING,
            "percentiles": tuple(cfg.INPUT.NORM_PERCENTILES),
            "intensity_augmentation": IntensityAugmentation.from_config(cfg) if is_train else None,
        }

    def __call__(self, record: dict) -> dict:
        record = copy.copy(record)
        window = self.reader.window(record["file_name"], record["z"], self.num_slices, self.padding)
        image = np.ascontiguousarray(window.transpose(1, 2, 0))  # (H, W, N)
        label_map = None
        if self.is_train:
            label_map = annotations_to_label_map(
                record.get("annotations", []), record["height"], record["width"]
            ).astype(np.float32)
        aug_input = T.AugInput(image, sem_seg=label_map)
        self.augmentations(aug_input)
        image = aug_input.image
        if self.is_train:
            if self.intensity_augmentation is not None:
                image = self.intensity_augmentation(image, np.random)
            record["instances"] = label_map_to_instances(np.rint(aug_input.sem_seg).astype(np.int32))
        record.pop("annotations", None)
        record["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return record
