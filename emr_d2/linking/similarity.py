"""How alike two slices' regions are: the measures the tracker's assignment maximises.

:data:`SIMILARITIES` maps a linker's name to its measure; :data:`LINKERS` adds "connected",
which links 3D components and measures nothing (:class:`emr_d2.linking.ConnectedLinker`).
A measure takes (regions, z, zp, cols, intersections (A, B), areas of z's regions (A,), areas of
zp's regions (B,)) and returns the (A, B) similarity of slice z's regions with the regions
``cols + 1`` of an earlier slice zp.
"""

from __future__ import annotations

import numpy as np

from .regions import SliceRegions


def iou(regions, z, zp, cols, inter, area_now, area_before) -> np.ndarray:
    """Intersection over union of the regions."""
    return inter / np.maximum(area_now[:, None] + area_before[None] - inter, 1)


def overlap(regions, z, zp, cols, inter, area_now, area_before) -> np.ndarray:
    """Intersection over the smaller region: robust where nuclei shrink towards their poles."""
    return inter / np.maximum(np.minimum(area_now[:, None], area_before[None]), 1)


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU between (A, H, W) and (B, H, W) bool masks."""
    a, b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    return inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None] - inter, 1)


def predicted(regions: SliceRegions, z, zp, cols, inter, area_now, area_before) -> np.ndarray:
    """The mean IoU of each side's predicted mask in the other slice with the other side's
    region, over the sides whose neighbour masks reach that far; the plain IoU where neither
    does."""
    maps = regions.maps
    now = maps[z][None] == np.arange(1, len(area_now) + 1)[:, None, None]
    before = maps[zp][None] == (cols + 1)[:, None, None]
    scores = []
    offsets = regions.neighbor_offsets.tolist()
    if zp - z in offsets:
        forecast = np.stack([regions.neighbor_mask(z, r, zp - z) for r in range(1, len(now) + 1)])
        scores.append(mask_iou(forecast, before))
    if z - zp in offsets:
        forecast = np.stack([regions.neighbor_mask(zp, r, z - zp) for r in cols + 1])
        scores.append(mask_iou(now, forecast))
    return (
        np.mean(scores, axis=0)
        if scores
        else iou(regions, z, zp, cols, inter, area_now, area_before)
    )


SIMILARITIES = {"iou": iou, "overlap": overlap, "predicted": predicted}
LINKERS = (*SIMILARITIES, "connected")


def extent_conflicts(
    regions: SliceRegions, z: int, zp: int, cols: np.ndarray, gate_um: float
) -> np.ndarray:
    """(A, B) True where slice z's region a predicts its object to begin, or region ``cols + 1``
    of slice zp < z predicts its object to end, more than gate_um between zp and z."""
    gap_um = (z - zp) * regions.z_spacing_um
    starts_after = gap_um - regions.z_extents[z][:, 0] > gate_um  # (A,)
    ends_before = gap_um - regions.z_extents[zp][cols, 1] > gate_um  # (B,)
    return starts_after[:, None] | ends_before[None, :]
