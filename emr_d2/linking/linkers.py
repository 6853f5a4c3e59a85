"""The linkers: per-slice predictions in, in z order; final uint16 label planes out.

Every linker numbers, drops (min_slices), scores, splits, trims and gap-fills its objects with
one :class:`ObjectNumbering`. :class:`StreamingLinker` holds only the slices that an object
still open, the look-back or a pending gap fill can change; :class:`ConnectedLinker` ("connected":
3D components of the union of all regions) needs the whole volume before it can number
anything. :func:`open_linker` gives the one the options name; :func:`link_slices` runs it over
a pasted volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .options import LinkOptions, resolve_options
from .regions import MAX_LABEL, SlicePrediction, SliceRegions, paste_prediction, paste_volume
from .similarity import SIMILARITIES
from .tracks import Tracker, finish_track, gap_fills


@dataclass
class LinkedVolume:
    """The result of linking: a label volume and the score of each of its objects."""

    labels: np.ndarray  # (Z, H, W) uint16, objects 1..K
    scores: np.ndarray  # (K,) mean score of each object's slices


class ObjectNumbering:
    """Turns finished tracks into numbered objects and slices into final label planes.

    A track is finished (:func:`finish_track`), parts in fewer than ``min_slices`` slices are
    dropped, the rest numbered 1, 2, ... in the order :meth:`number` sees them, each scored by
    the mean score of its regions, and (``fill_gaps``) the slices it bridges filled on
    background pixels.
    """

    def __init__(self, regions: SliceRegions, options: LinkOptions):
        self.regions, self.options = regions, options
        self.region_areas: dict[int, np.ndarray] = {}  # z -> (K_z + 1,) pixels, for the shape split
        self.lookups: dict[int, np.ndarray] = {}  # z -> (K_z + 1,) final label of every region
        self.fills: dict[int, list] = {}  # z -> [(label, (H, W) bool mask)], by label
        self.scores: list[float] = []

    def add_slice(self, z: int) -> None:
        """Make room for slice z's labels, once its regions are in ``regions.maps[z]``."""
        region_map = self.regions.maps[z]
        if self.options.split_depth > 0:
            self.region_areas[z] = np.bincount(region_map.ravel())
        self.lookups[z] = np.zeros(int(region_map.max()) + 1, dtype=np.uint16)

    def number(self, track: list[tuple[int, int]]) -> None:
        """Finish a track (its (z, region) pairs, in z order) and number what is kept of it.

        Args:
            track: the (z, region index >= 1) of every slice the track holds.
        """
        options, regions = self.options, self.regions
        for part in finish_track(
            track, regions, self.region_areas, options.split_depth, options.extent_trim_um
        ):
            if len({z for z, _ in part}) < options.min_slices:
                continue
            label = len(self.scores) + 1
            if label > MAX_LABEL:
                raise ValueError(f"more than {MAX_LABEL} objects do not fit a uint16 label volume")
            self.scores.append(float(np.mean([regions.scores[z][r - 1] for z, r in part])))
            for z, region in part:
                self.lookups[z][region] = label
            if options.fill_gaps:
                for zg, fill in gap_fills(part, regions, options.strategy == "predicted"):
                    self.fills.setdefault(zg, []).append((label, fill))

    def planes(self, start: int, end: int) -> list[tuple[int, np.ndarray]]:
        """(z, (H, W) uint16 labels) of slices [start, end), whose tracks are all numbered; their
        per-slice data are released."""
        out = []
        regions = self.regions
        for z in range(start, end):
            labels = self.lookups.pop(z)[regions.maps[z]]
            for label, mask in self.fills.pop(z, []):
                labels[mask & (labels == 0)] = label
            out.append((z, labels))
            for store in (
                regions.maps,
                regions.scores,
                regions.neighbor_masks,
                regions.z_extents,
                self.region_areas,
            ):
                if store is not None:
                    store.pop(z, None)
        return out


