#!/usr/bin/env python
"""What test-time augmentation costs: one trained model on the frames of one sequence, plain and
with TEST.AUG (the default four transforms and all eight), measured side by side (each volume
predicted by every setting in turn, so that a busy machine slows them alike).

    python benchmarks/tta_cost.py \\
        --model output/benchmark/Fluo-N3DH-CHO-sample/channel_fusion/seed0 \\
        --sequence datasets/Fluo-N3DH-CHO-sample/02 --threads 2

Prints a table of seconds per volume and the ratio to plain prediction; last line
``tta_ratio=<default transforms / plain>``.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import emr_d2  # noqa: E402,F401
import tifffile  # noqa: E402
import torch  # noqa: E402

from emr_d2.data.catalog import resolve_voxel_size  # noqa: E402
from emr_d2.data.ctc import list_frames  # noqa: E402
from emr_d2.engine import setup_config  # noqa: E402
from emr_d2.modeling.tta import PLANE_SYMMETRIES  # noqa: E402
from emr_d2.predictor import VolumePredictor  # noqa: E402

SETTINGS = {"plain": [], "tta (4 transforms)": ["TEST.AUG.ENABLED", "True"],
            "tta (8 transforms)": ["TEST.AUG.ENABLED", "True", "TEST.AUG.TRANSFORMS",
                                   str(list(PLANE_SYMMETRIES))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder with config.yaml, model_final.pth")
    parser.add_argument("--sequence", required=True, help="a CTC sequence folder (tTTT.tif)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    weights = ["MODEL.WEIGHTS", os.path.join(args.model, "model_final.pth")]
    predictors = {name: VolumePredictor(setup_config(os.path.join(args.model, "config.yaml"),
                                                     weights + opts))
                  for name, opts in SETTINGS.items()}
    voxel = resolve_voxel_size(args.sequence)[0]
    frames = [path for _, path in sorted(list_frames(args.sequence).items())]
    seconds = dict.fromkeys(SETTINGS, 0.0)
    for path in frames:
        volume = tifffile.imread(path)
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor(volume, voxel_um=voxel)
            seconds[name] += time.perf_counter() - start
    plain = seconds["plain"]
    print(f"| setting | s / volume ({len(frames)} volumes of {volume.shape}) | x plain |")
    print("|---|---|---|")
    for name, total in seconds.items():
        print(f"| {name} | {total / len(frames):.2f} | {total / plain:.2f} |")
    print(f"tta_ratio={seconds['tta (4 transforms)'] / plain:.2f}")


if __name__ == "__main__":
    main()
