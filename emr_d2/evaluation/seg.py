"""The CTC SEG measure and related counts on label volumes, vectorised with numpy.

CTC rule: a reference object R is matched to the result object S with |R & S| > 0.5 |R| (at most
one such S exists, since result objects are disjoint); R scores the Jaccard index
|R & S| / |R | S|, or 0 when unmatched. SEG is the mean over all reference objects of all
evaluated frames, pooled. False positives cost nothing in SEG; the counts report them.

Torch-free: ``tools/ctc_seg.py`` imports this module alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_LOOKUP_LIMIT = 1 << 24  # keys below this are counted with bincount, above with a sort


def _dense_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted distinct keys, index of each key into them, count of each distinct key)."""
    if keys.size and int(keys.max()) < _LOOKUP_LIMIT and int(keys.min()) >= 0:
        counts = np.bincount(keys.astype(np.int64, copy=False))
        ids = np.flatnonzero(counts)
        lookup = np.zeros(len(counts), dtype=np.int64)
        lookup[ids] = np.arange(len(ids))
        return ids, lookup[keys], counts[ids]
    ids, index, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return ids, index.ravel(), counts


def _index_of(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position of every value in the sorted distinct ``ids`` (all values must occur there)."""
    if ids.size and int(ids.max()) < _LOOKUP_LIMIT:
        lookup = np.zeros(int(ids.max()) + 1, dtype=np.int64)
        lookup[ids] = np.arange(len(ids))
        return lookup[values]
    return np.searchsorted(ids, values)


@dataclass
class Contingency:
    """Overlaps of the reference objects (rows) with the result objects (columns) of one frame."""

    gt_ids: np.ndarray  # (G,) reference labels
    res_ids: np.ndarray  # (S,) result labels
    gt_sizes: np.ndarray  # (G,) voxels
    res_sizes: np.ndarray  # (S,) voxels
    intersection: np.ndarray  # (G, S) voxels

    @property
    def jaccard(self) -> np.ndarray:
        union = self.gt_sizes[:, None] + self.res_sizes[None, :] - self.intersection
        return self.intersection / np.maximum(union, 1)

    def ctc_match(self) -> np.ndarray:
        """(G,) index of the result object matched to each reference object, -1 if none."""
        match = np.full(len(self.gt_ids), -1)
        if self.intersection.size:
            matched = 2 * self.intersection > self.gt_sizes[:, None]
            rows = matched.any(axis=1)
            match[rows] = np.argmax(matched[rows], axis=1)
        return match


def _small_label_contingency(g_flat, r_flat, g_pos, r_pos) -> Contingency | None:
    """The common case of small non-negative labels: one bincount over (reference, result)
    label pairs, without relabelling. None where the labels are too large for that."""
    if any(a.dtype.kind not in "ui" or a.dtype == np.uint64 for a in (g_flat, r_flat)):
        return None  # bincount needs a safe cast to int64
    g_labels, r_labels, r_at_gt = g_flat.take(g_pos), r_flat.take(r_pos), r_flat.take(g_pos)
    g_max = int(g_labels.max()) if g_labels.size else 0
    r_max = int(r_labels.max()) if r_labels.size else 0
    if (g_max + 1) * (r_max + 1) > _LOOKUP_LIMIT or (g_labels.size and int(g_labels.min()) < 0) \
            or (r_labels.size and int(r_labels.min()) < 0):
        return None
    gt_counts = np.bincount(g_labels, minlength=g_max + 1)
    res_counts = np.bincount(r_labels, minlength=r_max + 1)
    pairs = g_labels.astype(np.int64) * (r_max + 1) + r_at_gt
    table = np.bincount(pairs, minlength=(g_max + 1) * (r_max + 1)).reshape(g_max + 1, r_max + 1)
    gt_ids, res_ids = np.flatnonzero(gt_counts), np.flatnonzero(res_counts)
    return Contingency(gt_ids, res_ids, gt_counts[gt_ids], res_counts[res_ids], table[np.ix_(gt_ids, res_ids)])


def contingency(gt: np.ndarray, res: np.ndarray, slice_wise: bool = False) -> Contingency:
    """Overlap table of two label images of the same shape (2D or 3D, any integer dtype).

    Works on the foreground voxels only; slice_wise scores every 2D cross-section of every
    object as an object of its own (SEG per slice). Object ids are then opaque keys.
    """
    if gt.shape != res.shape:
        raise ValueError(f"reference shape {gt.shape} differs from result shape {res.shape}")
    g_flat, r_flat = gt.ravel(), res.ravel()
    g_pos, r_pos = np.flatnonzero(g_flat != 0), np.flatnonzero(r_flat != 0)
    if not slice_wise:
        small = _small_label_contingency(g_flat, r_flat, g_pos, r_pos)
        if small is not None:
            return small
    gt_ids, g_index, gt_sizes = _dense_ids(g_flat.take(g_pos))
    res_ids, r_index, res_sizes = _dense_ids(r_flat.take(r_pos))
    r_at_gt = r_flat.take(g_pos)  # the result label at every reference voxel
    both = r_at_gt != 0
    g_both = g_index[both]
    r_both = _index_of(r_at_gt[both], res_ids)
    if slice_wise:  # objects become (slice, object) pairs
        plane = int(np.prod(gt.shape[1:]))
        g_z, r_z = g_pos // plane, r_pos // plane
        gt_ids, g_index, gt_sizes = _dense_ids(g_z * len(gt_ids) + g_index)
        res_keys_at_gt = g_z[both] * len(res_ids) + r_both
        res_ids, _, res_sizes = _dense_ids(r_z * len(res_ids) + r_index)
        g_both = g_index[both]
        r_both = _index_of(res_keys_at_gt, res_ids)
    n_r = len(res_ids)
    table = np.bincount(g_both * n_r + r_both, minlength=len(gt_ids) * n_r)
    return Contingency(gt_ids, res_ids, gt_sizes, res_sizes, table.reshape(len(gt_ids), n_r))


@dataclass
class FrameScores:
    """SEG ingredients of one frame (or one slice)."""

    gt_ids: np.ndarray  # (G,) reference labels
    scores: np.ndarray  # (G,) Jaccard of each reference object, 0 if unmatched
    num_results: int  # result objects in the frame
    matched_results: int  # result objects matched to some reference object
    fg_intersection: int  # voxels foreground in both
    fg_union: int  # voxels foreground in either


def score_frame(gt: np.ndarray, res: np.ndarray, slice_wise: bool = False) -> FrameScores:
    """Per-object SEG scores and counts of one frame under the CTC matching rule
    (slice_wise: of every 2D cross-section, for SEG per slice)."""
    table = contingency(gt, res, slice_wise)
    match = table.ctc_match()
    has = match >= 0
    scores = np.zeros(len(table.gt_ids))
    scores[has] = table.jaccard[np.flatnonzero(has), match[has]]
    intersection = int(table.intersection.sum())
    return FrameScores(
        gt_ids=table.gt_ids,
        scores=scores,
        num_results=len(table.res_ids),
        matched_results=len(np.unique(match[has])),
        fg_intersection=intersection,
        fg_union=int(table.gt_sizes.sum() + table.res_sizes.sum()) - intersection,
    )


@dataclass
class SEGAccumulator:
    """Pools SEG over frames: 3D objects, and 2D cross-sections of the same frames (SEG_2D)."""

    frames: dict = field(default_factory=dict)  # name -> FrameScores (3D)
    frames_2d: dict = field(default_factory=dict)  # name -> FrameScores (per-slice objects)

    def add(self, name: str, gt: np.ndarray, res: np.ndarray, annotated_slices=None) -> FrameScores:
        """Score one frame. With annotated_slices (slice-wise reference), only those slices count,
        in 2D, as the CTC does."""
        if annotated_slices is not None:
            gt, res = gt[annotated_slices], res[annotated_slices]
        self.frames_2d[name] = score_frame(gt, res, slice_wise=True)
        self.frames[name] = self.frames_2d[name] if annotated_slices is not None else score_frame(gt, res)
        return self.frames[name]

    @staticmethod
    def _pooled(frames: dict) -> float:
        scores = [f.scores for f in frames.values()]
        total = sum(len(s) for s in scores)
        return float(np.concatenate(scores).sum() / total) if total else float("nan")

    def summary(self) -> dict:
        """SEG, SEG_2D, object counts, precision, recall, count error and foreground IoU."""
        frames = list(self.frames.values())
        n_gt = sum(len(f.scores) for f in frames)
        n_res = sum(f.num_results for f in frames)
        matched_gt = sum(int(np.count_nonzero(f.scores > 0)) for f in frames)
        matched_res = sum(f.matched_results for f in frames)
        union = sum(f.fg_union for f in frames)
        return {
            "SEG": self._pooled(self.frames),
            "SEG_2D": self._pooled(self.frames_2d),
            "num_gt": n_gt,
            "num_pred": n_res,
            "matched": matched_gt,
            "missed": n_gt - matched_gt,
            "extra": n_res - matched_res,
            "precision": matched_res / n_res if n_res else float("nan"),
            "recall": matched_gt / n_gt if n_gt else float("nan"),
            "count_error": float(np.mean([abs(f.num_results - len(f.scores)) for f in frames]))
            if frames else float("nan"),
            "foreground_IoU": sum(f.fg_intersection for f in frames) / union if union else float("nan"),
        }

    def per_frame(self) -> list[tuple[str, float, int]]:
        """(name, SEG of the frame, reference objects) for every frame."""
        return [
            (name, float(f.scores.mean()) if len(f.scores) else float("nan"), len(f.scores))
            for name, f in self.frames.items()
        ]

