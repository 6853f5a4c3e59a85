"""SliceStackMapper: a slice record -> the model's input dict (N-slice image + centre Instances)."""
from __future__ import annotations

import copy
import functools

import numpy as np
import pycocotools.mask as mask_util
import torch
from scipy import ndimage
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances

from ..structures import NeighborMasks
from .augment import IntensityAugmentation, build_slice_augmentations
from .catalog import record_voxel_size
from .ctc import read_label_volume, z_ranges
from .window import SliceWindow, VolumeWindowReader, pixel_scale, scaled_size, z_spacing_um


def annotations_to_label_map(annotations: list[dict], height: int, width: int) -> np.ndarray:
    """Paint the RLE masks of one slice into an (H, W) int32 map of their instance ids (the
    reference labels; 1-based annotation indices for annotations without one)."""
    label_map = np.zeros((height, width), dtype=np.int32)
    if annotations:
        masks = mask_util.decode([a["segmentation"] for a in annotations])  # (H, W, K)
        for k, annotation in enumerate(annotations):
            label_map[masks[:, :, k] > 0] = annotation.get("instance_id", k + 1)
    return label_map


def label_map_to_instances(label_map: np.ndarray) -> Instances:
    """Centre-slice Instances (gt_boxes from the masks, gt_classes 0, gt_masks as BitMasks), one
    per label of the map in ascending order."""
    ids = np.unique(label_map)
    ids = ids[ids > 0]
    instances = Instances(label_map.shape)
    instances.gt_masks = BitMasks(torch.from_numpy(label_map[None] == ids[:, None, None]))
    slices = ndimage.find_objects(label_map, max_label=int(ids.max()) if len(ids) else 0)
    boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in (slices[i - 1] for i in ids)]
    instances.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    instances.gt_classes = torch.zeros(len(ids), dtype=torch.int64)
    return instances


@functools.lru_cache(maxsize=16)
def object_z_ranges(gt_file: str) -> np.ndarray:
    """:func:`z_ranges` of a 3D reference file."""
    return z_ranges(read_label_volume(gt_file))


def z_extent_targets(ids: np.ndarray, z: int, depth: int, ranges: np.ndarray | None,
                     spacing_um: float) -> tuple[torch.Tensor, torch.Tensor]:
    """How far each object ``ids`` of slice z reaches below and above it in its 3D reference:
    ((K, 2) float32 um (down to its first slice, up to its last), (K, 2) bool valid). A side that
    touches the stack end may be cut by it and is not valid; without a 3D reference (ranges
    None) nothing is. Edge padding of the window does not change the targets."""
    extent = np.zeros((len(ids), 2), dtype=np.float32)
    valid = np.zeros((len(ids), 2), dtype=bool)
    if ranges is not None and len(ids):
        first, last = ranges[ids, 0], ranges[ids, 1]
        extent[:] = np.stack([z - first, last - z], axis=1) * spacing_um
        valid[:] = np.stack([first > 0, last < depth - 1], axis=1) & (first >= 0)[:, None]
    return torch.from_numpy(extent), torch.from_numpy(valid)


def neighbor_masks_of(centre: np.ndarray, neighbors: np.ndarray,
                      valid: np.ndarray) -> NeighborMasks:
    """NeighborMasks of the centre slice's objects (ascending labels, as label_map_to_instances):
    centre (H, W) labels, neighbors (H, W, M) labels of the same objects in the M neighbour
    slices, valid (M,) bool."""
    ids = np.unique(centre)
    ids = ids[ids > 0]
    masks = neighbors.transpose(2, 0, 1)[None] == ids[:, None, None, None]  # (K, M, H, W)
    return NeighborMasks(torch.from_numpy(masks), torch.from_numpy(np.tile(valid, (len(ids), 1))))


class CenterDegradation:
    """Replaces the centre slice of a window by a blurred, noisier or dimmed copy (one at random)
    with probability ``prob``, so that the neighbours are needed (INPUT.CENTER_DEGRADE)."""

    def __init__(self, prob: float, blur_sigma: float, noise_std: float, dim: float):
        self.prob, self.blur_sigma, self.noise_std, self.dim = prob, blur_sigma, noise_std, dim

    @classmethod
    def from_config(cls, cfg) -> "CenterDegradation | None":
        c = cfg.INPUT.CENTER_DEGRADE
        return cls(c.PROB, c.BLUR_SIGMA, c.NOISE_STD, c.DIM) if c.PROB > 0 else None

    def __call__(self, window: np.ndarray, centre: int, rng) -> np.ndarray:
        """window: float32 (H, W, N); returns it with slice ``centre`` degraded or not."""
        if rng.uniform() >= self.prob:
            return window
        window = np.array(window, dtype=np.float32)
        kind = rng.randint(3)
        plane = window[:, :, centre]
        if kind == 0:
            window[:, :, centre] = ndimage.gaussian_filter(plane, self.blur_sigma)
        elif kind == 1:
            window[:, :, centre] = plane + rng.normal(0.0, self.noise_std, size=plane.shape)
        else:
            window[:, :, centre] = plane * self.dim
        return window


