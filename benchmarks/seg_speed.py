#!/usr/bin/env python
"""SEG of two 59 x 512 x 512 volume pairs with about 50 objects each, ours against
py-ctcmetrics side by side in one run, both in one process and from the same TIFF files.

Ours is the whole ``tools/ctc_seg.py`` path (``seg_of_folders``: list the CTC folders, read
and check every frame, score SEG, SEG_2D and the counts); py-ctcmetrics is its matching
(``match``, which reads the two files) and pooled SEG. Each side is timed as the best of
``--repeats`` runs after one warm-up. Last line: speedup=<x>.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np
import tifffile

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctc_metrics.utils.representations import match  # noqa: E402

from emr_d2.evaluation.ctc_folders import seg_of_folders  # noqa: E402


def label_volume(rng, shape=(59, 512, 512), count=50, jitter=0):
    """Ellipsoidal nuclei (radii 12 x 24 x 24 voxels); jitter moves their centres in z and y."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint16)
    centres = rng.uniform([5, 30, 30], [54, 482, 482], size=(count, 3))
    for label, (cz, cy, cx) in enumerate(centres, 1):
        cz, cy, cx = cz + rng.integers(-jitter, jitter + 1), cy + rng.integers(-jitter, jitter + 1), cx
        ball = ((z - cz) / 12) ** 2 + ((y - cy) / 24) ** 2 + ((x - cx) / 24) ** 2 <= 1
        labels[ball] = label
    return labels


def write_ctc_folders(root: str, frames: int) -> tuple[str, str, list[tuple[str, str]]]:
    """``<root>/01_GT/SEG/man_segTTT.tif`` and ``<root>/01_RES/maskTTT.tif`` for each frame."""
    gt_dir, res_dir = os.path.join(root, "01_GT"), os.path.join(root, "01_RES")
    os.makedirs(os.path.join(gt_dir, "SEG"))
    os.makedirs(res_dir)
    pairs = []
    for t in range(frames):
        gt_path = os.path.join(gt_dir, "SEG", f"man_seg{t:03d}.tif")
        res_path = os.path.join(res_dir, f"mask{t:03d}.tif")
        tifffile.imwrite(gt_path, label_volume(np.random.default_rng(t)), photometric="minisblack")
        tifffile.imwrite(res_path, label_volume(np.random.default_rng(t), jitter=3), photometric="minisblack")
        pairs.append((gt_path, res_path))
    return gt_dir, res_dir, pairs


def best_time(function, repeats: int) -> tuple[float, float]:
    """(result, best wall time in s) of ``repeats`` runs after one warm-up run."""
    result, best = function(), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt_dir, res_dir, pairs = write_ctc_folders(tempfile.mkdtemp(), frames=2)

    def theirs_once():
        ious, n_ref = [], 0
        for gt_path, res_path in pairs:
            labels_ref, _, _, _, iou = match(gt_path, res_path)
            ious += iou
            n_ref += len(labels_ref)
        return sum(ious) / n_ref

    ours_summary, ours = best_time(lambda: seg_of_folders(res_dir, gt_dir).summary(), args.repeats)
    theirs_seg, theirs = best_time(theirs_once, args.repeats)
    print(f"SEG ours {ours_summary['SEG']:.6f} (SEG_2D {ours_summary['SEG_2D']:.6f}) in {ours:.3f} s; "
          f"py-ctcmetrics {theirs_seg:.6f} in {theirs:.3f} s")
    assert abs(ours_summary["SEG"] - theirs_seg) < 1e-9
    print(f"speedup={theirs / ours:.1f}")


if __name__ == "__main__":
    main()
