"""The CTC DET measure (AOGM-D) and OP_CSB on label volumes, vectorised with numpy.

CTC rule (Matula et al. 2015, the CTC's DETMeasure): the reference objects are the tracking
markers (``<seq>_GT/TRA/man_trackTTT.tif``); a result object matches a marker when it covers
more than half of it (|M & S| > 0.5 |M|). AOGM-D counts the operations that turn the result's
detections into the markers: a result object matching k > 1 markers needs k - 1 splits (weight
5), a marker matched by no result object is a false negative (10), a result object matching no
marker a false positive (1). DET = 1 - min(AOGM-D, AOGM-D0) / AOGM-D0, with AOGM-D0 = 10 x the
number of markers (an empty result), pooled over all frames with a marker file.
OP_CSB = (SEG + DET) / 2 is the CTC's segmentation ranking.

Torch-free: ``tools/ctc_det.py`` imports this module alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .seg import contingency

WEIGHT_SPLIT, WEIGHT_FALSE_NEGATIVE, WEIGHT_FALSE_POSITIVE = 5, 10, 1


@dataclass(frozen=True)
class DetectionCounts:
    """The AOGM-D operations of one frame."""

    markers: int  # reference markers
    results: int  # result objects
    splits: int  # sum over result objects matching k >= 1 markers of k - 1
    false_negatives: int  # markers matched by no result object
    false_positives: int  # result objects matching no marker

    @property
    def aogm_d(self) -> int:
        return (WEIGHT_SPLIT * self.splits + WEIGHT_FALSE_NEGATIVE * self.false_negatives
                + WEIGHT_FALSE_POSITIVE * self.false_positives)


def count_detections(markers: np.ndarray, res: np.ndarray) -> DetectionCounts:
    """AOGM-D operations between a marker image and a result label image of the same shape
    (2D or 3D, any integer dtype, 0 = background)."""
    table = contingency(markers, res)
    matched = table.matched_pairs()
    per_result = np.bincount(table.pair_res[matched], minlength=len(table.res_ids))
    matching_results = int(np.count_nonzero(per_result))
    matched_markers = int(matched.sum())  # a marker has at most one match
    return DetectionCounts(
        markers=len(table.gt_ids),
        results=len(table.res_ids),
        splits=matched_markers - matching_results,
        false_negatives=len(table.gt_ids) - matched_markers,
        false_positives=len(table.res_ids) - matching_results,
    )


def op_csb(seg: float, det: float) -> float:
    """The CTC's segmentation ranking measure: the mean of SEG and DET."""
    return (seg + det) / 2


@dataclass
class DETAccumulator:
    """Pools the AOGM-D operations over frames."""

    frames: dict = field(default_factory=dict)  # name -> DetectionCounts

    def add(self, name: str, markers: np.ndarray, res: np.ndarray) -> DetectionCounts:
        self.frames[name] = count_detections(markers, res)
        return self.frames[name]

    def merge(self, other: "DETAccumulator") -> None:
        """Add the frames of another accumulator (e.g. of another process)."""
        self.frames.update(other.frames)

    @property
    def markers(self) -> int:
        """Reference markers of all frames."""
        return sum(f.markers for f in self.frames.values())

    def summary(self) -> dict:
        """DET, AOGM_D and its operations (DET_splits, DET_FN, DET_FP) and the number of markers.
        Without any marker AOGM-D0 is 0 and DET undefined: an error."""
        frames = list(self.frames.values())
        markers = self.markers
        if not markers:
            raise ValueError(f"no tracking marker in any of {len(frames)} frames: DET is undefined")
        aogm_d = sum(f.aogm_d for f in frames)
        aogm_d0 = WEIGHT_FALSE_NEGATIVE * markers
        return {
            "DET": 1 - min(aogm_d, aogm_d0) / aogm_d0,
            "AOGM_D": aogm_d,
            "DET_splits": sum(f.splits for f in frames),
            "DET_FN": sum(f.false_negatives for f in frames),
            "DET_FP": sum(f.false_positives for f in frames),
            "num_markers": markers,
        }

    def per_frame(self) -> list[tuple[str, DetectionCounts]]:
        """(name, counts) of every frame, in name order."""
        return sorted(self.frames.items())