class SliceStackMapper:
    """Turns a slice record (see ``emr_d2.data.slices``) into an input of the model.

    Returns a dict with
        image: float32 tensor (N, H, W), slices z + offsets (INPUT.SLICE_OFFSETS /
            SLICE_SPACING_UM) of the normalised volume, padded at the volume edges, resized to
            INPUT.PIXEL_SIZE_UM (if set) and augmented alike;
        instances: the centre slice's Instances (training only), with ``gt_neighbor_masks``
            (NeighborMasks: the same objects in the other window slices, from the 3D reference)
            when ``neighbor_masks``, and ``gt_z_extent`` / ``gt_z_extent_valid`` (K, 2)
            (:func:`z_extent_targets`) when ``z_extent``;
        volume_id, z, frame, sequence, file_name, image_id, height, width (native size).
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: list,
        window: SliceWindow,
        percentiles: tuple[float, float],
        pixel_size_um: float = 0.0,
        intensity_augmentation: IntensityAugmentation | None = None,
        center_degradation: CenterDegradation | None = None,
        neighbor_masks: bool = False,
        z_extent: bool = False,
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.window = window
        self.pixel_size_um = pixel_size_um
        self.intensity_augmentation = intensity_augmentation
        self.center_degradation = center_degradation
        self.neighbor_masks = neighbor_masks and window.num_slices > 1
        self.z_extent = z_extent
        self.reader = VolumeWindowReader(percentiles)
        self.label_volume = functools.lru_cache(maxsize=4)(read_label_volume)  # memory-mapped

    @classmethod
    def from_config(cls, cfg, is_train: bool = True, neighbor_masks: bool = False) -> dict:
        """The mapper of a config; ``neighbor_masks``: the model predicts neighbour-slice masks
        (the engine knows from its mask head; :func:`emr_d2.engine.build_mapper`)."""
        return {
            "is_train": is_train,
            "augmentations": build_slice_augmentations(cfg, is_train),
            "window": SliceWindow.from_config(cfg),
            "percentiles": tuple(cfg.INPUT.NORM_PERCENTILES),
            "pixel_size_um": cfg.INPUT.PIXEL_SIZE_UM,
            "intensity_augmentation": IntensityAugmentation.from_config(cfg) if is_train else None,
            "center_degradation": CenterDegradation.from_config(cfg) if is_train else None,
            "neighbor_masks": neighbor_masks,
            "z_extent": cfg.MODEL.Z_EXTENT.ENABLED,
        }

    def _neighbor_labels(self, record: dict, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, M) reference labels of the window's neighbour slices and (M,) validity: False
        outside the volume or without a 3D reference."""
        others = offsets[offsets != 0]
        labels = np.zeros((record["height"], record["width"], len(others)), dtype=np.float32)
        indices = record["z"] + others
        valid = (indices >= 0) & (indices < record["depth"]) & bool(record.get("gt_file"))
        if valid.any():
            volume = self.label_volume(record["gt_file"])
            labels[:, :, valid] = np.asarray(volume[indices[valid]],
                                             dtype=np.float32).transpose(1, 2, 0)
        return labels, valid

    def __call__(self, record: dict) -> dict:
        record = copy.copy(record)
        voxel = record_voxel_size(record)
        offsets = self.window.offsets_for(voxel, record["file_name"])
        scale = pixel_scale(self.pixel_size_um, voxel, record["file_name"])
        window = self.reader.window(record["file_name"], record["z"], offsets, self.window.padding)
        image = np.ascontiguousarray(window.transpose(1, 2, 0))  # (H, W, N)
        labels, valid = None, None
        if self.is_train:
            labels = annotations_to_label_map(record.get("annotations", []), record["height"],
                                              record["width"]).astype(np.float32)[:, :, None]
            if self.neighbor_masks:
                neighbors, valid = self._neighbor_labels(record, offsets)
                labels = np.concatenate([labels, neighbors], axis=2)
        aug_input = T.AugInput(image, sem_seg=labels)
        if scale != 1.0:  # to the model's pixel size first (INPUT.PIXEL_SIZE_UM)
            aug_input.transform(
                T.ResizeTransform(*image.shape[:2], *scaled_size(*image.shape[:2], scale)))
        self.augmentations(aug_input)
        image = aug_input.image
        if self.is_train:
            if self.intensity_augmentation is not None:
                image = self.intensity_augmentation(image, np.random)
            if self.center_degradation is not None:
                image = self.center_degradation(image, len(offsets) // 2, np.random)
            labels = np.rint(aug_input.sem_seg).astype(np.int32).reshape(*image.shape[:2], -1)
            record["instances"] = label_map_to_instances(labels[:, :, 0])
            if self.neighbor_masks:
                record["instances"].gt_neighbor_masks = neighbor_masks_of(
                    labels[:, :, 0], labels[:, :, 1:], valid)
            if self.z_extent:
                ids = np.unique(labels[:, :, 0])
                ranges = object_z_ranges(record["gt_file"]) if record.get("gt_file") else None
                instances = record["instances"]
                instances.gt_z_extent, instances.gt_z_extent_valid = z_extent_targets(
                    ids[ids > 0], record["z"], record["depth"], ranges, z_spacing_um(voxel))
        record.pop("annotations", None)
        record["image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return record
