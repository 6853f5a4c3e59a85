"""The CTC SEG measure and related counts on label volumes, vectorised with numpy.

CTC rule: a reference object R is matched to the result object S with |R & S| > 0.5 |R| (at most
one such S exists, since result objects are disjoint); R scores the Jaccard index
|R & S| / |R | S|, or 0 when unmatched. SEG is the mean over all reference objects of all
evaluated frames, pooled. False positives cost nothing in SEG; the counts report them.

Torch-free: ``tools/ctc_seg.py`` imports this module alone.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

# label pair tables up to this size are counted with bincount, larger with a sort
_DENSE_LIMIT = 1 << 22
# planes are scanned in blocks of about this many voxels: faster than all at once
_BLOCK_VOXELS = 1 << 20
logger = logging.getLogger(__name__)
SHARE = 0.2  # share of an object's voxels that makes another object a part of a split or merge


def _label_codes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, codes) with ``labels == ids[codes]``; ids keep the labels' dtype. Small non-negative
    labels are their own codes (ids = 0..max, absent labels included); other labels are ranked."""
    if labels.dtype.kind == "u" or (labels.dtype.kind == "i"
                                    and (not labels.size or labels.min() >= 0)):
        top = int(labels.max()) if labels.size else 0
        if top < _DENSE_LIMIT:
            codes = labels.astype(
                np.int64) if labels.dtype == np.uint64 else labels  # uint64 + int64: float
            return np.arange(top + 1, dtype=labels.dtype), codes
    return np.unique(labels, return_inverse=True)


@dataclass
class PairCounts:
    """Voxel counts of the (reference label, result label) pairs that occur where either image
    is foreground, per plane along the first axis or (plane 0) for the whole image. Without
    planes, a pair met in several blocks of planes has one partial count per block."""

    plane: np.ndarray  # (P,) int64
    gt: np.ndarray  # (P,) reference label, 0 = background
    res: np.ndarray  # (P,) result label, 0 = background
    voxels: np.ndarray  # (P,) int64


