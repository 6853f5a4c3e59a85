#!/usr/bin/env python
"""Parameters and CPU forward time of every fusion family on one N=5 stack at 256 x 256, next to
the 2D baseline (N=1), measured in one run with the full-size configs (ResNet-50 FPN).

    python benchmarks/model_cost.py [--repeats 3] [KEY VALUE ...]
"""
import argparse
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import emr_d2  # noqa: E402,F401
from detectron2.modeling import build_model  # noqa: E402

from emr_d2.engine.setup import config_variants  # noqa: E402
from emr_d2.engine import setup_config  # noqa: E402

# Untrained weights: the same head load for every model (100 proposals, 20 detections kept).
FIXED_HEAD_LOAD = ["MODEL.DEVICE", "cpu", "MODEL.RPN.POST_NMS_TOPK_TEST", "100",
                   "TEST.DETECTIONS_PER_IMAGE", "20",
                   "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
VARIANTS = config_variants(os.path.join(ROOT, "configs"))


def forward_seconds(model, num_slices: int, repeats: int) -> float:
    image = torch.rand(num_slices, 256, 256)
    inputs = [{"image": image, "height": 256, "width": 256}]
    times = []
    with torch.no_grad():
        model(inputs)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(inputs)
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for variant in VARIANTS:
        n = 1 if variant == "baseline_2d" else 5
        cfg = setup_config(os.path.join(ROOT, "configs", f"{variant}.yaml"),
                           ["INPUT.NUM_SLICES", str(n), *FIXED_HEAD_LOAD, *args.opts])
        model = build_model(cfg).eval()
        params = sum(p.numel() for p in model.parameters())
        rows.append((variant, n, params, forward_seconds(model, n, args.repeats)))
        print(f"measured {variant}", file=sys.stderr)
    base_params, base_time = rows[0][2], rows[0][3]
    print("| config | N | parameters (M) | x baseline | forward (s, CPU, 256x256) | x baseline |")
    print("|---|---|---|---|---|---|")
    for variant, n, params, seconds in rows:
        print(
            f"| {variant} | {n} | {params / 1e6:.2f} | {params / base_params:.3f} | {seconds:.3f} "
            "| "
            f"{seconds / base_time:.2f} |")


if __name__ == "__main__":
    main()
