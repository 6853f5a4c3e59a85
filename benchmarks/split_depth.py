#!/usr/bin/env python
"""What the shape split (TEST.CTC.SPLIT_DEPTH) adds to calibrated linking, on finished benchmark
runs.

    python benchmarks/split_depth.py --dataset SIM-bench \\
        --configs baseline_2d channel_fusion mlp_fusion --depths 0.0 0.15 0.25 0.35 \\
        --output output/benchmark --csv benchmarks/results/SIM-bench/split_depth.csv

For every finished run ``<output>/<dataset>/<config>/seed<k>`` of tools/benchmark.py: calibrate
the linking again on ``<dataset>_01_val`` with TEST.CTC.CALIBRATION.SPLIT_DEPTHS = --depths
(tools/calibrate_linking.py, into ``<run>/split_depth/``), evaluate the final weights on the
held-out ``<dataset>_02`` with that choice (tools/train_net.py --eval-only), and write one row per
run beside the run's own calibrated evaluation (no split): SEG, DET, merges and SEG_oracle_link.
A run with a finished evaluation is not redone.
"""
import argparse
import csv
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, "tools")
COLUMNS = ["config", "seed", "choice", "SEG_calibrated", "SEG_split", "DET_calibrated", "DET_split",
           "merges_calibrated", "merges_split", "SEG_oracle_link"]


def metrics(eval_dir: str, dataset: str) -> dict:
    with open(os.path.join(eval_dir, "inference", f"{dataset}_02", "ctc_metrics.json")) as f:
        return json.load(f)


def run_tool(command: list[str]) -> None:
    """Run a tool; on failure, exit with its last error line."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        sys.exit(f"{os.path.basename(command[1])} failed: {lines[-1]}")


def relink(run: str, config: str, dataset: str, depths: list[str]) -> dict:
    """Calibrate with the split depths and evaluate on the test sequence; the split run's metrics.
    """
    out = os.path.join(run, "split_depth")
    weights = ["MODEL.WEIGHTS", os.path.join(run, "model_final.pth")]
    if not os.path.isfile(os.path.join(out, "inference", f"{dataset}_02", "ctc_metrics.json")):
        run_tool([sys.executable, os.path.join(TOOLS, "calibrate_linking.py"), "--config-file",
                  config,
                  "--output", out, *weights, "DATASETS.VAL", f"('{dataset}_01_val',)",
                  "TEST.CTC.CALIBRATION.SPLIT_DEPTHS", f"[{', '.join(depths)}]"])
        with open(os.path.join(out, "linking.json")) as f:
            choice = json.load(f)["choice"]
        chosen = [str(v) for key, value in choice.items() for v in (f"TEST.CTC.{key}", value)]
        run_tool([sys.executable, os.path.join(TOOLS, "train_net.py"), "--config-file", config,
                  "--eval-only",
                  *weights, "DATASETS.TEST", f"('{dataset}_02',)", "DATASETS.VAL", "()",
                  "TEST.CTC.CALIBRATE_LINKING", "False", *chosen, "OUTPUT_DIR", out])
    with open(os.path.join(out, "linking.json")) as f:
        return {"choice": json.load(f)["choice"], **metrics(out, dataset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="SIM-bench")
    parser.add_argument("--configs", nargs="+", required=True,
                        help="names of configs/bench/<name>.yaml")
    parser.add_argument("--depths", nargs="+", default=["0.0", "0.15", "0.25", "0.35"])
    parser.add_argument("--output", default="output/benchmark",
                        help="tools/benchmark.py's --output")
    parser.add_argument("--csv", required=True)
    args = parser.parse_args()
    rows = []
    for name in args.configs:
        for run in sorted(glob.glob(os.path.join(args.output, args.dataset, name, "seed*"))):
            if not os.path.isfile(os.path.join(run, "row.json")):
                continue
            split = relink(run, os.path.join(ROOT, "configs", "bench", f"{name}.yaml"),
                           args.dataset, args.depths)
            before = metrics(os.path.join(run, "eval", "calibrated"), args.dataset)
            c = split["choice"]
            rows.append({"config": name, "seed": int(run.rsplit("seed", 1)[1]),
                         "choice": f"{c['LINKING']} {c['LINK_THRESHOLD']:g} lb{c['LOOK_BACK']} "
                                   f"min{c['MIN_SLICES']} "
                                   f"split{c['SPLIT_DEPTH']:g}",
                         "SEG_calibrated": before["SEG"], "SEG_split": split["SEG"],
                         "DET_calibrated": before["DET"],
                         "DET_split": split["DET"], "merges_calibrated": before["merges"],
                         "merges_split": split["merges"],
                         "SEG_oracle_link": split["SEG_oracle_link"]})
            print(
                " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in rows[-1].items()),
                flush=True)
    if not rows:
        sys.exit(f"error: no finished benchmark run of {', '.join(args.configs)} under "
                 f"{os.path.join(args.output, args.dataset)}")
    os.makedirs(os.path.dirname(os.path.abspath(args.csv)), exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