class SliceLinker:
    """What every linker shares: slices taken in z order into a :class:`SliceRegions` of dicts.

    ``add(z, prediction)`` takes slice z's :class:`SlicePrediction` (or ``add_regions`` its
    pasted regions) and returns the label planes that can no longer change, as (z, (H, W)
    uint16) in z order; :meth:`finish` returns the rest once every slice is in; :attr:`scores`
    is the mean score of every object (label k at index k - 1).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        window_offsets=(),
        z_spacing_um: float = 1.0,
        options: LinkOptions | None = None,
        **changes,
    ):
        self.options = resolve_options(options, changes)
        offsets = np.asarray(window_offsets, dtype=np.int64)
        self.shape = tuple(shape)
        self.regions = SliceRegions({}, {}, offsets[offsets != 0], None, None, z_spacing_um)
        self.numbering = ObjectNumbering(self.regions, self.options)
        self.added = 0  # slices [0, added) have been added

    @property
    def scores(self) -> list[float]:
        """The mean score of every object numbered so far (label k at index k - 1)."""
        return self.numbering.scores

    def add(self, z: int, prediction: SlicePrediction) -> list:
        """Paste and link slice z.

        Args:
            z: the slice, one more than the last slice added.
            prediction: its instances (masks (R, H, W), scores (R,), ...).

        Returns:
            [(z', (H, W) uint16 labels)] of the slices that no later slice can change, in z order.
        """
        return self.add_regions(z, *paste_prediction(prediction, self.shape[1:]))

    def add_regions(
        self,
        z: int,
        region_map: np.ndarray,
        scores: np.ndarray,
        neighbor_masks=None,
        z_extents=None,
    ) -> list:
        """Slice z pasted: (H, W) int32 regions 1..K, (K,) scores, (K, M, H, W) neighbour masks
        or None, (K, 2) z extents (um) or None."""
        if z != self.added:
            raise ValueError(f"slices must come in order: expected z={self.added}, got {z}")
        regions = self.regions
        if z == 0 and self.options.strategy == "predicted" and neighbor_masks is None:
            raise ValueError(
                "strategy 'predicted' needs neighbour masks: a model with a neighbour-mask head"
            )
        self.added += 1
        regions.maps[z], regions.scores[z] = region_map, scores
        if neighbor_masks is not None:
            regions.neighbor_masks = (
                regions.neighbor_masks if regions.neighbor_masks is not None else {}
            )
            regions.neighbor_masks[z] = neighbor_masks
        if z_extents is not None:
            regions.z_extents = regions.z_extents if regions.z_extents is not None else {}
            regions.z_extents[z] = z_extents
        self.numbering.add_slice(z)
        return self._added(z)

    def finish(self) -> list:
        """The label planes not returned yet, once every slice has been added."""
        if self.added != self.shape[0]:
            raise ValueError(f"{self.added} of {self.shape[0]} slices were added")
        return self._finished()

    def _added(self, z: int) -> list:
        raise NotImplementedError

    def _finished(self) -> list:
        raise NotImplementedError


class StreamingLinker(SliceLinker):
    """Links slice by slice with a :class:`Tracker`, in memory bounded by the z-range of the
    objects still open; for the strategies of :data:`SIMILARITIES`."""

    def __init__(
        self,
        shape,
        window_offsets=(),
        z_spacing_um: float = 1.0,
        options: LinkOptions | None = None,
        **changes,
    ):
        super().__init__(shape, window_offsets, z_spacing_um, options, **changes)
        if self.options.strategy not in SIMILARITIES:
            raise ValueError(
                f"strategy {self.options.strategy!r} links whole volumes, not slice by slice: "
                "use open_linker or link_slices"
            )
        self.tracker: Tracker | None = None
        self.numbered = 0  # tracks [0, numbered) are numbered
        self.next_slice = 0  # slices [0, next_slice) have been returned

    def _added(self, z: int) -> list:
        if self.tracker is None:
            options = self.options
            gate = options.extent_gate_um if self.regions.z_extents is not None else 0.0
            self.tracker = Tracker(
                self.regions, options.strategy, options.threshold, options.look_back, gate
            )
        self.tracker.step(z)
        self._number_closed_tracks(final=False)
        open_firsts = [self.tracker.tracks[t][0][0] for t in self.tracker.open]
        return self._settle(min(open_firsts) if open_firsts else z + 1)

    def _finished(self) -> list:
        if self.tracker is not None:
            self._number_closed_tracks(final=True)
        return self._settle(self.shape[0])

    def _number_closed_tracks(self, final: bool) -> None:
        """Number every track whose predecessors are all closed, in track order."""
        tracks = self.tracker.tracks
        while self.numbered < len(tracks) and (final or self.numbered not in self.tracker.open):
            self.numbering.number(tracks[self.numbered])
            self.numbered += 1

    def _settle(self, end: int) -> list:
        out = self.numbering.planes(self.next_slice, end)
        self.next_slice = max(self.next_slice, end)
        return out


class ConnectedLinker(SliceLinker):
    """ "connected": the 3D components (face-connected) of the union of all regions, each region
    joining the component that holds most of its pixels. Holds every slice until
    :meth:`finish`: 4 bytes per voxel for the region maps."""

    def _added(self, z: int) -> list:
        return []

    def _finished(self) -> list:
        maps = self.regions.maps
        depth = self.shape[0]
        components, count = (
            ndimage.label(np.stack([maps[z] for z in range(depth)]) > 0) if depth else (None, 0)
        )
        tracks = [[] for _ in range(count)]
        for z in range(depth):
            regions, component_of = maps[z].ravel(), components[z].ravel()
            present = regions > 0
            pairs, pixels = np.unique(
                np.stack([regions[present], component_of[present]]), axis=1, return_counts=True
            )
            best = {}
            for (region, component), n in zip(pairs.T, pixels):
                if n > best.get(region, (0, 0))[0]:
                    best[region] = (n, component)
            for region, (_, component) in sorted(best.items()):
                tracks[component - 1].append((z, int(region)))
        for track in tracks:
            self.numbering.number(track)
        return self.numbering.planes(0, depth)


def open_linker(
    shape: tuple[int, int, int],
    window_offsets=(),
    z_spacing_um: float = 1.0,
    options: LinkOptions | None = None,
    **changes,
) -> SliceLinker:
    """The linker of ``options`` (the default config's, with ``changes``) for a (Z, H, W)
    volume whose neighbour masks are at the non-zero ``window_offsets`` and whose slices are
    z_spacing_um apart."""
    options = resolve_options(options, changes)
    linker = ConnectedLinker if options.strategy not in SIMILARITIES else StreamingLinker
    return linker(shape, window_offsets, z_spacing_um, options)


def link_slices(
    regions: SliceRegions, options: LinkOptions | None = None, **changes
) -> LinkedVolume:
    """Link a pasted volume (:func:`paste_volume`) into 3D objects.

    Args:
        regions: the pasted slices of one (Z, H, W) volume.
        options: :class:`LinkOptions`; None: the default config's. ``changes`` replace some
            of them (``link_slices(regions, strategy="overlap")``).
    Returns:
        :class:`LinkedVolume`: (Z, H, W) uint16 labels and (K,) object scores.
    """
    shape = tuple(np.shape(regions.maps))
    linker = open_linker(shape, regions.neighbor_offsets, regions.z_spacing_um, options, **changes)
    labels = np.zeros(shape, np.uint16)
    for z in range(shape[0]):
        for zs, plane in linker.add_regions(z, *regions.slice(z)):
            labels[zs] = plane
    for zs, plane in linker.finish():
        labels[zs] = plane
    return LinkedVolume(labels, np.asarray(linker.scores, dtype=np.float64))


def link_volume(
    predictions,
    shape: tuple[int, int, int],
    window_offsets=(),
    z_spacing_um: float = 1.0,
    options: LinkOptions | None = None,
    **changes,
) -> LinkedVolume:
    """Paste and link the (z, :class:`SlicePrediction`) pairs of one volume (slices not given
    are empty); options as :func:`link_slices`."""
    return link_slices(
        paste_volume(predictions, shape, window_offsets, z_spacing_um), options, **changes
    )
