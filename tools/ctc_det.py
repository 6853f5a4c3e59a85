#!/usr/bin/env python
"""DET between a CTC result folder and a reference folder, like the CTC's DETMeasure.

    python tools/ctc_det.py RES_DIR GT_DIR [--verbose] [--op-csb]

RES_DIR holds maskTTT.tif; GT_DIR holds TRA/man_trackTTT.tif (the tracking markers; every
frame with a marker file is scored). Prints "DET measure: 0.xxxxxx"; --verbose adds a per-frame
table of the AOGM-D operations; --op-csb also scores SEG (GT_DIR/SEG) and prints OP_CSB, the
CTC's segmentation ranking (SEG + DET) / 2. Errors are reported in one line; add --debug for
the Python traceback.
"""
import argparse
import os
import sys

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")  # keeps torch and detectron2 out: starts fast

from emr_d2.cli import run_cli  # noqa: E402
from emr_d2.evaluation.ctc_folders import det_of_folders, seg_of_folders  # noqa: E402
from emr_d2.evaluation.det import op_csb  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("res_dir")
    parser.add_argument("gt_dir")
    parser.add_argument("--verbose", action="store_true",
                        help="per-frame markers, result objects and operations")
    parser.add_argument("--op-csb", action="store_true",
                        help="also SEG, and OP_CSB = (SEG + DET) / 2")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error")
    args = parser.parse_args(argv)
    accumulator = det_of_folders(args.res_dir, args.gt_dir)
    if args.verbose:
        print(f"{'frame':>6} {'markers':>8} {'results':>8} {'splits':>7} {'FN':>5} {'FP':>5}")
        for name, c in accumulator.per_frame():
            print(f"{name:>6} {c.markers:8d} {c.results:8d} {c.splits:7d} {c.false_negatives:5d} "
                  f"{c.false_positives:5d}")
    det = accumulator.summary()["DET"]
    print(f"DET measure: {det:.6f}")
    if args.op_csb:
        seg = seg_of_folders(args.res_dir, args.gt_dir).summary()["SEG"]
        print(f"SEG measure: {seg:.6f}")
        print(f"OP_CSB measure: {op_csb(seg, det):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