def _totals(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distinct keys, index of each key into them, summed count of each distinct key)."""
    distinct, index = np.unique(keys, return_inverse=True)
    return distinct, index, np.bincount(index, weights=counts,
                                        minlength=len(distinct)).astype(np.int64)


def _count_block(g: np.ndarray, r: np.ndarray, plane_size: int) -> tuple[np.ndarray, ...]:
    """(plane, gt label, res label, voxels) of one flat block (plane_size 0: no planes).

    Counts runs of consecutive voxels with the same label pair rather than voxels, so that
    after two comparisons the work scales with the object boundaries, not the volume.
    """
    change = g[1:] != g[:-1]
    change |= r[1:] != r[:-1]
    if plane_size:
        change[plane_size - 1 :: plane_size] = True  # no run crosses a plane boundary
    starts = np.flatnonzero(change)
    starts += 1
    starts = np.concatenate(([0], starts))
    lengths = np.diff(starts, append=g.size)
    g_labels, r_labels = g.take(starts), r.take(starts)
    foreground = np.logical_or(g_labels, r_labels)
    starts, lengths = starts[foreground], lengths[foreground]
    g_ids, g_codes = _label_codes(g_labels[foreground])
    r_ids, r_codes = _label_codes(r_labels[foreground])
    pair_count = len(g_ids) * len(r_ids)
    keys = np.multiply(g_codes, len(r_ids), dtype=np.int64)
    keys += r_codes
    planes = -(-g.size // plane_size) if plane_size else 1
    if planes > 1:
        keys += starts // plane_size * pair_count
    if planes * pair_count <= _DENSE_LIMIT:
        counts = np.bincount(keys, weights=lengths, minlength=planes * pair_count)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, _, counts = _totals(keys, lengths)
    plane, pair = np.divmod(keys, pair_count)
    g_code, r_code = np.divmod(pair, len(r_ids))
    return plane, g_ids[g_code], r_ids[r_code], counts.astype(np.int64)


def pair_counts(gt: np.ndarray, res: np.ndarray, per_plane: bool = False) -> PairCounts:
    """Count the label pairs of two label images of the same shape (any integer dtype), reading
    both once, a block of planes at a time."""
    if gt.shape != res.shape:
        raise ValueError(f"reference shape {gt.shape} differs from result shape {res.shape}")
    g, r = np.asarray(gt), np.asarray(res)
    rows, plane_size = (g.shape[0] if g.ndim else 1), int(np.prod(g.shape[1:]))
    g, r = g.reshape(rows, plane_size), r.reshape(rows, plane_size)
    step = max(1, _BLOCK_VOXELS // max(plane_size, 1))
    blocks = []
    for first in range(0, rows if plane_size else 0, step):
        plane, g_labels, r_labels, voxels = _count_block(
            g[first:first + step].ravel(), r[first:first + step].ravel(),
            plane_size if per_plane else 0
        )
        blocks.append((plane + first if per_plane else plane, g_labels, r_labels, voxels))
    if not blocks:
        none = np.zeros(0, np.int64)
        return PairCounts(none, none.astype(g.dtype), none.astype(r.dtype), none)
    return PairCounts(*(np.concatenate(column) for column in zip(*blocks)))


@dataclass
class Contingency:
    """Sparse overlap table of the reference objects with the result objects of one frame."""

    gt_ids: np.ndarray  # (G,) reference labels
    res_ids: np.ndarray  # (S,) result labels
    gt_sizes: np.ndarray  # (G,) voxels
    res_sizes: np.ndarray  # (S,) voxels
    pair_gt: np.ndarray  # (P,) index into gt_ids of every overlapping (reference, result) pair
    pair_res: np.ndarray  # (P,) index into res_ids of the same pairs
    pair_overlap: np.ndarray  # (P,) voxels the pair shares
    gt_planes: np.ndarray  # (G,) plane of each reference cross-section (slice_wise), else 0

    @classmethod
    def from_pairs(cls, pairs: PairCounts, slice_wise: bool = False) -> "Contingency":
        """Objects are labels, or with slice_wise the cross-section of a label in one plane
        (gt_ids and res_ids then hold the label of each cross-section)."""
        plane = pairs.plane if slice_wise else np.zeros_like(pairs.plane)
        g_ids, g_codes = np.unique(pairs.gt, return_inverse=True)
        r_ids, r_codes = np.unique(pairs.res, return_inverse=True)
        is_gt, is_res = pairs.gt != 0, pairs.res != 0
        gt_keys, gt_index, gt_sizes = _totals((plane * len(g_ids) + g_codes)[is_gt],
                                              pairs.voxels[is_gt])
        res_keys, res_index, res_sizes = _totals((plane * len(r_ids) + r_codes)[is_res],
                                                 pairs.voxels[is_res])
        both = is_gt & is_res
        overlap_keys, _, overlap = _totals(
            gt_index[both[is_gt]] * len(res_keys) + res_index[both[is_res]], pairs.voxels[both]
        )
        pair_gt, pair_res = np.divmod(overlap_keys, max(len(res_keys), 1))
        return cls(g_ids[gt_keys % len(g_ids)], r_ids[res_keys % len(r_ids)], gt_sizes, res_sizes,
                   pair_gt, pair_res, overlap, gt_keys // max(len(g_ids), 1))

    def matched_pairs(self) -> np.ndarray:
        """(P,) bool: the pair satisfies |R & S| > 0.5 |R| (at most one pair per reference; the
        CTC's matching rule of SEG and of DET, whose reference objects are the TRA markers)."""
        return 2 * self.pair_overlap > self.gt_sizes[self.pair_gt]

    def ctc_match(self) -> np.ndarray:
        """(G,) index of the result object matched to each reference object, -1 if none."""
        match = np.full(len(self.gt_ids), -1)
        matched = self.matched_pairs()
        match[self.pair_gt[matched]] = self.pair_res[matched]
        return match

    def matched_jaccard(self) -> np.ndarray:
        """(G,) Jaccard index of each reference object with its matched result object, 0 if none."""
        matched = self.matched_pairs()
        gt, res, overlap = self.pair_gt[matched], self.pair_res[matched], self.pair_overlap[matched]
        scores = np.zeros(len(self.gt_ids))
        scores[gt] = overlap / (self.gt_sizes[gt] + self.res_sizes[res] - overlap)
        return scores

    def shared_objects(self, share: float = SHARE) -> tuple[int, int]:
        """(splits, merges): reference objects of which two or more result objects hold at least
        ``share`` of the voxels each, and result objects shared so by two or more references."""
        holds_gt = self.pair_overlap >= share * self.gt_sizes[self.pair_gt]
        holds_res = self.pair_overlap >= share * self.res_sizes[self.pair_res]
        splits = np.bincount(self.pair_gt[holds_gt], minlength=len(self.gt_ids)) >= 2
        merges = np.bincount(self.pair_res[holds_res], minlength=len(self.res_ids)) >= 2
        return int(splits.sum()), int(merges.sum())

    def polar_cross_sections(self) -> np.ndarray:
        """(G,) bool, for a slice-wise table: the cross-section lies in the outer quarter of its
        reference object's z-extent at either end (slice centre within the first or last 25 %)."""
        labels, index = np.unique(self.gt_ids, return_inverse=True)
        first = np.full(len(labels), np.iinfo(np.int64).max)
        last = np.full(len(labels), -1)
        np.minimum.at(first, index, self.gt_planes)
        np.maximum.at(last, index, self.gt_planes)
        position = (self.gt_planes - first[index] + 0.5) / (last - first + 1)[index]
        return (position < 0.25) | (position > 0.75)


def contingency(gt: np.ndarray, res: np.ndarray, slice_wise: bool = False) -> Contingency:
    """Overlap table of two label images of the same shape (2D or 3D, any integer dtype);
    slice_wise scores every cross-section along the first axis as an object of its own."""
    return Contingency.from_pairs(pair_counts(gt, res, per_plane=slice_wise), slice_wise)


@dataclass
class FrameScores:
    """SEG ingredients of one frame (or one slice)."""

    gt_ids: np.ndarray  # (G,) reference labels
    scores: np.ndarray  # (G,) Jaccard of each reference object, 0 if unmatched
    num_results: int  # result objects in the frame
    matched_results: int  # result objects matched to some reference object
    fg_intersection: int  # voxels foreground in both
    fg_union: int  # voxels foreground in either
    # reference objects shared by two or more result objects (Contingency.shared_objects)
    splits: int
    merges: int  # result objects shared by two or more reference objects
    polar: np.ndarray | None = None  # (G,) bool, slice-wise frames: cross-section near a pole


def _frame_scores(table: Contingency, slice_wise: bool = False) -> FrameScores:
    match = table.ctc_match()
    intersection = int(table.pair_overlap.sum())
    splits, merges = table.shared_objects()
    return FrameScores(
        gt_ids=table.gt_ids,
        scores=table.matched_jaccard(),
        num_results=len(table.res_ids),
        matched_results=len(np.unique(match[match >= 0])),
        fg_intersection=intersection,
        fg_union=int(table.gt_sizes.sum() + table.res_sizes.sum()) - intersection,
        splits=splits,
        merges=merges,
        polar=table.polar_cross_sections() if slice_wise else None,
    )


def score_frame(gt: np.ndarray, res: np.ndarray, slice_wise: bool = False) -> FrameScores:
    """Per-object SEG scores and counts of one frame under the CTC matching rule
    (slice_wise: of every 2D cross-section, for SEG per slice)."""
    return _frame_scores(contingency(gt, res, slice_wise), slice_wise)


@dataclass
class SEGAccumulator:
    """Pools SEG over frames: 3D objects, and 2D cross-sections of the same frames (SEG_2D)."""

    frames: dict = field(default_factory=dict)  # name -> FrameScores (3D)
    frames_2d: dict = field(default_factory=dict)  # name -> FrameScores (per-slice objects)

    def add(self, name: str, gt: np.ndarray, res: np.ndarray, annotated_slices=None) -> FrameScores:
        """Score one frame. With annotated_slices (slice-wise reference), only those slices count,
        in 2D, as the CTC does. Both measures come from one pass over the voxels."""
        if annotated_slices is not None:
            gt, res = gt[annotated_slices], res[annotated_slices]
        pairs = pair_counts(gt, res, per_plane=True)
        self.frames_2d[name] = _frame_scores(Contingency.from_pairs(pairs, slice_wise=True), True)
        self.frames[name] = (
            self.frames_2d[name] if annotated_slices is not None
            else _frame_scores(Contingency.from_pairs(pairs))
        )
        return self.frames[name]

    def empty_reference_frames(self) -> list[str]:
        """Frames whose reference holds no object: they add no reference object to SEG."""
        return [name for name, f in self.frames.items() if len(f.scores) == 0]

    def warn_empty_references(self, source: str) -> None:
        """One warning naming how many reference frames are empty (if any)."""
        empty = self.empty_reference_frames()
        if empty:
            logger.warning(
                f"{source}: {len(empty)} of {len(self.frames)} reference frames contain no object "
                f"({', '.join(empty[:5])}{', ...' if len(empty) > 5 else ''}); they add "
                "no "
                "reference object to SEG, as in the CTC's measure")

    def merge(self, other: "SEGAccumulator") -> None:
        """Add the frames of another accumulator (e.g. of another process)."""
        self.frames.update(other.frames)
        self.frames_2d.update(other.frames_2d)

    @staticmethod
    def _pooled(frames: dict, polar: bool | None = None) -> float:
        """Pooled SEG; polar True / False: only the cross-sections near / away from the poles.
        Frames are summed in name order, so that the result does not depend on the order they
        were added (or gathered from several processes) in."""
        ordered = [frames[name] for name in sorted(frames)]
        if polar is None:
            scores = [f.scores for f in ordered]
        else:
            scores = [f.scores[f.polar == polar] for f in ordered]
        total = sum(len(s) for s in scores)
        return float(np.concatenate(scores).sum() / total) if total else float("nan")

    def summary(self) -> dict:
        """SEG, SEG_2D (also over the slices near each reference object's poles, SEG_poles, and
        the rest, SEG_core), object counts, splits and merges, precision, recall, count error,
        foreground IoU and the mean Jaccard index of the matched reference objects alone
        (jaccard_matched: how well the found objects are outlined; jaccard_matched_2D of the
        matched cross-sections). Frames with an empty reference add no reference object; if every
        frame's reference is empty, SEG is undefined and this is an error."""
        frames = list(self.frames.values())
        if frames and len(self.empty_reference_frames()) == len(frames):
            raise ValueError(
                f"every reference frame is empty ({len(frames)} frames): SEG is undefined")
        n_gt = sum(len(f.scores) for f in frames)
        n_res = sum(f.num_results for f in frames)
        matched_gt = sum(int(np.count_nonzero(f.scores > 0)) for f in frames)
        matched_scores = np.concatenate([f.scores[f.scores > 0]
                                         for f in frames]) if frames else np.zeros(0)
        matched_2d = np.concatenate([f.scores[f.scores > 0] for f in self.frames_2d.values()]
                                    or [np.zeros(0)])
        matched_res = sum(f.matched_results for f in frames)
        union = sum(f.fg_union for f in frames)
        return {
            "SEG": self._pooled(self.frames),
            "SEG_2D": self._pooled(self.frames_2d),
            "SEG_poles": self._pooled(self.frames_2d, polar=True),
            "SEG_core": self._pooled(self.frames_2d, polar=False),
            "num_gt": n_gt,
            "num_pred": n_res,
            "matched": matched_gt,
            "missed": n_gt - matched_gt,
            "extra": n_res - matched_res,
            "splits": sum(f.splits for f in frames),
            "merges": sum(f.merges for f in frames),
            "precision": matched_res / n_res if n_res else float("nan"),
            "recall": matched_gt / n_gt if n_gt else float("nan"),
            "count_error": float(np.mean([abs(f.num_results - len(f.scores)) for f in frames]))
            if frames else float("nan"),
            "foreground_IoU": sum(f.fg_intersection for f in frames) / union if union
            else float("nan"),
            "jaccard_matched": float(matched_scores.mean()) if matched_gt else float("nan"),
            "jaccard_matched_2D": float(matched_2d.mean()) if len(matched_2d) else float("nan"),
        }

    def per_frame(self) -> list[tuple[str, float, int]]:
        """(name, SEG of the frame, reference objects) for every frame."""
        return [
            (name, float(f.scores.mean()) if len(f.scores) else float("nan"), len(f.scores))
            for name, f in self.frames.items()
        ]

