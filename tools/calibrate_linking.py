#!/usr/bin/env python
"""Choose the z-linking of a trained model on its validation data (DATASETS.VAL), never the test.

    python tools/calibrate_linking.py --config-file configs/bench/mlp_fusion.yaml \\
        MODEL.WEIGHTS output/mlp_fusion/model_final.pth

Predicts the validation volumes once, relinks them over the TEST.CTC.CALIBRATION grid and writes
the best setting and the whole table to linking.json beside the weights (or in --output), where
tools/train_net.py --eval-only, tools/predict.py and tools/benchmark.py find it.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import sys

import emr_d2  # noqa: F401  (registers the models and datasets)
from detectron2.utils.logger import setup_logger

from emr_d2.calibration import calibrate_linking
from emr_d2.cli import add_debug_argument, run_cli
from emr_d2.data.catalog import check_datasets_registered
from emr_d2.engine import setup_config
from emr_d2.modeling.checkpoint import check_weights
from emr_d2.predictor import VolumePredictor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", default=None,
                        help="folder for linking.json (default: the weights' folder)")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE config overrides (MODEL.WEIGHTS ...)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    setup_logger(name="emr_d2")
    # the configured linking, not an earlier calibration, is the baseline of the table
    cfg = setup_config(args.config_file, args.opts + ["TEST.CTC.USE_CALIBRATED_LINKING", "False"])
    check_weights(cfg.MODEL.WEIGHTS)
    check_datasets_registered(cfg.DATASETS.VAL)
    output = args.output or os.path.dirname(os.path.abspath(cfg.MODEL.WEIGHTS))
    os.makedirs(output, exist_ok=True)
    result = calibrate_linking(cfg, VolumePredictor(cfg).model, output)
    print(f"Best linking on {', '.join(cfg.DATASETS.VAL)}: {result['choice']} "
          f"(SEG {result['SEG']:.4f}; configured {result['default']['SEG']:.4f}); "
          f"wrote {os.path.join(output, 'linking.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
