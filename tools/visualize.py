#!/usr/bin/env python
"""Pictures to look at rather than read.

    python tools/visualize.py volume --raw 02/t000.tif --gt 02_GT/SEG/man_seg000.tif \\
        --pred RES/mask000.tif --out pics/            # slices.png and orthogonal.png
    python tools/visualize.py fusion --config-file C --raw 02/t000.tif \\
        --out pics/fusion_weights.png MODEL.WEIGHTS out/model_final.pth  # per-slice weights
    python tools/visualize.py curves --metrics out/metrics.json --out pics/training_curves.png

The side views of `volume` are drawn at the physical aspect of --voxel-size, or of the dataset's
voxel size (voxel_size.json beside or above --raw, or a known CTC dataset). Every input is
checked before a picture is written (--gt and --pred must be 3D label stacks of the raw stack's
shape); pictures are written whole or not at all, and missing output folders are created.
Errors are reported in one line; add --debug for the Python traceback.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import sys

import numpy as np

from emr_d2.atomic import atomic_write
from emr_d2.cli import add_debug_argument, add_voxel_size_argument, run_cli
from emr_d2.data.ctc import CTCFormatError, read_label_volume, read_raw_volume


def read_labels_like(path: str | None, raw: np.ndarray, raw_path: str) -> np.ndarray | None:
    """A label stack of the raw stack's shape (singleton axes dropped), or None for no path."""
    if path is None:
        return None
    labels = read_label_volume(path)
    squeezed = labels.reshape([s for s in labels.shape if s != 1] or [1])
    if squeezed.shape != raw.shape:
        raise CTCFormatError(
            f"{path}: label stack of shape {labels.shape} does not fit the raw stack's "
            f"{raw.shape} ({raw_path}); expected a 3D label stack of the same "
            "shape")
    return np.asarray(squeezed)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_argument(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    volume = sub.add_parser("volume", help="slice grid and orthogonal views with outlines")
    volume.add_argument("--raw", required=True, help="raw 3D stack")
    volume.add_argument("--channel", type=int, default=None, metavar="C",
                        help="the channel (0, 1, ...) of a multi-channel or colour --raw TIFF")
    volume.add_argument("--gt", help="reference labels of the same shape")
    volume.add_argument("--pred", help="predicted labels of the same shape")
    volume.add_argument("--out", required=True, help="output folder (created if missing)")
    add_voxel_size_argument(volume,
                            "voxel size, for the aspect of the side views; default: the TIFF's "
                            "tags or the dataset's")
    fusion = sub.add_parser("fusion", help="slice weights of every fusion module of a model")
    fusion.add_argument("--config-file", required=True,
                        help="the model's config (config.yaml beside its weights)")
    add_voxel_size_argument(fusion,
                            "voxel size (needed with INPUT.SLICE_SPACING_UM); default: the "
                            "dataset's")
    fusion.add_argument("--raw", required=True, help="raw 3D stack")
    fusion.add_argument("--channel", type=int, default=None, metavar="C",
                        help="the channel (0, 1, ...) of a multi-channel or colour --raw TIFF")
    fusion.add_argument("--out", required=True,
                        help="output PNG (its folder is created if missing)")
    fusion.add_argument("--random-weights", action="store_true",
                        help="plot an untrained model's weights (no MODEL.WEIGHTS): for testing "
                             "only")
    fusion.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE config overrides (MODEL.WEIGHTS ...)")
    curves = sub.add_parser("curves", help="training curves from metrics.json")
    curves.add_argument("--metrics", required=True, help="detectron2's OUTPUT_DIR/metrics.json")
    curves.add_argument("--out", required=True,
                        help="output PNG (its folder is created if missing)")
    for command in (volume, fusion, curves):
        add_debug_argument(command)
    args = parser.parse_args(argv)

    from emr_d2 import visualization as vis
    from emr_d2.data.catalog import resolve_voxel_size

    if args.command == "volume":
        raw = read_raw_volume(args.raw, channel=args.channel)
        gt, pred = (read_labels_like(p, raw, args.raw) for p in (args.gt, args.pred))
        voxel = resolve_voxel_size(args.raw, args.voxel_size)[0]
        for path in vis.save_volume_pictures(np.asarray(raw), gt, pred, args.out, voxel):
            print(path)
    elif args.command == "fusion":
        from detectron2.modeling import build_model

        from emr_d2.engine import setup_config
        from emr_d2.modeling import SliceStackCheckpointer
        from emr_d2.modeling.checkpoint import check_weights

        cfg = setup_config(args.config_file, args.opts)
        check_weights(cfg.MODEL.WEIGHTS, args.random_weights)
        raw = read_raw_volume(args.raw, channel=args.channel)
        model = build_model(cfg)
        SliceStackCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
        weights, maps = vis.collect_fusion_weights(cfg, model, np.asarray(raw),
                                                   resolve_voxel_size(args.raw, args.voxel_size)[0])
        if not weights:
            raise ValueError(
                f"{args.config_file}: this model has no fusion module with slice weights")
        atomic_write(args.out, lambda f: vis.plot_fusion_weights(weights, f, maps))
        print(args.out)
    else:
        if not os.path.isfile(args.metrics):
            raise FileNotFoundError(f"{args.metrics}: no such file")
        vis.read_metrics(args.metrics)  # a file of another kind fails before anything is written
        atomic_write(args.out, lambda f: vis.plot_training_curves(args.metrics, f))
        print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
