#!/usr/bin/env python
"""Write a SIM+-like synthetic dataset in the Cell Tracking Challenge layout.

python tools/make_synthetic.py --out datasets/SIM-demo                  # demo preset
python tools/make_synthetic.py --out datasets/SIM-bench --preset bench
python tools/make_synthetic.py --out datasets/SIM-aniso --preset aniso  # CHO-like, 5x anisotropic
python tools/make_synthetic.py --out datasets/SIM-full --preset sim+ --frames 10
python tools/make_synthetic.py --out datasets/SIM-cho-fit \\
    --like datasets/Fluo-N3DH-CHO-sample/01 --scale 0.5

--like measures a real annotated dataset (a CTC dataset folder with full-volume references, one
of its sequence folders, or a folder with images/ and masks/ of the same names) and writes a
synthetic dataset fitted to it: the same voxel size and stack shape (in-plane resolution times
--scale), and the generator's image formation searched until its stacks measure like the real
ones (emr_d2.data.simulator_fit). Give the training sequence, not the test one. The fit, and each
statistic measured on the real and on the written data, go to fit.json and fit.md in --out.
"""
import argparse
import json
import os
import sys
from dataclasses import asdict

os.environ.setdefault("EMR_D2_NO_REGISTER", "1")  # no torch or detectron2 needed here

from emr_d2.cli import (add_debug_argument, add_voxel_size_argument,  # noqa: E402
                        check_new_output_folder, run_cli)
from emr_d2.data.simulator_fit import (fit_preset, measure, read_annotated,  # noqa: E402
                                       statistics_table)
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
    parser.add_argument("--like", default=None, metavar="DATASET_FOLDER",
                        help="fit the generator to this annotated dataset instead of --preset")
    add_voxel_size_argument(parser, "with --like: the voxel size of the real data (default: its "
                                    "voxel_size.json or known CTC name)")
    parser.add_argument("--evaluations", type=int, default=200,
                        help="with --like: candidate generators tried by the fit")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing non-empty --out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per sequence (default: the preset's)")
    parser.add_argument("--scale", type=float, default=None,
                        help="resolution relative to the preset's native voxel (default: the "
                             "preset's)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    check_new_output_folder(args.out, args.overwrite)
    if args.like:
        return write_fitted(args)
    preset = write_synthetic_dataset(args.out, args.preset, seed=args.seed, frames=args.frames,
                                     scale=args.scale)
    print(f"Wrote {args.preset} dataset to {args.out}: volumes of {preset.shape} voxels "
          f"({' x '.join(f'{v:g}' for v in preset.voxel_um)} um)")
    print(dataset_names_line(args.out))
    return 0


def write_fitted(args) -> int:
    """--like: fit, write the dataset, measure it, write fit.json and fit.md, print the table."""
    if args.scale is not None and args.scale <= 0:
        raise ValueError(f"--scale must be positive, got {args.scale}")
    if args.evaluations < 1:
        raise ValueError(f"--evaluations must be at least 1, got {args.evaluations}")
    if args.frames is not None and args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    real = read_annotated(args.like, args.voxel_size)
    print(f"Fitting the generator to {len(real.pairs)} annotated stacks of {real.shape} voxels "
          f"({' x '.join(f'{v:g}' for v in real.voxel_um)} um) in {args.like}", flush=True)
    preset, target = fit_preset(real, scale=args.scale or 1.0, max_evaluations=args.evaluations,
                                seed=args.seed, frames=args.frames)
    write_synthetic_dataset(args.out, preset, seed=args.seed)
    generated = measure(read_annotated(args.out))
    table = statistics_table(target, generated)
    with open(os.path.join(args.out, "fit.json"), "w") as f:
        json.dump({"like": os.path.abspath(args.like), "preset": asdict(preset), "real": target,
                   "generated": generated}, f, indent=1)
    with open(os.path.join(args.out, "fit.md"), "w") as f:
        f.write(f"Generated ({args.out}) against real ({args.like}):\n\n{table}\n")
    print(f"Wrote a dataset fitted to {args.like} to {args.out}: volumes of {preset.shape} voxels "
          f"({' x '.join(f'{v:g}' for v in preset.voxel_um)} um)\n{table}")
    print(dataset_names_line(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
