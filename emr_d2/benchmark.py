"""The fusion benchmark: train and evaluate configs x seeds, collect a results table and a plot.

Each (config, seed) runs ``tools/train_net.py`` twice in a subprocess: training on the train
dataset (timed), then ``--eval-only`` of its final weights on the test dataset at native
resolution. A finished run leaves ``<output>/<config>/seed<k>/row.json`` and is not run again.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .atomic import atomic_write

logger = logging.getLogger(__name__)

COLUMNS = ["config", "seed", "SEG", "SEG_2D", "segm_AP", "volume_AP", "count_error",
           "train_time_s", "inference_s_per_volume"]
METRICS = COLUMNS[2:]
TRAIN_NET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "train_net.py")


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def run_one(config: str, seed: int, train: str, test: str, output: str, opts: list[str],
            env: dict | None = None) -> dict:
    """Train and evaluate one (config, seed); returns its row (cached in row.json)."""
    run_dir = os.path.join(output, config_name(config), f"seed{seed}")
    row_file = os.path.join(run_dir, "row.json")
    if os.path.isfile(row_file):
        with open(row_file) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    common = [sys.executable, TRAIN_NET, "--config-file", config]
    datasets = ["DATASETS.TRAIN", f"('{train}',)", "SEED", str(seed), "OUTPUT_DIR", run_dir, *opts]
    with open(os.path.join(run_dir, "benchmark.log"), "a") as log:
        start = time.perf_counter()
        subprocess.run(common + ["--resume", *datasets, "DATASETS.TEST", "()"], check=True,
                       stdout=log, stderr=subprocess.STDOUT, env=env)
        train_time = time.perf_counter() - start
        subprocess.run(common + ["--eval-only", *datasets, "DATASETS.TEST", f"('{test}',)",
                                 "MODEL.WEIGHTS", os.path.join(run_dir, "model_final.pth")],
                       check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    with open(os.path.join(run_dir, "inference", test, "results.json")) as f:
        results = json.load(f)
    ctc = results["ctc"]
    row = {
        "config": config_name(config), "seed": seed, "SEG": ctc["SEG"], "SEG_2D": ctc["SEG_2D"],
        "segm_AP": results.get("segm", {}).get("AP", float("nan")), "volume_AP": ctc["volume_AP"],
        "count_error": ctc["count_error"], "train_time_s": train_time,
        "inference_s_per_volume": ctc["seconds_per_volume"],
    }
    atomic_write(row_file, lambda f: json.dump(row, f), "w")
    return row


def run_benchmark(configs: list[str], train: str, test: str, seeds: int, output: str,
                  opts: list[str] = (), gpus: int = 0) -> list[dict]:
    """All configs x seeds (one at a time, or one per GPU in parallel); writes the results."""
    jobs = [(c, s) for s in range(seeds) for c in configs]
    if gpus > 1:
        def on_gpu(index_job):
            index, (config, seed) = index_job
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(index % gpus))
            return run_one(config, seed, train, test, output, list(opts), env)

        with ThreadPoolExecutor(gpus) as pool:
            rows = list(pool.map(on_gpu, enumerate(jobs)))
    else:
        rows = []
        for k, (config, seed) in enumerate(jobs, 1):
            logger.info(f"[{k}/{len(jobs)}] {config_name(config)} seed {seed}")
            rows.append(run_one(config, seed, train, test, output, list(opts)))
            write_results(rows, output)
    write_results(rows, output)
    return rows


def summarise(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """{config: {metric: (mean, std over seeds)}} in the order the configs first appear."""
    summary: dict = {}
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        summary[config] = {m: (float(np.mean([r[m] for r in mine])), float(np.std([r[m] for r in mine])))
                           for m in METRICS}
        summary[config]["seeds"] = len(mine)
    return summary


LOWER_IS_BETTER = {"count_error", "train_time_s", "inference_s_per_volume"}


def results_markdown(rows: list[dict]) -> str:
    """Mean +- std per config over seeds; the best mean of every metric in bold."""
    summary = summarise(rows)
    best = {}
    for m in METRICS:
        means = {c: s[m][0] for c, s in summary.items()}
        best[m] = (min if m in LOWER_IS_BETTER else max)(means, key=means.get)
    lines = ["| config | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
    for config, s in summary.items():
        cells = []
        for m in METRICS:
            text = f"{s[m][0]:.3f} ± {s[m][1]:.3f}" if "time" not in m and "per_volume" not in m \
                else f"{s[m][0]:.1f} ± {s[m][1]:.1f}"
            cells.append(f"**{text}**" if best[m] == config and len(summary) > 1 else text)
        lines.append(f"| {config} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], output: str) -> None:
    """results.csv (one row per config and seed), results.md and results.png."""
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(os.path.join(output, "results.md"), "w") as f:
        f.write(results_markdown(rows))
    plot_results(rows, os.path.join(output, "results.png"))


def plot_results(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarise(rows)
    names = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(4 * 3, 3.6))
    for ax, metric in zip(axes, ["SEG", "SEG_2D", "volume_AP"]):
        means = [summary[c][metric][0] for c in names]
        stds = [summary[c][metric][1] for c in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="tab:blue", alpha=0.8)
        for i, c in enumerate(names):  # every seed as a dot
            values = [r[metric] for r in rows if r["config"] == c]
            ax.plot([i] * len(values), values, "k.", ms=4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_title(f"{metric} (mean ± std over seeds)")
        low = min(m - s for m, s in zip(means, stds))
        if metric != "volume_AP":
            ax.set_ylim(max(0.0, low - 0.05), 1.0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
