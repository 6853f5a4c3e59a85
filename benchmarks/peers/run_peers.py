#!/usr/bin/env python
"""The peers of the benchmark: StarDist-3D, Cellpose and a classical watershed, trained and
chosen on the same frames as emr_d2's configs and scored by the same code, into the same tables.

    make peers          # once: the peers' own environments under .peers/
    python benchmarks/peers/run_peers.py --datasets cho --peers stardist3d cellpose classical \\
        --schedule equal --seeds 3 --output output/benchmark --results benchmarks/results \\
        DATASETS.SPLIT.GAP 1

Each peer trains on <dataset>_01_train, chooses its settings on <dataset>_01_val and predicts
<dataset>_02 at native resolution, in its own environment (a subprocess of .peers/<env>/bin/python
running benchmarks/peers/peer_<name>.py), then this process scores both result folders (its
library's default settings: SEG, DET, OP_CSB, splits, merges; the val-chosen ones: the _calibrated
columns and every other score, SEG_core, SEG_poles, jaccard_matched*, ..., named in ``linking``)
and adds the row to <results>/<dataset>/results.csv as config ``peer/<name>`` (``--schedule
equal``: trained for the median ``train_time_s`` of the emr_d2 rows already in that table, or
--time-budget-s) or ``peer/<name>_own`` (``--schedule own``: the peer's recommended schedule,
capped at 30 minutes of CPU time: 1800 s / --threads of training).
The classical peer has nothing to train and runs once, at equal time. Finished runs are not run
again. KEY VALUE options set DATASETS.SPLIT as for the emr_d2 runs they are compared with.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [REPO, os.path.join(REPO, "tools"), os.path.join(REPO, "benchmarks")]

import known_warnings  # noqa: E402,F401  (first: silences known third-party warnings)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import MetadataCatalog  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from benchmark_runner import (COLUMNS, MASK_SCORES, BenchDataset,  # noqa: E402
                              add_threads_argument, positive, prepare_dataset, published_rows,
                              run_folder,
                              run_locked, thread_env, update_tables)
from emr_d2.cli import add_debug_argument, run_child, run_cli  # noqa: E402
from emr_d2.config import add_emr_config  # noqa: E402
from emr_d2.data.ctc import annotated_frames, gt_folder, list_frames  # noqa: E402
from emr_d2.data.slices import split_frames  # noqa: E402
from emr_d2.evaluation.ctc_folders import det_of_folders, seg_of_folders  # noqa: E402
from emr_d2.evaluation.det import op_csb  # noqa: E402

PEER_ENVS = {"stardist3d": "stardist", "cellpose": "cellpose", "classical": "cellpose"}
# the peers' own schedules stop at 30 minutes of CPU time (wall time x threads)
OWN_CAP_CPU_S = 1800.0
PEERS_ROOT = os.environ.get("EMR_D2_PEERS",
                            os.path.join(REPO, ".peers"))  # where `make peers` installs


def peer_python(peer: str) -> str:
    """The interpreter of a peer's environment; a one-line error if ``make peers`` was not run."""
    python = os.path.join(PEERS_ROOT, PEER_ENVS[peer], "bin", "python")
    if not os.path.isfile(python):
        raise FileNotFoundError(
            f"{python}: the {peer} peer is not installed; run `make peers` first")
    return python


def frame_items(dataset: BenchDataset, val_fraction: float, gap: int) -> dict[str, list[dict]]:
    """{"train": [...], "val": [...], "test": [...]} task items of a registered CTC dataset: the
    split of sequence 01 the emr_d2 runs use (frames with a full-volume reference) and every
    frame of the test sequence."""
    meta, test_meta = MetadataCatalog.get(f"{dataset.name}_01"), MetadataCatalog.get(dataset.test)
    annotated = annotated_frames(meta.dataset_root, meta.sequence)
    split = split_frames(sorted(annotated), val_fraction, gap)
    test_raw = list_frames(os.path.join(test_meta.dataset_root, test_meta.sequence))

    def items(frames):
        return [{"raw": annotated[t][0], "gt": annotated[t][1].volume_path} for t in frames]

    return {
        "train": items(split.train), "val": items(split.val),
        "test": [{"frame": t, "raw": test_raw[t]} for t in sorted(test_raw)],
        "voxel_size": list(meta.voxel_size),
        "gt_dir": gt_folder(test_meta.dataset_root, test_meta.sequence),
    }


def equal_time_budget(results_dir: str) -> float:
    """The median ``train_time_s`` of the emr_d2 rows of a dataset's published table."""
    times = [r["train_time_s"] for r in published_rows(results_dir)
             if not r["config"].startswith("peer/")]
    if not times:
        raise ValueError(
            f"{results_dir}/results.csv has no emr_d2 run to match the training time of; run "
            "tools/benchmark.py on this dataset first or give --time-budget-s")
    return float(statistics.median(times))


def score(res_dir: str, gt_dir: str) -> dict:
    """emr_d2's SEG summary of a result folder, with DET and OP_CSB."""
    summary = seg_of_folders(res_dir, gt_dir).summary()
    summary["DET"] = det_of_folders(res_dir, gt_dir).summary()["DET"]
    summary["OP_CSB"] = op_csb(summary["SEG"], summary["DET"])
    return summary


