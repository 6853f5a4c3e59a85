"""Per-slice predictions as linking takes them: one slice's instances, and the pasted regions."""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

MAX_LABEL = np.iinfo(np.uint16).max  # label volumes are uint16, as the CTC's



class SlicePrediction(NamedTuple):
    """One slice's instances, from the model's Instances to the linkers.

    masks: (K, H, W) bool; scores: (K,); neighbor_masks: (K, M, H, W) bool, each instance's
    predicted mask in the M neighbour slices (the neighbour-mask head), or None; z_extents:
    (K, 2) float, how far each instance's object reaches below and above the slice in um (the
    z-extent head), or None.
    """

    masks: np.ndarray
    scores: np.ndarray
    neighbor_masks: np.ndarray | None = None
    z_extents: np.ndarray | None = None


def slice_prediction(instances, score_threshold: float) -> SlicePrediction:
    """The detectron2 Instances of one slice scoring at least ``score_threshold``, as numpy."""
    keep = (instances.scores >= score_threshold).cpu()

    def field_of(name: str, dtype) -> np.ndarray | None:
        return (
            instances.get(name).cpu()[keep].numpy().astype(dtype) if instances.has(name) else None
        )

    return SlicePrediction(
        field_of("pred_masks", bool),
        instances.scores.cpu()[keep].numpy(),
        field_of("pred_neighbor_masks", bool),
        field_of("pred_z_extent", np.float64),
    )


@dataclass
class SliceRegions:
    """The pasted per-slice predictions of a volume.

    Every per-slice field is indexed by z: a whole volume (:func:`paste_volume`) holds a
    (Z, H, W) array and lists; a streaming linker holds dicts of the slices it still needs.
    """

    maps: np.ndarray | MutableMapping  # z -> (H, W) int32 regions 1..K_z (0: background)
    scores: list | MutableMapping  # z -> (K_z,) score of each region
    neighbor_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) dz
    # z -> (K_z, M, H, W) bool: region k's predicted mask in slice z + neighbor_offsets[m]; None
    # without a neighbour-mask head.
    neighbor_masks: list | MutableMapping | None = None
    # z -> (K_z, 2) float: how far region k's object reaches below and above slice z, in um;
    # None without a z-extent head.
    z_extents: list | MutableMapping | None = None
    z_spacing_um: float = 1.0  # slice spacing the extents are measured in

    def reach(self, z: int) -> np.ndarray:
        """(K_z, 2) predicted reach of slice z's regions below and above it, in slices."""
        return self.z_extents[z] / self.z_spacing_um

    def neighbor_mask(self, z: int, region: int, dz: int) -> np.ndarray | None:
        """(H, W) predicted mask of region ``region`` of slice z in slice z + dz, if predicted."""
        if self.neighbor_masks is None or dz not in self.neighbor_offsets.tolist():
            return None
        return self.neighbor_masks[z][region - 1, self.neighbor_offsets.tolist().index(dz)]

    def slice(self, z: int) -> tuple:
        """(map, scores, neighbour masks or None, z extents or None) of slice z."""
        return (
            self.maps[z],
            self.scores[z],
            None if self.neighbor_masks is None else self.neighbor_masks[z],
            None if self.z_extents is None else self.z_extents[z],
        )


def paste_slice(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resolve overlaps by score: where masks overlap the higher score wins.

    Args:
        masks: (K, H, W) bool; scores: (K,).
    Returns:
        (H, W) int32 map of regions 1..K', (K',) their scores and (K',) index of the instance
        behind each region (instances that keep no pixel are dropped).
    """
    height, width = masks.shape[1:]
    label_map = np.zeros((height, width), dtype=np.int32)
    order = np.argsort(scores, kind="stable")
    for k in order:
        label_map[masks[k]] = k + 1
    present = np.unique(label_map)
    present = present[present > 0]
    lookup = np.zeros(len(masks) + 1, dtype=np.int32)
    lookup[present] = np.arange(1, len(present) + 1)
    return lookup[label_map], np.asarray(scores, dtype=np.float64)[present - 1], present - 1


def paste_prediction(prediction: SlicePrediction, size: tuple[int, int]) -> tuple:
    """One slice's prediction pasted: (map, scores, neighbour masks or None, extents or None) of
    its regions, as :meth:`SliceRegions.slice` gives them; size: (H, W)."""
    masks, scores, neighbor_masks, z_extents = prediction
    if len(masks):
        label_map, region_scores, kept = paste_slice(np.asarray(masks, bool), scores)
    else:
        label_map, region_scores, kept = (
            np.zeros(size, np.int32),
            np.zeros(0),
            np.zeros(0, np.int64),
        )
    return (
        label_map,
        region_scores,
        None if neighbor_masks is None else np.asarray(neighbor_masks, bool)[kept],
        None if z_extents is None else np.asarray(z_extents, np.float64)[kept],
    )


def paste_volume(
    predictions: Iterable[tuple[int, SlicePrediction]],
    shape: tuple[int, int, int],
    window_offsets=(),
    z_spacing_um: float = 1.0,
) -> SliceRegions:
    """Paste the per-slice predictions of one (Z, H, W) volume.

    Args:
        predictions: (z, :class:`SlicePrediction`) pairs; slices not given are empty.
        window_offsets: the window's slice offsets (dz); the non-zero ones are those of the
            neighbour masks.
        z_spacing_um: slice spacing the z extents are measured in.
    """
    offsets = np.asarray(window_offsets, dtype=np.int64)
    offsets = offsets[offsets != 0]
    maps = np.zeros(shape, dtype=np.int32)
    scores = [np.zeros(0)] * shape[0]
    neighbors = extents = None
    for z, prediction in predictions:
        maps[z], scores[z], neighbor_masks, z_extents = paste_prediction(prediction, shape[1:])
        if neighbor_masks is not None:
            if neighbors is None:  # the first slice with neighbour masks: the others are empty
                neighbors = [np.zeros((0, len(offsets), *shape[1:]), bool)] * shape[0]
            neighbors[z] = neighbor_masks
        if z_extents is not None:
            if extents is None:
                extents = [np.zeros((0, 2))] * shape[0]
            extents[z] = z_extents
    return SliceRegions(
        maps,
        scores,
        offsets if neighbors is not None else offsets[:0],
        neighbors,
        extents,
        z_spacing_um,
    )


def region_overlaps(
    current: np.ndarray, other: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel overlaps between the regions of two (H, W) label maps.

    Returns:
        (A, B) intersections, (A,) areas of ``current``'s regions 1..A and (B,) of ``other``'s.
    """
    n_a, n_b = int(current.max()) + 1, int(other.max()) + 1
    table = np.bincount(
        (current.ravel().astype(np.int64) * n_b + other.ravel()), minlength=n_a * n_b
    ).reshape(n_a, n_b)
    return table[1:, 1:], table.sum(axis=1)[1:], table.sum(axis=0)[1:]
