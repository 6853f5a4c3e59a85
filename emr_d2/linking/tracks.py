"""Tracks: chains of (z, region) pairs, built slice by slice and finished into objects.

1. :class:`Tracker` links each slice's regions to the objects seen up to 1 + look_back slices
   before by maximum-weight assignment of a similarity (:data:`SIMILARITIES`).
2. :func:`finish_track` splits a track where its area along z has a clear interior minimum
   (nuclei are convex: an area that falls and rises again is the cap of one nucleus linked to
   the next, :func:`split_at_necks`) and trims end slices beyond where the object's predicted
   z extents say it ends (:func:`trim_to_extent`).
3. :func:`gap_fills` fills the slices a track bridged.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .regions import SliceRegions, region_overlaps
from .similarity import SIMILARITIES, extent_conflicts


class Tracker:
    """Builds tracks of (z, region) pairs, one slice at a time (:meth:`step`, in z order).

    Args:
        regions: the pasted slices; read only at the current slice and the look_back + 1 before.
        strategy: a key of :data:`SIMILARITIES`.
        threshold: least similarity for a link.
        look_back: missed slices a track may bridge.
        extent_gate_um: > 0 (with predicted extents): pairs whose extents conflict by more
            (:func:`extent_conflicts`) are never linked.
    """

    def __init__(
        self,
        regions: SliceRegions,
        strategy: str,
        threshold: float,
        look_back: int,
        extent_gate_um: float = 0.0,
    ):
        self.regions, self.similarity, self.threshold = regions, SIMILARITIES[strategy], threshold
        self.look_back, self.extent_gate_um = look_back, extent_gate_um
        self.tracks: list[list[tuple[int, int]]] = []
        self.open: dict[int, int] = {}  # track index -> last z
        self.last_region: dict[int, int] = {}  # track index -> region id at its last z

    def step(self, z: int) -> None:
        """Link the regions of slice z; tracks that can no longer continue leave ``open``."""
        maps = self.regions.maps
        n_regions = int(maps[z].max())
        candidates, similarity = [], []
        for zp in range(max(z - 1 - self.look_back, 0), z):
            ends_here = [t for t, last in self.open.items() if last == zp]
            if not ends_here or n_regions == 0:
                continue
            inter, area_now, area_before = region_overlaps(maps[z], maps[zp])
            cols = np.array([self.last_region[t] - 1 for t in ends_here])
            sim = self.similarity(
                self.regions, z, zp, cols, inter[:, cols], area_now, area_before[cols]
            )
            if self.extent_gate_um > 0:
                sim = np.where(
                    extent_conflicts(self.regions, z, zp, cols, self.extent_gate_um), -1.0, sim
                )
            candidates += ends_here
            similarity.append(sim)
        assigned = {}
        if candidates:
            sim = np.concatenate(similarity, axis=1)
            rows, cols = linear_sum_assignment(sim, maximize=True)
            for r, c in zip(rows, cols):
                if sim[r, c] >= self.threshold:
                    assigned[r + 1] = candidates[c]
        for region in range(1, n_regions + 1):
            t = assigned.get(region)
            if t is None:
                t = len(self.tracks)
                self.tracks.append([])
            self.tracks[t].append((z, region))
            self.open[t], self.last_region[t] = z, region
        for t in [t for t, last in self.open.items() if z - last > self.look_back]:
            del self.open[t]


def deepest_neck(areas: np.ndarray, depth: float) -> int | None:
    """Index of the deepest interior minimum of an (n,) area profile that lies at least
    ``depth`` (a fraction) below the largest area on each of its sides; None if none does."""
    if len(areas) < 3:
        return None
    left = np.maximum.accumulate(areas)[:-2]  # largest area before each interior index
    right = np.maximum.accumulate(areas[::-1])[::-1][2:]  # and after it
    ratio = areas[1:-1] / np.maximum(np.minimum(left, right), 1)
    neck = int(np.argmin(ratio))
    return neck + 1 if ratio[neck] <= 1 - depth else None


def split_at_necks(track: list[tuple[int, int]], maps, region_areas, depth: float) -> list[list]:
    """Split a track of (z, region) pairs at every clear interior minimum of its area along z
    (at least ``depth`` below the largest area on both sides), deepest first. The neck slice
    stays with the side whose neighbouring slice it overlaps more (intersection over the smaller
    area), so that a cap joins its own nucleus.

    Args:
        maps: z -> (H, W) region map; region_areas: z -> (K_z + 1,) pixels of every region.
    """
    slices = sorted({z for z, _ in track})
    position = {z: i for i, z in enumerate(slices)}
    areas = np.zeros(len(slices))
    for z, region in track:
        areas[position[z]] += region_areas[z][region]
    neck = deepest_neck(areas, depth)
    if neck is None:
        return [track]

    def mask(z: int) -> np.ndarray:
        return np.isin(maps[z], [r for zt, r in track if zt == z])

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return np.count_nonzero(a & b) / max(min(np.count_nonzero(a), np.count_nonzero(b)), 1)

    z, at_neck = slices[neck], mask(slices[neck])
    joins_before = overlap(at_neck, mask(slices[neck - 1])) >= overlap(
        at_neck, mask(slices[neck + 1])
    )
    cut = z + 1 if joins_before else z
    return split_at_necks(
        [p for p in track if p[0] < cut], maps, region_areas, depth
    ) + split_at_necks([p for p in track if p[0] >= cut], maps, region_areas, depth)


def trim_to_extent(
    track: list[tuple[int, int]], regions: SliceRegions, trim_um: float, witnesses: int = 3
) -> list[tuple[int, int]]:
    """The track without its end slices that lie more than trim_um beyond where its other
    detections say the object ends: at each end, the median of where the detections of the
    ``witnesses`` slices next to the end slice predict the object to end (or begin); the end
    slice is removed while it lies beyond that by more than trim_um. Only ends are removed, so
    a track that still holds two nuclei is not cut in the middle."""
    margin = trim_um / regions.z_spacing_um
    slices = sorted({z for z, _ in track})
    reach = {(z, r): regions.reach(z)[r - 1] for z, r in track}  # (down, up) in slices

    def bound(inner: list[int], side: int) -> float:
        ends = [
            z - reach[(z, r)][0] if side == 0 else z + reach[(z, r)][1]
            for z, r in track
            if z in inner
        ]
        return float(np.median(ends))

    while len(slices) > witnesses and slices[-1] > bound(slices[-1 - witnesses : -1], 1) + margin:
        slices.pop()
    while len(slices) > witnesses and slices[0] < bound(slices[1 : 1 + witnesses], 0) - margin:
        slices.pop(0)
    kept = set(slices)
    return [p for p in track if p[0] in kept]


def finish_track(
    track: list[tuple[int, int]],
    regions: SliceRegions,
    region_areas,
    split_depth: float,
    extent_trim_um: float,
) -> list[list[tuple[int, int]]]:
    """A linked track's final objects: split at its necks (split_depth > 0; region_areas:
    z -> (K_z + 1,) pixels of every region), then each part trimmed to its predicted extent
    (extent_trim_um > 0 and predicted extents)."""
    parts = (
        split_at_necks(track, regions.maps, region_areas, split_depth)
        if split_depth > 0
        else [track]
    )
    if extent_trim_um > 0 and regions.z_extents is not None:
        parts = [trim_to_extent(part, regions, extent_trim_um) for part in parts]
    return parts


def gap_fills(track: list[tuple[int, int]], regions: SliceRegions, predicted: bool):
    """(z, (H, W) bool mask) for every slice a track bridges (look-back): the object's predicted
    mask there (``predicted``), where a neighbour mask reaches it, else the intersection of its
    masks on both sides of the gap."""
    for (z1, r1), (z2, r2) in zip(track, track[1:]):
        if z2 - z1 > 1:
            bridge = (regions.maps[z1] == r1) & (regions.maps[z2] == r2)
            for zg in range(z1 + 1, z2):
                fill = _predicted_fill(regions, (z1, r1), (z2, r2), zg) if predicted else None
                yield zg, bridge if fill is None else fill


def _predicted_fill(
    regions: SliceRegions, before: tuple[int, int], after: tuple[int, int], zg: int
) -> np.ndarray | None:
    """The mask a bridged object is predicted to have in slice zg, from the nearer side of the
    gap whose neighbour masks reach zg (None if neither does)."""
    (z1, r1), (z2, r2) = before, after
    for _, z, region in sorted([(zg - z1, z1, r1), (z2 - zg, z2, r2)]):
        mask = regions.neighbor_mask(z, region, zg - z)
        if mask is not None:
            return mask
    return None
