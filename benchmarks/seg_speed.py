#!/usr/bin/env python
"""SEG and DET of a two-frame 59 x 512 x 512 sequence with about 50 objects a frame, ours
against py-ctcmetrics side by side in one run, from the same CTC folders.

1. In one process: the whole ``tools/ctc_seg.py`` path (``seg_of_folders``: list the CTC
   folders, read and check every frame, score SEG, SEG_2D and the counts) against py-ctcmetrics'
   matching (``match``, which reads the two files) and pooled SEG: ``speedup=``.
2. As whole processes, as a user runs them: ``tools/ctc_seg.py`` against
   ``python -m ctc_metrics.scripts.evaluate --seg`` (``seg_process_speedup=``) and
   ``tools/ctc_det.py`` against ``... --det`` (``det_process_speedup=``), py-ctcmetrics with its
   default threads. Each side is the same measure to 1e-6.

Each side is timed as the best of ``--repeats`` runs after one warm-up.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np
import tifffile

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ctc_metrics.utils.representations import match  # noqa: E402

from emr_d2.data.ctc import write_marker_tracks, write_result_tracks  # noqa: E402
from emr_d2.evaluation.ctc_folders import seg_of_folders  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def label_volume(rng, shape=(59, 512, 512), count=50, jitter=0):
    """Ellipsoidal nuclei (radii 12 x 24 x 24 voxels); jitter moves their centres in z and y."""
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint16)
    centres = rng.uniform([5, 30, 30], [54, 482, 482], size=(count, 3))
    for label, (cz, cy, cx) in enumerate(centres, 1):
        cz, cy, cx = cz + rng.integers(-jitter,
                                       jitter + 1), cy + rng.integers(-jitter, jitter + 1), cx
        ball = ((z - cz) / 12) ** 2 + ((y - cy) / 24) ** 2 + ((x - cx) / 24) ** 2 <= 1
        labels[ball] = label
    return labels


def write_ctc_folders(root: str, frames: int) -> tuple[str, str, list[tuple[str, str]]]:
    """``<root>/01_GT/SEG/man_segTTT.tif``, the same labels as ``01_GT/TRA`` markers (with
    man_track.txt) and ``<root>/01_RES/maskTTT.tif`` (with res_track.txt) for each frame."""
    gt_dir, res_dir = os.path.join(root, "01_GT"), os.path.join(root, "01_RES")
    for folder in ("SEG", "TRA"):
        os.makedirs(os.path.join(gt_dir, folder))
    os.makedirs(res_dir)
    pairs = []
    for t in range(frames):
        gt_path = os.path.join(gt_dir, "SEG", f"man_seg{t:03d}.tif")
        res_path = os.path.join(res_dir, f"mask{t:03d}.tif")
        gt = label_volume(np.random.default_rng(t))
        tifffile.imwrite(gt_path, gt, photometric="minisblack")
        tifffile.imwrite(os.path.join(gt_dir, "TRA", f"man_track{t:03d}.tif"), gt,
                         photometric="minisblack")
        res = label_volume(np.random.default_rng(t), jitter=3)
        res[res <= 2] = 0  # two missed nuclei
        res[res == 4] = 3  # two nuclei merged
        tifffile.imwrite(res_path, res, photometric="minisblack")
        pairs.append((gt_path, res_path))
    write_marker_tracks(os.path.join(gt_dir, "TRA"))
    write_result_tracks(res_dir)
    return gt_dir, res_dir, pairs


def best_time(function, repeats: int) -> tuple[float, float]:
    """(result, best wall time in s) of ``repeats`` runs after one warm-up run."""
    result, best = function(), float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return result, best


def measure_of(command: list[str], pattern: str) -> float:
    """Run a command line; the number after ``pattern`` in its output."""
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    return float(re.search(pattern + r"\s*:?\s*'?:?\s*([0-9.]+)", done.stdout).group(1))


def compare_processes(measure: str, ours: list[str], theirs: list[str], repeats: int) -> float:
    """Time our tool and py-ctcmetrics' evaluate as processes; print both; return the ratio."""
    ours_value, ours_time = best_time(lambda: measure_of(ours, f"{measure} measure"), repeats)
    theirs_value, theirs_time = best_time(lambda: measure_of(theirs, f"'{measure}'"), repeats)
    print(
        f"{measure} as processes: ours {ours_value:.6f} in {ours_time:.2f} s; py-ctcmetrics "
        f"{theirs_value:.6f} "
        f"in {theirs_time:.2f} s")
    assert abs(ours_value - theirs_value) < 1e-6
    return theirs_time / ours_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = tempfile.TemporaryDirectory(prefix="seg_speed_")  # removed when main returns
    gt_dir, res_dir, pairs = write_ctc_folders(work.name, frames=2)

    def theirs_once():
        ious, n_ref = [], 0
        for gt_path, res_path in pairs:
            labels_ref, _, _, _, iou = match(gt_path, res_path)
            ious += iou
            n_ref += len(labels_ref)
        return sum(ious) / n_ref

    ours_summary, ours = best_time(lambda: seg_of_folders(res_dir, gt_dir).summary(), args.repeats)
    theirs_seg, theirs = best_time(theirs_once, args.repeats)
    print(
        f"SEG ours {ours_summary['SEG']:.6f} (SEG_2D {ours_summary['SEG_2D']:.6f}) in {ours:.3f} "
        "s; "
        f"py-ctcmetrics {theirs_seg:.6f} in {theirs:.3f} s")
    assert abs(ours_summary["SEG"] - theirs_seg) < 1e-9
    print(f"speedup={theirs / ours:.1f}")
    python, tools = sys.executable, os.path.join(ROOT, "tools")
    evaluate = [python, "-m", "ctc_metrics.scripts.evaluate", "--res", res_dir, "--gt", gt_dir]
    for measure in ("SEG", "DET"):
        ratio = compare_processes(
            measure, [python, os.path.join(tools, f"ctc_{measure.lower()}.py"), res_dir, gt_dir],
            evaluate + [f"--{measure.lower()}"], args.repeats)
        print(f"{measure.lower()}_process_speedup={ratio:.1f}")


if __name__ == "__main__":
    main()
