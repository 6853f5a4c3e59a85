#!/usr/bin/env python
"""Train or evaluate an emr_d2 model with detectron2's usual command line.

    python tools/train_net.py --config-file configs/mlp_fusion.yaml
    python tools/train_net.py --config-file configs/mlp_fusion.yaml --eval-only \\
        MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file configs/mlp_fusion.yaml --num-gpus 8 \\
        SOLVER.IMS_PER_BATCH 32

--config-file is required (for trained weights: the config.yaml saved beside them). Training
into an OUTPUT_DIR that holds an earlier run needs --resume (continue it) or --overwrite (start
afresh). Errors are reported in one line; add --debug for the Python traceback.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import sys

import emr_d2  # noqa: F401  (registers models and datasets)
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.modeling import build_model
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from emr_d2.calibration import apply_calibrated_linking
from emr_d2.cli import add_debug_argument, run_cli
from emr_d2.data.catalog import check_datasets_registered, check_splits
from emr_d2.engine import Trainer, setup_config
from emr_d2.engine.run_folder import (check_training_folder, clear_training_folder, plain_text_logs,
                                      record_training_pixel_size)
from emr_d2.modeling import SliceStackCheckpointer
from emr_d2.modeling.checkpoint import check_weights


def worker(args):
    cfg = setup_config(args.config_file, args.opts, freeze=False, calibrated_linking=False)
    check_datasets_registered([
        *([] if args.eval_only else [*cfg.DATASETS.TRAIN, *cfg.DATASETS.VAL]),
        *cfg.DATASETS.TEST])
    dataset_lines = check_splits([*cfg.DATASETS.TRAIN, *cfg.DATASETS.VAL, *cfg.DATASETS.TEST])
    if args.eval_only:  # weights that do not fit fail before the environment and config are logged
        model = build_model(cfg)
        SliceStackCheckpointer(model, save_dir=cfg.OUTPUT_DIR, strict=True).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
    if args.overwrite and not args.eval_only and comm.is_main_process():
        clear_training_folder(cfg.OUTPUT_DIR)
    comm.synchronize()
    plain_text_logs("detectron2", "emr_d2", "fvcore")
    logger = setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="emr_d2")
    for line in dataset_lines:
        logger.info(line)
    apply_calibrated_linking(cfg,
                             args.opts)  # after the logger (it says which linking.json it applies)
    if not args.eval_only:
        record_training_pixel_size(cfg, logger)
    default_setup(cfg, args)  # and before the config is written to OUTPUT_DIR/config.yaml
    cfg.freeze()
    if args.eval_only:
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv) -> int:
    parser = default_argument_parser()
    parser.add_argument("--overwrite", action="store_true",
                        help="train afresh into an OUTPUT_DIR that holds an earlier run, deleting "
                             "its files "
                             "(checkpoints, metrics, logs, linking.json, inference/)")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    if not args.config_file:
        raise ValueError(
            "no --config-file given: name the model's config (for trained weights, the config.yaml "
            "saved beside them)")
    cfg = setup_config(args.config_file, args.opts)  # config errors before any process is started
    if args.eval_only and not args.resume:
        check_weights(cfg.MODEL.WEIGHTS)
    if not args.eval_only:
        check_training_folder(cfg.OUTPUT_DIR, args.resume, args.overwrite)
    launch(worker, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
