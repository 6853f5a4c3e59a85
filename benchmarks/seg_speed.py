#!/usr/bin/env python
"""SEG of two 59 x 512 x 512 volume pairs with about 50 objects each: ours against
py-ctcmetrics, side by side in one run, both reading the same TIFF files and computing the same
pooled 3D SEG (ours: score_frame; SEG_2D, which the evaluator adds, is timed apart). Last line:
speedup=<x>."""
import os
import sys
import tempfile
import time

import numpy as np
import tifffile

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctc_metrics.utils.representations import match  # noqa: E402

from emr_d2.evaluation.seg import score_frame  # noqa: E402


def label_volume(rng, shape=(59, 512, 512), count=50, jitter=0):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint16)
    centres = rng.uniform([5, 30, 30], [54, 482, 482], size=(count, 3))
    for label, (cz, cy, cx) in enumerate(centres, 1):
        cz, cy, cx = cz + rng.integers(-jitter, jitter + 1), cy + rng.integers(-jitter, jitter + 1), cx
        ball = ((z - cz) / 12) ** 2 + ((y - cy) / 24) ** 2 + ((x - cx) / 24) ** 2 <= 1
        labels[ball] = label
    return labels


def main() -> None:
    folder = tempfile.mkdtemp()
    pairs = []
    for i in range(2):
        gt = label_volume(np.random.default_rng(i))
        res = label_volume(np.random.default_rng(i), jitter=3)
        gt_path, res_path = os.path.join(folder, f"gt{i}.tif"), os.path.join(folder, f"res{i}.tif")
        tifffile.imwrite(gt_path, gt, photometric="minisblack")
        tifffile.imwrite(res_path, res, photometric="minisblack")
        pairs.append((gt_path, res_path))

    def ours_once(slice_wise=False):
        scores = [score_frame(tifffile.imread(g), tifffile.imread(r), slice_wise).scores for g, r in pairs]
        return float(np.concatenate(scores).mean())

    ours_once()  # warm-up (first-touch page faults of large arrays), for both
    start = time.perf_counter()
    ours_seg = ours_once()
    ours = time.perf_counter() - start
    start = time.perf_counter()
    ours_once(slice_wise=True)
    ours_2d = time.perf_counter() - start

    def theirs_once():
        ious, n_ref = [], 0
        for g, r in pairs:
            labels_ref, _, _, _, iou = match(g, r)
            ious += iou
            n_ref += len(labels_ref)
        return sum(ious) / n_ref

    theirs_once()  # the same warm-up
    start = time.perf_counter()
    theirs_seg = theirs_once()
    theirs = time.perf_counter() - start

    print(f"SEG ours {ours_seg:.6f} in {ours:.3f} s (SEG_2D in {ours_2d:.3f} s more); "
          f"py-ctcmetrics {theirs_seg:.6f} in {theirs:.3f} s")
    assert abs(ours_seg - theirs_seg) < 1e-9
    print(f"speedup={theirs / ours:.1f}")


if __name__ == "__main__":
    main()
