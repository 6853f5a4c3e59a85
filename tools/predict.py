#!/usr/bin/env python
"""Segment new 3D stacks: one uint16 label TIFF per input volume, of the same shape.

    python tools/predict.py --config-file configs/mlp_fusion.yaml --input stack.tif --output RES/ \\
        MODEL.WEIGHTS output/model_final.pth
    python tools/predict.py --config-file ... --input Fluo-N3DH-SIM+/02 --output 02_RES/ MODEL.WEIGHTS ...

--input: a 3D TIFF, a folder of them, or a CTC sequence folder (then the outputs are named
maskTTT.tif, as the CTC expects). --voxel-size Z Y X (micrometres) gives the data's voxel size;
a CTC sequence takes its dataset's (voxel_size.json or a known CTC dataset) by default. Models
with INPUT.SLICE_SPACING_UM need it. Trailing KEY VALUE pairs override the config.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import sys

import emr_d2  # noqa: F401  (registers the models)
from detectron2.utils.logger import setup_logger

from emr_d2.cli import run_cli
from emr_d2.data.catalog import voxel_size
from emr_d2.engine import setup_config
from emr_d2.predictor import VolumePredictor, plan_outputs, predict_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", required=True, help="3D TIFF, folder of TIFFs, or CTC sequence folder")
    parser.add_argument("--output", required=True, help="folder for the label TIFFs")
    parser.add_argument("--voxel-size", nargs=3, type=float, metavar=("Z", "Y", "X"), default=None,
                        help="voxel size of the input in micrometres")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    setup_logger(name="emr_d2")
    cfg = setup_config(args.config_file, args.opts)
    pairs = plan_outputs(args.input, args.output)
    os.makedirs(args.output, exist_ok=True)  # an unwritable output fails before any work
    voxel = args.voxel_size or voxel_size(os.path.dirname(os.path.abspath(args.input.rstrip("/"))))
    predict_files(VolumePredictor(cfg), pairs, voxel)
    print(f"Wrote {len(pairs)} label volume(s) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
