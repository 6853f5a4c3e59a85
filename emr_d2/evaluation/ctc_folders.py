"""SEG and DET between a CTC result folder and a reference folder (torch-free, for
tools/ctc_seg.py and tools/ctc_det.py)."""
from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from ..data.ctc import (CTCFormatError, list_gt, list_markers, list_results, read_gt_frame,
                        read_label_volume)
from .det import DETAccumulator
from .seg import SEGAccumulator


def reference_subfolder(gt_dir: str, kind: str) -> str:
    """``gt_dir/<kind>`` (kind SEG or TRA) of a ``<seq>_GT`` folder; ``gt_dir`` may also name one
    of its SEG / TRA folders."""
    if not os.path.isdir(gt_dir):
        raise CTCFormatError(f"{gt_dir}: no such folder (expected a <seq>_GT folder)")
    if os.path.basename(os.path.normpath(gt_dir)) in ("SEG", "TRA"):
        gt_dir = os.path.dirname(os.path.normpath(gt_dir))
    return os.path.join(gt_dir, kind)


def _result_frames(res_dir: str, frames) -> Iterator[tuple[int, str, np.ndarray]]:
    """(frame, path, labels) of ``res_dir/maskTTT.tif`` for every frame number, in order; a
    missing folder or frame is an error naming it."""
    if not os.path.isdir(res_dir):
        raise CTCFormatError(f"{res_dir}: no such folder")
    results = list_results(res_dir)
    for frame in sorted(frames):
        if frame not in results:
            raise CTCFormatError(f"{res_dir}: result frame mask{frame:03d}.tif is missing")
        yield frame, results[frame], read_label_volume(results[frame])


def seg_of_folders(res_dir: str, gt_dir: str) -> SEGAccumulator:
    """Score every reference frame of ``gt_dir/SEG`` against ``res_dir/maskTTT.tif``.

    Raises CTCFormatError naming the file for a missing result frame, a shape mismatch or an
    unreadable file.
    """
    seg_dir = reference_subfolder(gt_dir, "SEG")
    references = list_gt(seg_dir)
    if not references:
        raise CTCFormatError(
            f"{seg_dir}: no reference frames (man_segTTT.tif or man_seg_TTT_ZZZ.tif) found")
    accumulator = SEGAccumulator()
    for frame, path, res in _result_frames(res_dir, references):
        if res.ndim == 2:
            res = res[None]
        gt, annotated = read_gt_frame(references[frame], res.shape, "the result's", path)
        accumulator.add(f"{frame:03d}", gt, res, annotated)
    accumulator.warn_empty_references(seg_dir)
    return accumulator


def det_of_folders(res_dir: str, gt_dir: str) -> DETAccumulator:
    """Count the AOGM-D operations of every frame with a marker file in ``gt_dir/TRA`` against
    ``res_dir/maskTTT.tif``.

    Raises CTCFormatError naming the file for a missing result frame, a shape mismatch or an
    unreadable file.
    """
    tra_dir = reference_subfolder(gt_dir, "TRA")
    markers = list_markers(tra_dir)
    if not markers:
        raise CTCFormatError(f"{tra_dir}: no tracking markers (man_trackTTT.tif) found")
    accumulator = DETAccumulator()
    for frame, path, res in _result_frames(res_dir, markers):
        marker = read_label_volume(markers[frame])
        if np.squeeze(res).shape != np.squeeze(marker).shape:
            raise CTCFormatError(
                f"{path}: result shape {res.shape} differs from the markers' {marker.shape} "
                f"({markers[frame]})")
        accumulator.add(f"{frame:03d}", marker.squeeze(), res.squeeze())
    return accumulator
