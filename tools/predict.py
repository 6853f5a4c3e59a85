#!/usr/bin/env python
"""Segment new 3D stacks: one uint16 label TIFF per input volume, of the same shape.

    python tools/predict.py --config-file output/mlp_fusion/config.yaml --input stack.tif \\
        --output RES/ MODEL.WEIGHTS output/mlp_fusion/model_final.pth
    python tools/predict.py --config-file ... --input Fluo-N3DH-SIM+/02 --output 02_RES/ \\
        MODEL.WEIGHTS ...

--input: a 3D TIFF, a folder of them, or a CTC sequence folder. Outputs are named by one rule: a
CTC raw frame tTTT.tif gives maskTTT.tif (the CTC's result name; a folder of them also gets
res_track.txt, so that the CTC's tools and tools/ctc_seg.py / ctc_det.py score it), any other
name.tif gives name_labels.tif. Every input is checked before anything is written, the outputs
appear in --output only when every volume succeeded, and a non-empty --output is refused unless
--overwrite. The voxel size is found in one order: --voxel-size Z Y X, voxel_size.json beside or
above the input, the TIFF's own ImageJ or OME tags, a known CTC dataset; the log says which gave
it. Models with INPUT.SLICE_SPACING_UM or INPUT.PIXEL_SIZE_UM refuse a stack of unknown voxel
size unless --assume-model-pixel-size. A multi-channel or colour TIFF needs --channel C; a
time-lapse TIFF is refused (give one stack per time point). --measure also writes a CSV per
volume, a row per nucleus (centroid, bounding box, volume, z extent, intensity; micrometres).
Trailing KEY VALUE pairs override the config; MODEL.WEIGHTS is required (--random-weights runs
an untrained model).

Many volumes on many devices: --num-gpus N (with --num-machines, --machine-rank, --dist-url as
for training) runs detectron2's launch; the volumes are spread over the processes (on a machine
without GPUs, N CPU processes), each written as soon as it is finished (atomically: a kill leaves
finished volumes and no half-written one). --resume skips volumes whose output exists and writes
the others the same way. Each volume is predicted streaming: memory grows with a slice, not with
the stack.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import sys

import emr_d2  # noqa: F401  (registers the models)
from detectron2.engine import launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from emr_d2.cli import (add_debug_argument, add_voxel_size_argument, check_new_output_folder,
                        run_cli, staged_output)
from emr_d2.engine import setup_config
from emr_d2.modeling.checkpoint import check_weights
from emr_d2.batch_predict import finish_outputs, plan_outputs, predict_files
from emr_d2.predictor import VolumePredictor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True,
                        help="the model's config (the config.yaml saved beside its weights)")
    parser.add_argument("--input", required=True,
                        help="3D TIFF, folder of TIFFs, or CTC sequence folder")
    parser.add_argument("--output", required=True, help="folder for the label TIFFs")
    add_voxel_size_argument(parser, "voxel size of the input (default: voxel_size.json, the "
                                    "TIFF's tags, or a known CTC dataset)")
    parser.add_argument("--assume-model-pixel-size", action="store_true",
                        help="where no voxel size is known, take the input's pixels to be the "
                             "model's INPUT.PIXEL_SIZE_UM (a guess: give --voxel-size instead)")
    parser.add_argument("--channel", type=int, default=None, metavar="C",
                        help="the channel (0, 1, ...) to segment in a multi-channel or colour TIFF")
    parser.add_argument("--measure", action="store_true",
                        help="also write <output>.csv per volume: one row per nucleus (label, "
                             "centroid and bounding box in um, volume in um^3, z extent, mean and "
                             "total intensity)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an existing non-empty --output, replacing files of the "
                             "same name")
    parser.add_argument("--random-weights", action="store_true",
                        help="predict with an untrained model (no MODEL.WEIGHTS): for testing only")
    parser.add_argument("--tta", action="store_true",
                        help="test-time augmentation: predict every slice stack under the "
                             "symmetries of TEST.AUG.TRANSFORMS and merge (TEST.AUG.ENABLED True; "
                             "about 4x slower with the default four)")
    parser.add_argument("--resume", action="store_true",
                        help="skip volumes whose output exists; write every other one when it is "
                             "finished")
    parser.add_argument("--num-gpus", type=int, default=1,
                        help="processes per machine (GPUs, or CPU processes)")
    parser.add_argument("--num-machines", type=int, default=1)
    parser.add_argument("--machine-rank", type=int, default=0)
    parser.add_argument("--dist-url", default="auto",
                        help="as for tools/train_net.py (multi-machine runs)")
    add_debug_argument(parser)
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides (MODEL.WEIGHTS ...)")
    args = parser.parse_intermixed_args(argv)  # flags may follow the KEY VALUE pairs too
    setup_logger(name="emr_d2")
    if args.num_gpus < 1 or args.num_machines < 1:
        raise ValueError(
            f"--num-gpus ({args.num_gpus}) and --num-machines ({args.num_machines}) must be at "
            "least 1")
    opts = args.opts + (["TEST.AUG.ENABLED", "True"] if args.tta else [])
    cfg = setup_config(args.config_file, opts)
    check_weights(cfg.MODEL.WEIGHTS, args.random_weights)
    pairs = plan_outputs(args.input, args.output)
    voxel = args.voxel_size
    options = dict(channel=args.channel, measure=args.measure)
    processes = args.num_gpus * args.num_machines
    if not args.resume and processes == 1:
        check_new_output_folder(args.output, args.overwrite)
        with staged_output(args.output) as stage:
            staged = [(source, os.path.join(stage, os.path.basename(target)))
                      for source, target in pairs]
            predictor = VolumePredictor(cfg, assume_model_pixel_size=args.assume_model_pixel_size)
            predict_files(predictor, staged, voxel, **options)
            finish_outputs(staged, voxel, **options)
        print(f"Wrote {len(pairs)} label volume(s) to {args.output}")
        return 0
    check_new_output_folder(args.output,
                            args.overwrite or args.resume)  # --resume: a non-empty folder is fine
    todo = [(source, target) for source, target in pairs
            if not (args.resume and os.path.isfile(target))]
    launch(predict_worker, args.num_gpus, num_machines=args.num_machines,
           machine_rank=args.machine_rank,
           dist_url=args.dist_url,
           args=(args.config_file, opts, todo, voxel, args.assume_model_pixel_size, options))
    if args.machine_rank == 0:
        print(f"Wrote {len(todo)} label volume(s) to {args.output} with {processes} process(es)"
              + (f"; {len(pairs) - len(todo)} already there, skipped" if args.resume else ""))
    return 0


def predict_worker(config_file: str, opts: list, todo: list, voxel, assume_model_pixel_size: bool,
                   options: dict) -> None:
    """One process of a launched run: every world_size-th volume, then the CTC result tracks."""
    setup_logger(name="emr_d2")
    cfg = setup_config(config_file, opts)
    rank, world = comm.get_rank(), comm.get_world_size()
    predict_files(VolumePredictor(cfg, assume_model_pixel_size=assume_model_pixel_size),
                  todo[rank::world], voxel, **options)
    comm.synchronize()
    if comm.is_main_process():
        finish_outputs(todo, voxel, **options)


if __name__ == "__main__":
    sys.exit(run_cli(main))
