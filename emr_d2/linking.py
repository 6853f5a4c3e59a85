"""z-linking: per-slice instance masks with scores -> one uint16 3D label volume.

1. Every slice's masks are pasted in ascending score order, so where masks overlap the higher
   score wins (:func:`paste_slice`).
2. The 2D regions are linked across z into 3D objects by one of the strategies in LINKERS:
   by the overlap of the regions themselves, or (``predicted``) by the overlap of each region's
   predicted masks in the neighbour slices (the neighbour-mask head) with the regions there.
3. Optionally (``split_depth``), a linked object is split where its area along z has a clear
   interior minimum: nuclei are convex, so an area that falls and rises again is the cap of one
   nucleus linked to the cap of the next (:func:`split_at_necks`).
4. With a z-extent head, detections whose predicted extents say that one object ends before the
   other begins are not linked (``extent_gate_um``), and end slices beyond where the object's
   other detections say it ends are removed (``extent_trim_um``, :func:`trim_to_extent`).
5. Objects shorter than ``min_slices`` are dropped and the rest relabelled 1..K.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .data.ctc import MAX_LABEL

LINKERS = ("iou", "overlap", "connected", "predicted")


@dataclass
class SliceRegions:
    """The pasted per-slice predictions of one volume, as :func:`link_slices` takes them."""

    maps: np.ndarray  # (Z, H, W) int32, regions 1..K_z of every slice (0 background)
    scores: list  # Z arrays: (K_z,) score of each region
    neighbor_offsets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) dz
    # Z arrays (K_z, M, H, W) bool: region k's predicted mask in slice z + neighbor_offsets[m]
    # (in slice z's region order); None without a neighbour-mask head.
    neighbor_masks: list | None = None
    # Z arrays (K_z, 2) float: how far region k's object reaches below and above slice z, in um
    # (the z-extent head's pred_z_extent); None without a z-extent head.
    z_extents: list | None = None
    z_spacing_um: float = 1.0  # slice spacing the extents are measured in

    def reach(self, z: int) -> np.ndarray:
        """(K_z, 2) predicted reach of slice z's regions below and above it, in slices."""
        return self.z_extents[z] / self.z_spacing_um

    def neighbor_mask(self, z: int, region: int, dz: int) -> np.ndarray | None:
        """(H, W) predicted mask of region ``region`` of slice z in slice z + dz, if predicted."""
        if self.neighbor_masks is None or dz not in self.neighbor_offsets.tolist():
            return None
        return self.neighbor_masks[z][region - 1, self.neighbor_offsets.tolist().index(dz)]


@dataclass
class LinkedVolume:
    labels: np.ndarray  # (Z, H, W) uint16, objects 1..K
    scores: np.ndarray  # (K,) mean score of each object's slices


