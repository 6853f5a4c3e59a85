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

_LOOKUP_LIMIT = 1 << 24  # labels below this are relabelled through a lookup table


def relabel_consecutive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map labels to 0..K (0 stays background) in first-sorted order.

    Returns (relabelled int64 array of the same shape, original labels of 1..K as uint64/int64).
    Any integer dtype and any values (up to uint64) are accepted.
    """
    flat = labels.ravel()
    if flat.size == 0:
        return np.zeros(labels.shape, np.int64), np.zeros(0, np.int64)
    top = int(flat.max())
    if top < _LOOKUP_LIMIT and (flat.dtype.kind == "u" or int(flat.min()) >= 0):
        present = np.bincount(flat.astype(np.int64, copy=False), minlength=top + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present)
        lookup = np.zeros(top + 1, dtype=np.int64)
        lookup[ids] = np.arange(1, len(ids) + 1)
        return lookup[flat].reshape(labels.shape), ids
    ids, inverse = np.unique(flat, return_inverse=True)
    if ids[0] == 0:
        return inverse.reshape(labels.shape).astype(np.int64), ids[1:]
    return (inverse + 1).reshape(labels.shape).astype(np.int64), ids


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


def contingency(gt: np.ndarray, res: np.ndarray) -> Contingency:
    """Overlap table of two label images of the same shape (2D or 3D, any integer dtype)."""
    if gt.shape != res.shape:
        raise ValueError(f"reference shape {gt.shape} differs from result shape {res.shape}")
    g, gt_ids = relabel_consecutive(gt)
    r, res_ids = relabel_consecutive(res)
    n_g, n_r = len(gt_ids) + 1, len(res_ids) + 1
    gt_sizes = np.bincount(g.ravel(), minlength=n_g)[1:]
    res_sizes = np.bincount(r.ravel(), minlength=n_r)[1:]
    fg = g.ravel() > 0
    pairs = g.ravel()[fg] * n_r + r.ravel()[fg]
    table = np.bincount(pairs, minlength=n_g * n_r).reshape(n_g, n_r)
    return Contingency(gt_ids, res_ids, gt_sizes, res_sizes, table[1:, 1:])


@dataclass
class FrameScores:
    """SEG ingredients of one frame (or one slice)."""

    gt_ids: np.ndarray  # (G,) reference labels
    scores: np.ndarray  # (G,) Jaccard of each reference object, 0 if unmatched
    num_results: int  # result objects in the frame
    matched_results: int  # result objects matched to some reference object
    fg_intersection: int  # voxels foreground in both
    fg_union: int  # voxels foreground in either


def score_frame(gt: np.ndarray, res: np.ndarray) -> FrameScores:
    """Per-object SEG scores and counts of one frame under the CTC matching rule."""
    table = contingency(gt, res)
    match = table.ctc_match()
    has = match >= 0
    scores = np.zeros(len(table.gt_ids))
    scores[has] = table.jaccard[np.flatnonzero(has), match[has]]
    fg_gt, fg_res = gt != 0, res != 0
    return FrameScores(
        gt_ids=table.gt_ids,
        scores=scores,
        num_results=len(table.res_ids),
        matched_results=len(np.unique(match[has])),
        fg_intersection=int(np.count_nonzero(fg_gt & fg_res)),
        fg_union=int(np.count_nonzero(fg_gt | fg_res)),
    )


def slice_labels(volume: np.ndarray) -> np.ndarray:
    """Give every 2D cross-section of every object its own label: (Z, Y, X) -> int64 labels."""
    relabelled, ids = relabel_consecutive(volume)
    z = np.arange(volume.shape[0], dtype=np.int64).reshape(-1, *([1] * (volume.ndim - 1)))
    return np.where(relabelled > 0, z * (len(ids) + 1) + relabelled, 0)


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
        self.frames_2d[name] = score_frame(slice_labels(gt), slice_labels(res))
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


def seg_measure(pairs) -> float:
    """Pooled SEG over an iterable of (reference, result) label arrays."""
    acc = SEGAccumulator()
    for i, (gt, res) in enumerate(pairs):
        acc.frames[i] = score_frame(gt, res)
    return SEGAccumulator._pooled(acc.frames)
