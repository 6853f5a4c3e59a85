"""z-linking slice by slice, in memory bounded by the z-range of the objects still open.

:class:`StreamingLinker` gives the labels of :func:`emr_d2.linking.link_slices` (tested equal
for every linker it supports), one finished slice at a time, holding only the slices that an
object still open, the look-back or a pending gap fill can change.
"""
from __future__ import annotations

import numpy as np

from .data.ctc import MAX_LABEL
from .linking import LINKERS, SliceRegions, _Tracker, finish_track, gap_fills, paste_slice


class StreamingLinker:
    """Links per-slice predictions as they arrive, in z order.

    ``add(z, masks, scores, neighbor_masks=None, z_extents=None)`` takes slice z ((K, H, W) bool
    masks, (K,) scores, as :func:`emr_d2.linking.instances_to_numpy` gives them) and returns the
    slices that can no longer change, as a list of (z, (H, W) uint16 labels) in z order;
    :meth:`finish` returns the rest, and :attr:`scores` the mean score of every object (label
    k at index k - 1). Options are those of ``link_slices``. The "connected" linker labels 3D
    components of the whole volume and is not streamed (use ``link_volume``).
    """

    def __init__(self, shape: tuple[int, int, int], window_offsets=(), z_spacing_um: float = 1.0,
                 strategy: str = "iou", threshold: float = 0.3, look_back: int = 1, min_slices: int = 1,
                 fill_gaps: bool = True, split_depth: float = 0.0, extent_gate_um: float = 0.0,
                 extent_trim_um: float = 0.0):
        if strategy not in LINKERS:
            raise ValueError(f"TEST.CTC.LINKING must be one of {LINKERS}, got {strategy!r}")
        if strategy == "connected":
            raise ValueError("TEST.CTC.LINKING 'connected' labels the 3D components of the whole volume: it "
                             "needs 4 bytes per voxel for the region maps and cannot be streamed")
        offsets = np.asarray(window_offsets, dtype=np.int64)
        self.shape = tuple(shape)
        self.regions = SliceRegions({}, {}, offsets[offsets != 0], None, None, z_spacing_um)
        self.strategy, self.threshold, self.look_back = strategy, threshold, look_back
        self.min_slices, self.fill_gaps, self.split_depth = min_slices, fill_gaps, split_depth
        self.extent_gate_um, self.extent_trim_um = extent_gate_um, extent_trim_um
        self.tracker: _Tracker | None = None
        self.region_areas: dict[int, np.ndarray] = {}
        self.lookups: dict[int, np.ndarray] = {}  # z -> (K_z + 1,) final label of every region
        self.fills: dict[int, list] = {}  # z -> [(label, (H, W) bool mask)] gap fills, by label
        self.scores: list[float] = []
        self.added = 0  # slices [0, added) have been added
        self.numbered = 0  # tracks [0, numbered) have their final labels
        self.next_slice = 0  # slices [0, next_slice) have been returned

    def add(self, z: int, masks: np.ndarray, scores: np.ndarray, neighbor_masks=None, z_extents=None) -> list:
        if z != self.added:
            raise ValueError(f"slices must come in order: expected z={self.added}, got {z}")
        self.added += 1
        regions = self.regions
        if len(masks):
            regions.maps[z], regions.scores[z], kept = paste_slice(np.asarray(masks, bool), scores)
        else:
            regions.maps[z], regions.scores[z], kept = np.zeros(self.shape[1:], np.int32), np.zeros(0), []
        if neighbor_masks is not None:
            if regions.neighbor_masks is None:
                regions.neighbor_masks = {}
            regions.neighbor_masks[z] = np.asarray(neighbor_masks, bool)[kept]
        if z_extents is not None:
            if regions.z_extents is None:
                regions.z_extents = {}
            regions.z_extents[z] = np.asarray(z_extents, np.float64)[kept]
        if self.tracker is None:
            if self.strategy == "predicted" and regions.neighbor_masks is None:
                raise ValueError("TEST.CTC.LINKING 'predicted' needs neighbour masks: a model with "
                                 "MODEL.ROI_MASK_HEAD.NEIGHBOR_MASKS")
            gate = self.extent_gate_um if regions.z_extents is not None else 0.0
            self.tracker = _Tracker(regions, self.strategy, self.threshold, self.look_back, gate)
        if self.split_depth > 0:  # the shape split reads them
            self.region_areas[z] = np.bincount(regions.maps[z].ravel())
        self.lookups[z] = np.zeros(int(regions.maps[z].max()) + 1, dtype=np.uint16)
        self.tracker.step(z)
        self._number_closed_tracks(final=False)
        open_firsts = [self.tracker.tracks[t][0][0] for t in self.tracker.open]
        return self._settle(min(open_firsts) if open_firsts else z + 1)

    def finish(self) -> list:
        """The slices not returned yet, once every slice has been added."""
        if self.added != self.shape[0]:
            raise ValueError(f"{self.added} of {self.shape[0]} slices were added")
        self._number_closed_tracks(final=True)
        return self._settle(self.shape[0])

    def _number_closed_tracks(self, final: bool) -> None:
        """Finish (split, trim) and number the closed tracks, in the order link_slices numbers
        them: every track whose predecessors are all closed."""
        tracks, regions = self.tracker.tracks, self.regions
        while self.numbered < len(tracks) and (final or self.numbered not in self.tracker.open):
            for part in finish_track(tracks[self.numbered], regions, self.region_areas, self.split_depth,
                                     self.extent_trim_um):
                if len({z for z, _ in part}) >= max(self.min_slices, 1):
                    self._label(part)
            self.numbered += 1

    def _label(self, part: list[tuple[int, int]]) -> None:
        label = len(self.scores) + 1
        if label > MAX_LABEL:
            raise ValueError(f"more than {MAX_LABEL} objects do not fit a uint16 label volume")
        self.scores.append(float(np.mean([self.regions.scores[z][r - 1] for z, r in part])))
        for z, region in part:
            self.lookups[z][region] = label
        if self.fill_gaps:
            for zg, fill in gap_fills(part, self.regions, self.strategy == "predicted"):
                self.fills.setdefault(zg, []).append((label, fill))

    def _settle(self, end: int) -> list:
        """Labels of slices [next_slice, end), which nothing can change any more; their
        per-slice data are released."""
        out = []
        regions = self.regions
        for z in range(self.next_slice, end):
            labels = self.lookups.pop(z)[regions.maps[z]]
            for label, mask in self.fills.pop(z, []):
                labels[mask & (labels == 0)] = label
            out.append((z, labels))
            for store in (regions.maps, regions.scores, regions.neighbor_masks, regions.z_extents, self.region_areas):
                if store is not None:
                    store.pop(z, None)
        self.next_slice = max(self.next_slice, end)
        return out