def paste_slice(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resolve overlaps by score: (K, H, W) bool masks -> (H, W) int32 map of 1..K', (K',) scores
    and (K',) index of the instance behind each region.

    Instances that keep no pixel are dropped; region k of the map has score scores_out[k-1].
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


def _overlaps(current: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection (A, B), areas (A,), areas (B,)) between the regions of two slice maps."""
    n_a, n_b = int(current.max()) + 1, int(previous.max()) + 1
    table = np.bincount((current.ravel().astype(np.int64) * n_b + previous.ravel()),
                        minlength=n_a * n_b).reshape(n_a, n_b)
    areas_a = table.sum(axis=1)[1:]
    areas_b = table.sum(axis=0)[1:]
    return table[1:, 1:], areas_a, areas_b


def _mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(A, B) IoU between (A, H, W) and (B, H, W) bool masks."""
    a, b = a.reshape(len(a), -1).astype(np.float32), b.reshape(len(b), -1).astype(np.float32)
    inter = a @ b.T
    return inter / np.maximum(a.sum(1)[:, None] + b.sum(1)[None] - inter, 1)


def _predicted_similarity(regions: SliceRegions, z: int, zp: int, cols: np.ndarray,
                          iou: np.ndarray) -> np.ndarray:
    """(A, B) similarity of slice z's regions with regions ``cols + 1`` of slice zp < z: the mean
    IoU of each side's predicted mask in the other slice with the other side's region, over the
    sides whose neighbour masks reach that far; the plain IoU where neither does."""
    maps = regions.maps
    now = maps[z][None] == np.arange(1, int(maps[z].max()) + 1)[:, None, None]
    before = maps[zp][None] == (cols + 1)[:, None, None]
    scores = []
    if zp - z in regions.neighbor_offsets.tolist():
        forecast = np.stack([regions.neighbor_mask(z, r, zp - z) for r in range(1, len(now) + 1)])
        scores.append(_mask_iou(forecast, before))
    if z - zp in regions.neighbor_offsets.tolist():
        forecast = np.stack([regions.neighbor_mask(zp, r, z - zp) for r in cols + 1])
        scores.append(_mask_iou(now, forecast))
    return np.mean(scores, axis=0) if scores else iou


def _extent_conflicts(regions: SliceRegions, z: int, zp: int, cols: np.ndarray, gate_um: float) -> np.ndarray:
    """(A, B) True where slice z's region a predicts its object to begin, or region ``cols + 1``
    of slice zp < z predicts its object to end, more than gate_um between zp and z."""
    gap_um = (z - zp) * regions.z_spacing_um
    starts_after = gap_um - regions.z_extents[z][:, 0] > gate_um  # (A,)
    ends_before = gap_um - regions.z_extents[zp][cols, 1] > gate_um  # (B,)
    return starts_after[:, None] | ends_before[None, :]


class _Tracker:
    """Builds tracks of (z, region) pairs slice by slice: each slice's regions are linked to
    objects seen up to 1 + look_back slices before by maximum-weight assignment of IoU, overlap /
    smaller area or predicted IoU (:func:`_predicted_similarity`); pairs whose predicted extents
    conflict (:func:`_extent_conflicts`, with extent_gate_um > 0) are never linked.

    ``regions`` is read only at the current slice and the look_back + 1 before it, so its
    per-slice fields may be dicts that hold only those (streaming)."""

    def __init__(self, regions: SliceRegions, strategy: str, threshold: float, look_back: int,
                 extent_gate_um: float = 0.0):
        self.regions, self.strategy, self.threshold = regions, strategy, threshold
        self.look_back, self.extent_gate_um = look_back, extent_gate_um
        self.tracks: list[list[tuple[int, int]]] = []
        self.open: dict[int, int] = {}  # track index -> last z
        self.last_region: dict[int, int] = {}  # track index -> region id at its last z

    def step(self, z: int) -> None:
        """Link the regions of slice z; tracks that can no longer continue leave ``open``."""
        maps, look_back = self.regions.maps, self.look_back
        n_regions = int(maps[z].max())
        candidates, similarity = [], []
        for zp in range(max(z - 1 - look_back, 0), z):
            ends_here = [t for t, last in self.open.items() if last == zp]
            if not ends_here or n_regions == 0:
                continue
            inter, area_now, area_prev = _overlaps(maps[z], maps[zp])
            cols = np.array([self.last_region[t] - 1 for t in ends_here])
            inter = inter[:, cols]
            if self.strategy == "overlap":
                denom = np.minimum(area_now[:, None], area_prev[None, cols])
            else:
                denom = area_now[:, None] + area_prev[None, cols] - inter
            sim = inter / np.maximum(denom, 1)
            if self.strategy == "predicted":
                sim = _predicted_similarity(self.regions, z, zp, cols, sim)
            if self.extent_gate_um > 0:
                sim = np.where(_extent_conflicts(self.regions, z, zp, cols, self.extent_gate_um), -1.0, sim)
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
        for t in [t for t, last in self.open.items() if z - last > look_back]:
            del self.open[t]


def _neck(areas: np.ndarray, depth: float) -> int | None:
    """Index of the deepest interior minimum of an (n,) area profile that lies at least
    ``depth`` (a fraction) below the largest area on each of its sides; None if none does."""
    if len(areas) < 3:
        return None
    left = np.maximum.accumulate(areas)[:-2]  # largest area before each interior index
    right = np.maximum.accumulate(areas[::-1])[::-1][2:]  # and after it
    ratio = areas[1:-1] / np.maximum(np.minimum(left, right), 1)
    neck = int(np.argmin(ratio))
    return neck + 1 if ratio[neck] <= 1 - depth else None


def split_at_necks(track: list[tuple[int, int]], slice_maps: np.ndarray, region_areas: list[np.ndarray],
                   depth: float) -> list[list]:
    """Split a track of (z, region) pairs at every clear interior minimum of its area along z
    (at least ``depth`` below the largest area on both sides), deepest first. The neck slice
    stays with the side whose neighbouring slice it overlaps more (intersection over the smaller
    area), so that a cap joins its own nucleus.

    region_areas: per slice, (K_z + 1,) pixel count of every region of ``slice_maps[z]``.
    """
    slices = sorted({z for z, _ in track})
    position = {z: i for i, z in enumerate(slices)}
    areas = np.zeros(len(slices))
    for z, region in track:
        areas[position[z]] += region_areas[z][region]
    neck = _neck(areas, depth)
    if neck is None:
        return [track]

    def mask(z: int) -> np.ndarray:
        return np.isin(slice_maps[z], [r for zt, r in track if zt == z])

    def overlap(a: np.ndarray, b: np.ndarray) -> float:
        return np.count_nonzero(a & b) / max(min(np.count_nonzero(a), np.count_nonzero(b)), 1)

    z, at_neck = slices[neck], mask(slices[neck])
    joins_before = overlap(at_neck, mask(slices[neck - 1])) >= overlap(at_neck, mask(slices[neck + 1]))
    cut = z + 1 if joins_before else z
    return (split_at_necks([p for p in track if p[0] < cut], slice_maps, region_areas, depth)
            + split_at_necks([p for p in track if p[0] >= cut], slice_maps, region_areas, depth))


def trim_to_extent(track: list[tuple[int, int]], regions: SliceRegions, trim_um: float,
                   witnesses: int = 3) -> list[tuple[int, int]]:
    """The track without its end slices that lie more than trim_um beyond where its other
    detections say the object ends: at each end, the median of where the detections of the
    ``witnesses`` slices next to the end slice predict the object to end (or begin); the end
    slice is removed while it lies beyond that by more than trim_um. Only ends are removed, so
    a track that still holds two nuclei is not cut in the middle."""
    margin = trim_um / regions.z_spacing_um
    slices = sorted({z for z, _ in track})
    reach = {(z, r): regions.reach(z)[r - 1] for z, r in track}  # (down, up) in slices

    def bound(inner: list[int], side: int) -> float:
        ends = [z - reach[(z, r)][0] if side == 0 else z + reach[(z, r)][1] for z, r in track if z in inner]
        return float(np.median(ends))

    while len(slices) > witnesses and slices[-1] > bound(slices[-1 - witnesses:-1], 1) + margin:
        slices.pop()
    while len(slices) > witnesses and slices[0] < bound(slices[1:1 + witnesses], 0) - margin:
        slices.pop(0)
    kept = set(slices)
    return [p for p in track if p[0] in kept]


def finish_track(track: list[tuple[int, int]], regions: SliceRegions, region_areas, split_depth: float,
                 extent_trim_um: float) -> list[list[tuple[int, int]]]:
    """A linked track's final objects: split at its necks (split_depth > 0; region_areas per
    slice, see :func:`split_at_necks`), then each part trimmed to its predicted extent
    (extent_trim_um > 0 and predicted extents)."""
    parts = split_at_necks(track, regions.maps, region_areas, split_depth) if split_depth > 0 else [track]
    if extent_trim_um > 0 and regions.z_extents is not None:
        parts = [trim_to_extent(part, regions, extent_trim_um) for part in parts]
    return parts


def link_slices(
    regions: SliceRegions,
    strategy: str = "iou",
    threshold: float = 0.3,
    look_back: int = 1,
    min_slices: int = 1,
    fill_gaps: bool = True,
    split_depth: float = 0.0,
    extent_gate_um: float = 0.0,
    extent_trim_um: float = 0.0,
) -> LinkedVolume:
    """Link per-slice regions into 3D objects.

    regions: the pasted slices of one volume (:func:`paste_volume`).
    strategy: "iou" (IoU between slices), "overlap" (intersection over the smaller region,
        robust where nuclei shrink towards their poles), "connected" (3D connected components
        of the union of all regions) or "predicted" (IoU of the regions' predicted neighbour
        masks with the regions of the other slice; needs ``regions.neighbor_masks``).
    fill_gaps: where look-back bridged missed slices, fill them (only on background pixels) with
        the object's predicted mask there if one was predicted (predicted linking), else with
        the intersection of the object's masks on both sides of the gap.
    split_depth: with any strategy, split linked objects at interior minima of their area along
        z at least this fraction below the largest area on both sides (:func:`split_at_necks`);
        0 turns it off.
    extent_gate_um, extent_trim_um: with predicted extents (``regions.z_extents``), never link
        two detections whose extents are more than extent_gate_um apart
        (:func:`_extent_conflicts`), and remove an object's end slices that lie more than
        extent_trim_um beyond where its neighbouring detections say it ends
        (:func:`trim_to_extent`); 0 turns each off. Ignored without predicted extents.
    """
    if strategy not in LINKERS:
        raise ValueError(f"TEST.CTC.LINKING must be one of {LINKERS}, got {strategy!r}")
    if strategy == "predicted" and regions.neighbor_masks is None:
        raise ValueError("TEST.CTC.LINKING 'predicted' needs neighbour masks: a model with "
                         "MODEL.ROI_MASK_HEAD.NEIGHBOR_MASKS")
    slice_maps, slice_scores = regions.maps, regions.scores
    depth = slice_maps.shape[0]
    components = None
    if strategy == "connected":
        components, count = ndimage.label(slice_maps > 0)
        tracks = [[] for _ in range(count)]
        for z in range(depth):
            pairs = np.unique(np.stack([components[z].ravel(), slice_maps[z].ravel()]), axis=1)
            for component, region in pairs.T:
                if component and region:
                    tracks[component - 1].append((z, int(region)))
    else:
        tracker = _Tracker(regions, strategy, threshold, look_back,
                           extent_gate_um if regions.z_extents is not None else 0.0)
        for z in range(depth):
            tracker.step(z)
        tracks = tracker.tracks
    region_areas = [np.bincount(m.ravel()) for m in slice_maps] if split_depth > 0 else None
    reshaped = [finish_track(t, regions, region_areas, split_depth, extent_trim_um) for t in tracks]
    if any(parts != [track] for parts, track in zip(reshaped, tracks)):
        components = None  # objects are now sets of regions, not 3D components
    tracks = [part for parts in reshaped for part in parts]
    kept = [t for t in range(len(tracks)) if len({z for z, _ in tracks[t]}) >= max(min_slices, 1)]
    if len(kept) > MAX_LABEL:
        raise ValueError(f"{len(kept)} objects do not fit a uint16 label volume")
    scores = np.array([np.mean([slice_scores[z][r - 1] for z, r in tracks[t]]) for t in kept])
    if components is not None:
        lookup = np.zeros(len(tracks) + 1, dtype=np.uint16)
        lookup[np.array(kept, dtype=np.int64) + 1] = np.arange(1, len(kept) + 1)
        return LinkedVolume(lookup[components], scores)
    lookups = [np.zeros(int(slice_maps[z].max()) + 1, dtype=np.uint16) for z in range(depth)]
    for new_label, t in enumerate(kept, start=1):
        for z, region in tracks[t]:
            lookups[z][region] = new_label
    labels = np.stack([lookups[z][slice_maps[z]] for z in range(depth)]) if depth else \
        np.zeros(slice_maps.shape, np.uint16)
    if fill_gaps:
        for new_label, t in enumerate(kept, start=1):
            for zg, fill in gap_fills(tracks[t], regions, strategy == "predicted"):
                labels[zg][fill & (labels[zg] == 0)] = new_label
    return LinkedVolume(labels, scores)


def gap_fills(track: list[tuple[int, int]], regions: SliceRegions, predicted: bool):
    """(z, (H, W) bool mask) for every slice a track bridges (look-back): the object's predicted
    mask there with predicted linking, where a neighbour mask reaches it, else the intersection
    of its masks on both sides of the gap."""
    for (z1, r1), (z2, r2) in zip(track, track[1:]):
        if z2 - z1 > 1:
            bridge = (regions.maps[z1] == r1) & (regions.maps[z2] == r2)
            for zg in range(z1 + 1, z2):
                fill = _predicted_fill(regions, (z1, r1), (z2, r2), zg) if predicted else None
                yield zg, bridge if fill is None else fill


def _predicted_fill(regions: SliceRegions, before: tuple[int, int], after: tuple[int, int],
                    zg: int) -> np.ndarray | None:
    """The mask a bridged object is predicted to have in slice zg, from the nearer side of the
    gap whose neighbour masks reach zg (None if neither does)."""
    (z1, r1), (z2, r2) = before, after
    sides = sorted([(zg - z1, z1, r1), (z2 - zg, z2, r2)])
    for _, z, region in sides:
        mask = regions.neighbor_mask(z, region, zg - z)
        if mask is not None:
            return mask
    return None


# The TEST.CTC key of every keyword argument of link_slices.
LINK_OPTION_KEYS = {"strategy": "LINKING", "threshold": "LINK_THRESHOLD", "look_back": "LOOK_BACK",
                    "min_slices": "MIN_SLICES", "fill_gaps": "FILL_GAPS", "split_depth": "SPLIT_DEPTH",
                    "extent_gate_um": "EXTENT_GATE_UM", "extent_trim_um": "EXTENT_TRIM_UM"}


def link_options_from_config(cfg) -> dict:
    """Keyword arguments of :func:`link_slices` from a config's TEST.CTC keys."""
    return {option: cfg.TEST.CTC[key] for option, key in LINK_OPTION_KEYS.items()}


def instances_to_numpy(instances, score_threshold: float) -> tuple:
    """The detectron2 Instances scoring at least the threshold as numpy: (K, H, W) bool masks,
    (K,) scores, (K, M, H, W) bool predicted neighbour masks and (K, 2) predicted z extents in
    um, each of the last two None where the model does not predict it."""
    keep = (instances.scores >= score_threshold).cpu()

    def field(name: str, dtype) -> np.ndarray | None:
        return instances.get(name).cpu()[keep].numpy().astype(dtype) if instances.has(name) else None

    return (field("pred_masks", bool), instances.scores.cpu()[keep].numpy(),
            field("pred_neighbor_masks", bool), field("pred_z_extent", np.float64))


def paste_volume(predictions, shape: tuple[int, int, int], window_offsets=(), z_spacing_um: float = 1.0) -> SliceRegions:
    """Paste the per-slice predictions of one volume into :class:`SliceRegions`.

    predictions: iterable of (z, (K, H, W) bool masks, (K,) scores[, (K, M, H, W) bool predicted
    neighbour masks or None[, (K, 2) predicted z extents in um or None]]), as
    :func:`instances_to_numpy` gives them; neighbour masks are at the non-zero
    ``window_offsets`` (dz), extents measured with slices z_spacing_um apart. Slices not given
    are empty.
    """
    offsets = np.asarray(window_offsets, dtype=np.int64)
    offsets = offsets[offsets != 0]
    slice_maps = np.zeros(shape, dtype=np.int32)
    slice_scores = [np.zeros(0)] * shape[0]
    neighbors = extents = None
    for z, masks, scores, *extra in predictions:
        neighbor_masks, z_extents = (list(extra) + [None, None])[:2]
        if neighbor_masks is not None and neighbors is None:
            neighbors = [np.zeros((0, len(offsets), *shape[1:]), bool)] * shape[0]
        if z_extents is not None and extents is None:
            extents = [np.zeros((0, 2))] * shape[0]
        if len(masks):
            slice_maps[z], slice_scores[z], kept = paste_slice(masks, scores)
            if neighbor_masks is not None:
                neighbors[z] = np.asarray(neighbor_masks, dtype=bool)[kept]
            if z_extents is not None:
                extents[z] = np.asarray(z_extents, dtype=np.float64)[kept]
    return SliceRegions(slice_maps, slice_scores, offsets if neighbors is not None else offsets[:0], neighbors,
                        extents, z_spacing_um)


def link_volume(predictions, shape: tuple[int, int, int], window_offsets=(), z_spacing_um: float = 1.0,
                **options) -> LinkedVolume:
    """Paste and link per-slice predictions of one volume (options: those of :func:`link_slices`)."""
    return link_slices(paste_volume(predictions, shape, window_offsets, z_spacing_um), **options)


def link_with_reference(slice_maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Oracle linking: every region of every slice takes the reference label it overlaps most in
    that slice; regions that overlap no reference object become objects of their own.

    slice_maps: (Z, H, W) region maps (``SliceRegions.maps``); reference: (Z, H, W) labels.
    Returns (Z, H, W) int64 labels. Its SEG is the most any linking of these masks can reach
    (up to gap filling): the rest is lost by the masks themselves.
    """
    labels = np.zeros(slice_maps.shape, dtype=np.int64)
    next_label = int(reference.max()) + 1 if reference.size else 1
    for z in range(slice_maps.shape[0]):
        regions = slice_maps[z]
        count = int(regions.max())
        if count == 0:
            continue
        ref_ids, ref_codes = np.unique(reference[z], return_inverse=True)
        table = np.bincount(regions.ravel().astype(np.int64) * len(ref_ids) + ref_codes.ravel(),
                            minlength=(count + 1) * len(ref_ids)).reshape(count + 1, len(ref_ids))
        table[:, ref_ids == 0] = 0
        best = table.argmax(axis=1)
        lookup = np.where(table.max(axis=1) > 0, ref_ids[best], 0).astype(np.int64)
        unmatched = np.flatnonzero(lookup[1:] == 0) + 1
        lookup[unmatched] = next_label + np.arange(len(unmatched))
        next_label += len(unmatched)
        lookup[0] = 0
        labels[z] = lookup[regions]
    return labels
