"""SEG between a CTC result folder and a reference folder (torch-free, for tools/ctc_seg.py)."""
from __future__ import annotations

import os

from ..data.ctc import CTCFormatError, list_gt, list_results, read_gt_frame, read_label_volume
from .seg import SEGAccumulator


def seg_of_folders(res_dir: str, gt_dir: str) -> SEGAccumulator:
    """Score every reference frame of ``gt_dir/SEG`` against ``res_dir/maskTTT.tif``.

    Raises CTCFormatError naming the file for a missing result frame, a shape mismatch or an
    unreadable file.
    """
    seg_dir = os.path.join(gt_dir, "SEG")
    references = list_gt(seg_dir)
    if not references:
        raise CTCFormatError(f"{seg_dir}: no reference frames (man_segTTT.tif) found")
    if not os.path.isdir(res_dir):
        raise CTCFormatError(f"{res_dir}: no such folder")
    results = list_results(res_dir)
    accumulator = SEGAccumulator()
    for frame, gt_frame in sorted(references.items()):
        if frame not in results:
            raise CTCFormatError(f"{res_dir}: result frame mask{frame:03d}.tif is missing")
        res = read_label_volume(results[frame])
        gt, annotated = read_gt_frame(gt_frame, res.shape if res.ndim == 3 else (1, *res.shape))
        if res.ndim == 2:
            res = res[None]
        accumulator.add(f"{frame:03d}", gt, res, annotated)
    accumulator.warn_empty_references(seg_dir)
    return accumulator
