"""How well the z-extent head predicts where each detected object begins and ends along z."""
from __future__ import annotations

import numpy as np
from ..data.ctc import z_ranges
from ..linking import SliceRegions, region_overlaps


class ZExtentErrors:
    """Absolute errors (um) of predicted z extents against a 3D reference, pooled over volumes.

    A region of a slice is compared with the reference object that covers more than half of it;
    a side of that object that touches the stack end (possibly cut) is not scored. Errors are
    also kept by the region's distance to its object's nearer end: ``caps`` (0 or 1 slice from
    the end) and ``core`` (further in).
    """

    def __init__(self):
        self.errors: list[np.ndarray] = []  # per volume: (n,) absolute errors in um
        self.distances: list[np.ndarray] = []  # per volume: (n,) slices to the object's nearer end

    def add(self, regions: SliceRegions, reference: np.ndarray) -> None:
        """regions with ``z_extents``; reference: (Z, H, W) 3D labels of the same volume."""
        if regions.z_extents is None or reference.size == 0:
            return
        depth = reference.shape[0]
        first, last = z_ranges(reference).T
        errors, distances = [], []
        for z in range(depth):
            if not regions.maps[z].any():
                continue
            inter, area, _ = region_overlaps(regions.maps[z],
                                             reference[z])  # (K, L) without background
            if inter.shape[1] == 0:
                continue
            best = inter.argmax(axis=1)
            for k in np.flatnonzero(inter[np.arange(len(best)), best] * 2 > area):
                label = best[k] + 1
                target = np.array([z - first[label], last[label] - z]) * regions.z_spacing_um
                valid = np.array([first[label] > 0, last[label] < depth - 1])
                error = np.abs(regions.z_extents[z][k] - target)[valid]
                errors.append(error)
                distances.append(np.full(len(error), min(z - first[label], last[label] - z)))
        if errors:
            self.errors.append(np.concatenate(errors))
            self.distances.append(np.concatenate(distances))

    def merge(self, other: "ZExtentErrors") -> None:
        self.errors += other.errors
        self.distances += other.distances

    def summary(self) -> dict:
        """{z_extent_error_um, z_extent_error_um_caps, z_extent_error_um_core}: mean absolute
        errors (NaN where nothing was scored)."""
        errors = np.concatenate(self.errors) if self.errors else np.zeros(0)
        distances = np.concatenate(self.distances) if self.distances else np.zeros(0)

        def mean(selected: np.ndarray) -> float:
            return float(selected.mean()) if selected.size else float("nan")

        return {"z_extent_error_um": mean(errors),
                "z_extent_error_um_caps": mean(errors[distances <= 1]),
                "z_extent_error_um_core": mean(errors[distances > 1])}
