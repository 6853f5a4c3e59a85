#!/usr/bin/env python
"""How much SEG a result folder loses at the caps: result voxels in slices where the reference
object they are matched to has ended (haze caps painted beyond a nucleus's last reference slice).

For every frame, each result object matched to a reference object (the CTC's rule) is cut to
that object's first..last reference slice and the frame is scored again; the difference is what
perfect cap trimming (a z-extent head without error) would add to these masks.

    python benchmarks/cap_loss.py RES_DIR GT_DIR      # e.g. a benchmark run's eval/calibrated RES
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("EMR_D2_NO_REGISTER", "1")

from emr_d2.cli import add_debug_argument, run_cli  # noqa: E402
from emr_d2.data.ctc import CTCFormatError, read_label_volume, z_ranges  # noqa: E402
from emr_d2.evaluation.ctc_folders import reference_subfolder  # noqa: E402
from emr_d2.evaluation.seg import SEGAccumulator, contingency  # noqa: E402


def trimmed(gt: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, int]:
    """res with every matched object cut to its reference object's z range; voxels removed."""
    table = contingency(gt, res)
    ranges = z_ranges(gt)
    out = res.copy()
    removed = 0
    for g, s in enumerate(table.ctc_match()):
        if s < 0:
            continue
        first, last = ranges[int(table.gt_ids[g])]
        outside = np.ones(gt.shape[0], bool)
        outside[first:last + 1] = False
        cut = (out == table.res_ids[s]) & outside[:, None, None]
        removed += int(cut.sum())
        out[cut] = 0
    return out, removed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("res_dir")
    parser.add_argument("gt_dir")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    seg_dir = reference_subfolder(args.gt_dir, "SEG")
    plain, trimmed_seg, removed, voxels = SEGAccumulator(), SEGAccumulator(), 0, 0
    for name in sorted(os.listdir(seg_dir)):
        if not (name.startswith("man_seg") and name.endswith(".tif")):
            continue
        frame = name[len("man_seg"):-len(".tif")]
        res_path = os.path.join(args.res_dir, f"mask{frame}.tif")
        if not os.path.isfile(res_path):
            raise CTCFormatError(f"{res_path}: result frame missing")
        gt, res = (
            np.asarray(read_label_volume(os.path.join(seg_dir, name))),
            np.asarray(read_label_volume(res_path)),
        )
        cut, count = trimmed(gt, res)
        plain.add(frame, gt, res)
        trimmed_seg.add(frame, gt, cut)
        removed, voxels = removed + count, voxels + int((res > 0).sum())
    print(f"SEG={plain.summary()['SEG']:.4f} SEG_caps_trimmed={trimmed_seg.summary()['SEG']:.4f} "
          f"cap_voxels={removed / max(voxels, 1):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
