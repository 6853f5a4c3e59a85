#!/usr/bin/env python
"""The fusion benchmark: every config x seed trained and evaluated on a held-out sequence.

    python tools/benchmark.py --configs configs/bench/baseline_2d.yaml configs/bench/mlp_fusion.yaml \\
        --seeds 3 --output output/benchmark [KEY VALUE ...]

Defaults to the synthetic bench preset (train SIM-bench_01, test SIM-bench_02), generated into
$EMR_DATASETS/SIM-bench if missing. Writes results.csv, results.md and results.png; finished
runs are not run again.
"""
import argparse
import logging
import os
import sys

import torch
from detectron2.utils.logger import setup_logger

from emr_d2.benchmark import run_benchmark
from emr_d2.cli import run_cli
from emr_d2.data.catalog import datasets_root
from emr_d2.data.synthetic import write_synthetic_dataset

BENCH_DATASET = "SIM-bench"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--train", default=f"{BENCH_DATASET}_01")
    parser.add_argument("--test", default=f"{BENCH_DATASET}_02")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default="output/benchmark")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides for every run")
    args = parser.parse_args(argv)
    setup_logger(name="emr_d2")
    missing = [c for c in args.configs if not os.path.isfile(c)]
    if missing:
        print(f"error: config file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    bench_root = os.path.join(datasets_root(), BENCH_DATASET)
    if args.train.startswith(BENCH_DATASET + "_") and not os.path.isdir(bench_root):
        logging.getLogger("emr_d2").info(f"Generating the bench dataset into {bench_root}")
        write_synthetic_dataset(bench_root, "bench", seed=0)
    rows = run_benchmark(args.configs, args.train, args.test, args.seeds, args.output, args.opts,
                         gpus=torch.cuda.device_count())
    with open(os.path.join(args.output, "results.md")) as f:
        print(f.read())
    print(f"{len(rows)} runs; results in {args.output}/results.csv, results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
