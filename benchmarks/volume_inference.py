#!/usr/bin/env python
"""Whole-volume inference time on the CPU: a 32 x 256 x 256 volume with the full-size configs
(ResNet-50 FPN, the same backbone everywhere), all in one run: baseline_2d, mlp_fusion N=5 per
window (naive) and cached, late_fusion_center N=5 cached, cross_slice_attention N=5 cached.
Last line: cached_ratio=<mlp_fusion cached / baseline_2d>.

    python benchmarks/volume_inference.py           # the timing table
    python benchmarks/volume_inference.py --memory  # peak RSS, 59 x 512 x 512 (mlp_fusion, N=5)
"""
import argparse
import os
import resource
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import emr_d2  # noqa: E402,F401
from detectron2.modeling import build_model  # noqa: E402

from emr_d2.engine import setup_config  # noqa: E402
from emr_d2.predictor import VolumePredictor  # noqa: E402

# Untrained weights: fix the head load at what a trained model sees (100 proposals, 20 nuclei per
# slice, every one kept), the same for every run.
COMMON = ["MODEL.DEVICE", "cpu", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE",
          "20",
          "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def volume(shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (700 + 90 * rng.standard_normal(shape)).clip(0).astype(np.uint16)


def predictor(variant: str, n: int, cached: bool) -> VolumePredictor:
    torch.manual_seed(0)
    cfg = setup_config(os.path.join(ROOT, "configs", f"{variant}.yaml"),
                       COMMON
                       + ["INPUT.NUM_SLICES", str(n), "TEST.CTC.CACHE_FEATURES", str(cached)])
    model = build_model(cfg).eval()
    return VolumePredictor(cfg, model)


def timing() -> None:
    data = volume((32, 256, 256))
    runs = [("baseline_2d", "baseline_2d", 1, True), ("mlp_fusion naive", "mlp_fusion", 5, False),
            ("mlp_fusion cached", "mlp_fusion", 5, True),
            ("late_fusion_center cached", "late_fusion_center", 5, True),
            ("cross_slice_attention cached", "cross_slice_attention", 5, True)]
    seconds = {}
    for name, variant, n, cached in runs:
        p = predictor(variant, n, cached)
        p(data[:2])  # warm-up
        start = time.perf_counter()
        p(data)
        seconds[name] = time.perf_counter() - start
        print(f"measured {name}", file=sys.stderr)
    print("| run | s / volume (32 x 256 x 256) | x baseline_2d |")
    print("|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.1f} | {s / seconds['baseline_2d']:.2f} |")
    print(f"cached_ratio={seconds['mlp_fusion cached'] / seconds['baseline_2d']:.2f}")


def memory() -> None:
    p = predictor("mlp_fusion", 5, True)
    data = volume((59, 512, 512))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    p(data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"mlp_fusion N=5, 59 x 512 x 512: {time.perf_counter() - start:.0f} s, peak RSS {peak:.0f} "
        "MiB "
        f"(model and volume loaded: {before:.0f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory", action="store_true")
    memory() if parser.parse_args().memory else timing()
