#!/usr/bin/env python
"""Pictures to look at rather than read.

    python tools/visualize.py volume --raw 02/t000.tif --gt 02_GT/SEG/man_seg000.tif \\
        --pred RES/mask000.tif --out pics/            # slices.png and orthogonal.png
    python tools/visualize.py fusion --config-file C --raw 02/t000.tif --out pics/fusion_weights.png \\
        MODEL.WEIGHTS out/model_final.pth              # per-slice fusion weights
    python tools/visualize.py curves --metrics out/metrics.json --out pics/training_curves.png
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import sys

import tifffile

from emr_d2.cli import run_cli


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    volume = sub.add_parser("volume", help="slice grid and orthogonal views with outlines")
    volume.add_argument("--raw", required=True)
    volume.add_argument("--gt")
    volume.add_argument("--pred")
    volume.add_argument("--out", required=True, help="output folder")
    volume.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size, for the aspect ratio of the side views")
    fusion = sub.add_parser("fusion", help="slice weights of every fusion module of a model")
    fusion.add_argument("--config-file", required=True)
    fusion.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        help="voxel size (needed with INPUT.SLICE_SPACING_UM)")
    fusion.add_argument("--raw", required=True)
    fusion.add_argument("--out", required=True, help="output PNG")
    fusion.add_argument("opts", nargs=argparse.REMAINDER)
    curves = sub.add_parser("curves", help="training curves from metrics.json")
    curves.add_argument("--metrics", required=True)
    curves.add_argument("--out", required=True, help="output PNG")
    args = parser.parse_args(argv)

    from emr_d2 import visualization as vis

    if args.command == "volume":
        read = lambda p: tifffile.imread(p) if p else None  # noqa: E731
        for path in vis.save_volume_pictures(read(args.raw), read(args.gt), read(args.pred), args.out,
                                             args.voxel_size):
            print(path)
    elif args.command == "fusion":
        from detectron2.modeling import build_model

        from emr_d2.engine import setup_config
        from emr_d2.modeling import SliceStackCheckpointer

        cfg = setup_config(args.config_file, args.opts)
        model = build_model(cfg)
        SliceStackCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        weights, maps = vis.collect_fusion_weights(cfg, model, tifffile.imread(args.raw),
                                                   args.voxel_size)
        if not weights:
            print("error: this model has no fusion module with slice weights", file=sys.stderr)
            return 1
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        vis.plot_fusion_weights(weights, args.out, maps)
        print(args.out)
    else:
        vis.plot_training_curves(args.metrics, args.out)
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
