#!/usr/bin/env python
"""SEG between a CTC result folder and a reference folder, like the CTC's SEGMeasure.

    python tools/ctc_seg.py RES_DIR GT_DIR [--verbose]

RES_DIR holds maskTTT.tif; GT_DIR holds SEG/man_segTTT.tif (3D) or SEG/man_seg_TTT_ZZZ.tif
(single slices, scored in 2D). Prints "SEG measure: 0.xxxxxx"; --verbose adds a per-frame table.
Errors are reported in one line; add --debug for the Python traceback.
"""
import argparse
import os
import sys

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")  # keeps torch and detectron2 out: starts fast

from emr_d2.cli import run_cli  # noqa: E402
from emr_d2.evaluation.ctc_folders import seg_of_folders  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("res_dir")
    parser.add_argument("gt_dir")
    parser.add_argument("--verbose", action="store_true",
                        help="per-frame SEG and reference object counts")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error")
    args = parser.parse_args(argv)
    accumulator = seg_of_folders(args.res_dir, args.gt_dir)
    if args.verbose:
        print(f"{'frame':>6} {'SEG':>9} {'reference objects':>18}")
        for name, seg, count in accumulator.per_frame():
            print(f"{name:>6} {seg:9.6f} {count:18d}")
    summary = accumulator.summary()
    print(f"SEG measure: {summary['SEG']:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