def peer_row(dataset: BenchDataset, config: str, seed: int, run_dir: str, gt_dir: str) -> dict:
    """A results.csv row of a finished peer run (columns a peer has no counterpart of are NaN)."""
    with open(os.path.join(run_dir, "peer.json")) as f:
        record = json.load(f)
    default = score(os.path.join(run_dir, "RES_default"), gt_dir)
    calibrated = score(os.path.join(run_dir, "RES_calibrated"), gt_dir)
    row = {c: float("nan") for c in COLUMNS}
    row.update(
        dataset=dataset.name, config=config, seed=seed,
        **{k: default[k] for k in ("SEG", "DET", "OP_CSB", "splits", "merges")},
        **{f"{k}_calibrated": calibrated[k] for k in ("SEG", "DET", "OP_CSB", "splits", "merges")},
        **{k: calibrated[k]
           for k in ("SEG_2D", "SEG_poles", "SEG_core", "count_error", *MASK_SCORES)},
        train_time_s=record["train_time_s"],
        inference_s_per_volume=record["inference_s_per_volume"],
        linking=record["calibrated"],
    )
    return row


def run_peer(peer: str, schedule: str, seed: int, dataset: BenchDataset, items: dict,
             budget_s: float,
             threads: int, output: str, patch_px: int | None = None) -> dict | None:
    """Run one peer (cached in row.json like the emr_d2 runs); None if another process holds it."""
    config = f"peer/{peer}" + ("_own" if schedule == "own" else "")
    run_dir = run_folder(output, dataset, config.replace("/", "_"), seed)
    row_file = os.path.join(run_dir, "row.json")
    if os.path.isfile(row_file):
        with open(row_file) as f:
            return json.load(f)

    def fit_and_score() -> dict:
        task = dict(peer=peer, dataset=dataset.name, seed=seed, threads=threads,
                    time_budget_s=budget_s,
                    schedule=schedule, out=os.path.abspath(run_dir), patch_px=patch_px,
                    **{k: v for k, v in items.items() if k != "gt_dir"})
        task_file = os.path.join(run_dir, "task.json")
        with open(task_file, "w") as f:
            json.dump(task, f, indent=1)
        env = dict(os.environ, **thread_env(threads))
        log_file = os.path.join(run_dir, "peer.log")
        with open(log_file, "a") as log:
            returncode = run_child([peer_python(peer),
                                    os.path.join(REPO, "benchmarks", "peers", f"peer_{peer}.py"),
                                    task_file], log, env=env)
        if returncode:
            with open(log_file) as f:
                last = (f.read().strip().splitlines() or [""])[-1]
            raise RuntimeError(
                f"{config} seed {seed} failed (exit {returncode}; {log_file}): {last}")
        row = peer_row(dataset, config, seed, run_dir, items["gt_dir"])
        with open(row_file, "w") as f:
            json.dump(row, f)
        return row

    return run_locked(run_dir, fit_and_score)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", nargs="+", choices=sorted(PEER_ENVS), default=sorted(PEER_ENVS))
    parser.add_argument("--datasets", nargs="+", default=["bench"],
                        help="as tools/benchmark.py --datasets")
    parser.add_argument("--schedule", choices=["equal", "own"], default="equal")
    parser.add_argument("--seeds", type=positive(int, "--seeds"), default=3)
    parser.add_argument("--time-budget-s", type=positive(float, "--time-budget-s"),
                        default=None,
                        help="training time at --schedule equal (default: the median train_time_s "
                             "of the "
                             "emr_d2 rows of the dataset's table); the cap at --schedule own "
                             "(default 1800 / --threads)")
    parser.add_argument("--patch-px", type=positive(int, "--patch-px"), default=None,
                        help="Y and X size of the learned peers' training patches (default: each "
                             "peer's own: "
                             "StarDist-3D 128, Cellpose 224)")
    add_threads_argument(parser)
    parser.add_argument("--output", default="output/benchmark", help="folder of the runs")
    parser.add_argument("--results", default=None,
                        help="folder of the results tables (default: --output)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="DATASETS.SPLIT.* KEY VALUE pairs")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    setup_logger(name="emr_d2")
    for peer in args.peers:
        peer_python(peer)
    cfg = get_cfg()
    add_emr_config(cfg)
    cfg.merge_from_list(args.opts)
    results = args.results or args.output
    for name in args.datasets:
        dataset = prepare_dataset(name)
        items = frame_items(dataset, cfg.DATASETS.SPLIT.VAL_FRACTION, cfg.DATASETS.SPLIT.GAP)
        table = os.path.join(results, dataset.name)
        if args.time_budget_s is not None:
            budget = args.time_budget_s
        elif args.schedule == "own":
            budget = OWN_CAP_CPU_S / args.threads
        else:  # the classical peer trains nothing: it needs no budget
            budget = equal_time_budget(table) if set(args.peers) - {"classical"} else 0.0
        print(
            f"{dataset.name}: {len(items['train'])} train, {len(items['val'])} val, "
            f"{len(items['test'])} test "
            f"frames; training budget {budget:.0f} s, {args.threads} threads per run", flush=True)
        for peer in args.peers:
            if peer == "classical" and args.schedule == "own":
                continue
            for seed in range(1 if peer == "classical" else args.seeds):
                start = time.perf_counter()
                row = run_peer(peer, args.schedule, seed, dataset, items, budget, args.threads,
                               args.output,
                               args.patch_px)
                if row:
                    print(
                        f"{row['config']} seed {seed}: SEG {row['SEG']:.3f}, calibrated "
                        f"{row['SEG_calibrated']:.3f} "
                        f"({row['linking']}), {time.perf_counter() - start:.0f} s", flush=True)
                update_tables(args.output, dataset, table)
        print(f"results in {table}/results.csv, results.md, results.png")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
