#!/usr/bin/env python
"""Write a SIM+-like synthetic dataset in the Cell Tracking Challenge layout.

python tools/make_synthetic.py --out datasets/SIM-demo                  # demo preset
python tools/make_synthetic.py --out datasets/SIM-bench --preset bench
python tools/make_synthetic.py --out datasets/SIM-aniso --preset aniso  # CHO-like, 5x anisotropic
python tools/make_synthetic.py --out datasets/SIM-full --preset sim+ --frames 10
"""
import argparse
import os
import sys

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")  # no torch or detectron2 needed here

from emr_d2.cli import add_debug_argument, run_cli  # noqa: E402
from emr_d2.data.synthetic import PRESETS, write_synthetic_dataset  # noqa: E402


def dataset_names_line(folder: str) -> str:
    """Which dataset names the folder registers as (when it lies in $EMR_DATASETS)."""
    name = os.path.basename(os.path.normpath(folder))
    seqs = sorted(s for s in os.listdir(folder) if s.isdigit()
                  and os.path.isdir(os.path.join(folder, f"{s}_GT")))
    names = ", ".join(f"{name}_{s} ({name}_{s}_train, {name}_{s}_val)" for s in seqs)
    where = os.environ.get("EMR_DATASETS", "datasets")
    inside = os.path.abspath(os.path.dirname(os.path.normpath(folder))) == os.path.abspath(where)
    return (f"Dataset names (DATASETS.TRAIN / VAL / TEST): {names}"
            + ("" if inside else f"; registered when the folder lies in $EMR_DATASETS ({where})"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder (a CTC dataset folder)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per sequence (default: the preset's)")
    parser.add_argument("--scale", type=float, default=None,
                        help="resolution relative to the preset's native voxel (default: the "
                             "preset's)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    preset = write_synthetic_dataset(args.out, args.preset, seed=args.seed, frames=args.frames,
                                     scale=args.scale)
    print(f"Wrote {args.preset} dataset to {args.out}: volumes of {preset.shape} voxels "
          f"({' x '.join(f'{v:g}' for v in preset.voxel_um)} um)")
    print(dataset_names_line(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
