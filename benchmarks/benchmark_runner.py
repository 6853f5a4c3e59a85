"""The fusion benchmark's runner (tools/benchmark.py's work, also used by the peers and the
headline table): configs x seeds trained and evaluated on one or more datasets.

Each (dataset, config, seed) runs ``tools/train_net.py`` in subprocesses: training on the
``_01_train`` time block (timed), with the linking calibrated on the ``_01_val`` block at the end,
then ``--eval-only`` of the final weights on the held-out sequence ``_02`` at native resolution,
once with the configured linking and once with the calibrated one (with ``tta``, the same weights
again with test-time augmentation: config ``<config>_tta``). A finished run leaves
``<output>/<dataset>/<config>/seed<k>/row.json`` and is not run again.
"""
from __future__ import annotations

import argparse
import csv
import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from emr_d2.atomic import atomic_write
from emr_d2.cli import run_child
from emr_d2.linking import SIMILARITIES

logger = logging.getLogger(__name__)

COLUMNS = ["dataset", "config", "seed", "SEG", "SEG_calibrated", "DET", "DET_calibrated", "OP_CSB",
           "OP_CSB_calibrated", "SEG_oracle_link", "SEG_2D",
           "SEG_poles", "SEG_core", "foreground_IoU", "jaccard_matched", "jaccard_matched_2D",
           "splits", "merges", "splits_calibrated", "merges_calibrated",
           "z_extent_error_um", "segm_AP", "volume_AP", "count_error",
           "centre_weight", "train_time_s", "inference_s_per_volume", "linking"]
METRICS = COLUMNS[3:-1]
# Columns of the calibrated linking's test result that are scored from its label files, so that
# runs finished before a column was added get it without running the network again.
MASK_SCORES = ("foreground_IoU", "jaccard_matched", "jaccard_matched_2D")
TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")
TRAIN_NET = os.path.join(TOOLS, "train_net.py")
CALIBRATE_LINKING = os.path.join(TOOLS, "calibrate_linking.py")
TTA_SUFFIX = "_tta"  # the config name of a run's row with test-time augmentation
PRETRAIN_PREFIX = "pretrain_"  # ... and of a run fine-tuned from weights pretrained elsewhere


@dataclass(frozen=True)
class BenchDataset:
    """A CTC dataset registered as ``<name>_01``/``_02``: train on the leading time block of 01,
    calibrate the linking on its trailing block, test on 02."""

    name: str

    @property
    def train(self) -> str:
        return f"{self.name}_01_train"

    @property
    def val(self) -> str:
        return f"{self.name}_01_val"

    @property
    def test(self) -> str:
        return f"{self.name}_02"


def prepare_dataset(name: str) -> BenchDataset:
    """The benchmark dataset called ``name``, ready to train on: a preset name becomes
    SIM-<preset>, generated (and registered) if missing; "cho" becomes the CHO sample, built (and
    registered) if missing; any other name must be a registered CTC dataset with sequences 01 and
    02 (else a one-line ValueError says why it is not)."""
    # imported here: they load detectron2 and torch, which the table scripts (headline.py) need not
    from emr_d2.data.catalog import check_datasets_registered, datasets_root, register_ctc_dataset
    from emr_d2.data.cho_sample import NAME as CHO_NAME
    from emr_d2.data.cho_sample import WHEEL as CHO_WHEEL
    from emr_d2.data.cho_sample import build_cho_sample
    from emr_d2.data.synthetic import PRESETS, write_synthetic_dataset

    if name == "cho":
        dataset, making = BenchDataset(CHO_NAME), f"Building the CHO sample of {CHO_WHEEL}"
        build = build_cho_sample
    elif name in PRESETS:
        dataset, making = BenchDataset(f"SIM-{name}"), f"Generating the {name} preset"
        def build(root):
            write_synthetic_dataset(root, name, seed=0)
    else:
        dataset, build = BenchDataset(name), None
    root = os.path.join(datasets_root(), dataset.name)
    if build is not None and not os.path.isdir(root):
        logging.getLogger("emr_d2").info(f"{making} into {root}")
        build(root)
        register_ctc_dataset(root, dataset.name)
    check_datasets_registered([f"{dataset.name}_01", dataset.test])
    return dataset


def default_threads() -> int:
    """The cores this process may use (its CPU affinity): the threads one run gets by default."""
    return len(os.sched_getaffinity(0))


def positive(convert: type, flag: str):
    """An argparse ``type`` for ``flag``: ``convert(text)`` (int or float), refused in one line
    unless it is above 0 (a count of 0 or a budget of 0 s would run nothing or nothing useful)."""
    def parse(text: str):
        value = convert(text)
        if value <= 0:
            least = "at least 1" if convert is int else "above 0"
            raise argparse.ArgumentTypeError(f"{flag} must be {least}, got {text}")
        return value

    parse.__name__ = convert.__name__  # argparse names it in "invalid int value: 'abc'"
    return parse


def add_threads_argument(parser) -> None:
    """``--threads`` of a benchmark command: threads per run, at least 1 (default:
    :func:`default_threads`)."""
    parser.add_argument("--threads", type=positive(int, "--threads"), default=default_threads(),
                        help="CPU threads per run (default: the cores this process may use); two "
                             "jobs sharing a machine should split its cores")


def thread_env(threads: int) -> dict[str, str]:
    """Environment variables that hold a subprocess's numerical libraries (PyTorch's OpenMP, MKL,
    OpenBLAS, numba, TensorFlow) to ``threads`` threads: two runs sharing a machine each get
    their share of the cores instead of oversubscribing them (which is 10-20x slower)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS")
    return {name: str(threads) for name in names} | {"TF_NUM_INTEROP_THREADS": "1"}


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def linking_label(choice: dict) -> str:
    """A short name of a calibrated linking: ``overlap 0.8 lb1 min2`` (``connected min2``), with
    ``split0.25`` when it splits objects at necks of that depth, ``gate1`` / ``trim1`` when
    predicted z extents gate the linking / trim the objects (um)."""
    split = f" split{choice['SPLIT_DEPTH']:g}" if choice.get("SPLIT_DEPTH") else ""
    split += f" gate{choice['EXTENT_GATE_UM']:g}" if choice.get("EXTENT_GATE_UM") else ""
    split += f" trim{choice['EXTENT_TRIM_UM']:g}" if choice.get("EXTENT_TRIM_UM") else ""
    if choice["LINKING"] not in SIMILARITIES:  # no assignment: no threshold or look-back
        return f"{choice['LINKING']} min{choice['MIN_SLICES']}{split}"
    return (f"{choice['LINKING']} {choice['LINK_THRESHOLD']:g} lb{choice['LOOK_BACK']} "
            f"min{choice['MIN_SLICES']}{split}")


def claim(run_dir: str) -> bool:
    """Take the run's lock file (holding this process id); False if another live process holds
    it. A lock left by a process that no longer exists is taken over."""
    lock = os.path.join(run_dir, "running.lock")
    for _ in range(2):
        try:
            with open(lock, "x") as f:
                f.write(str(os.getpid()))
            return True
        except FileExistsError:
            try:
                with open(lock) as f:
                    os.kill(int(f.read().strip() or 0), 0)
                return False
            except (ProcessLookupError, ValueError):
                os.remove(lock)
    return False


def run_folder(output: str, dataset: BenchDataset, name: str, seed: int) -> str:
    """The folder of the run of config ``name`` and ``seed`` on ``dataset`` under ``output``."""
    return os.path.join(output, dataset.name, name, f"seed{seed}")


def run_one(config: str, seed: int, dataset: BenchDataset, output: str, opts: list[str],
            env: dict | None = None, refresh: bool = False, name: str | None = None,
            pretrain_time: float = 0.0) -> dict | None:
    """Train and evaluate one (config, seed) on a dataset; returns its row (cached in row.json),
    or None when another benchmark process is running it (several may share one output).
    refresh: a finished run is calibrated and evaluated again with today's code (its weights
    and training time kept). name: the row's config name (default: the config file's);
    pretrain_time: seconds spent training the MODEL.WEIGHTS of ``opts``, added to the row's
    training time."""
    name = name or config_name(config)
    run_dir = run_folder(output, dataset, name, seed)
    row_file = os.path.join(run_dir, "row.json")
    previous = None
    if os.path.isfile(row_file):
        with open(row_file) as f:
            previous = json.load(f)
        if not refresh or previous.get("refreshed"):
            return previous
    return run_locked(run_dir, lambda: _train_and_evaluate(
        config, seed, dataset, run_dir, opts, env,
        None if previous is None else previous["train_time_s"], name, pretrain_time))


def run_locked(run_dir: str, work: Callable[[], dict]) -> dict | None:
    """``work()`` (the run in ``run_dir``) while holding the run's lock (:func:`claim`); None,
    doing nothing, when another benchmark process holds it (several may share one output)."""
    os.makedirs(run_dir, exist_ok=True)
    if not claim(run_dir):
        logger.info(f"{run_dir} is being run by another process; skipped")
        return None
    try:
        return work()
    finally:
        os.remove(os.path.join(run_dir, "running.lock"))


def run_tta(config: str, seed: int, dataset: BenchDataset, output: str, opts: list[str],
            env: dict | None = None, name: str | None = None) -> dict | None:
    """Evaluate the weights of a finished (config, seed) run again with test-time augmentation
    (TEST.AUG.ENABLED, the configured TEST.AUG.TRANSFORMS), its linking calibrated on
    ``_01_val`` with it (``tools/calibrate_linking.py``). The row, config ``<config>_tta`` with
    the run's training time, pairs with the run's own; cached in
    ``<output>/<dataset>/<config>_tta/seed<k>/row.json``. name: the row name of the run
    (default: the config file's; ``pretrain_<config>`` for a fine-tuned one). None when another
    process runs it."""
    name = name or config_name(config)
    source = run_folder(output, dataset, name, seed)
    run_dir = run_folder(output, dataset, name + TTA_SUFFIX, seed)
    row_file = os.path.join(run_dir, "row.json")
    if os.path.isfile(row_file):
        with open(row_file) as f:
            return json.load(f)
    with open(os.path.join(source, "row.json")) as f:
        plain = json.load(f)

    def evaluate_with_tta() -> dict:
        weights = os.path.join(run_dir, "model_final.pth")
        if not os.path.lexists(weights):  # linking.json goes beside the weights: link, not copy
            os.symlink(os.path.abspath(os.path.join(source, "model_final.pth")), weights)
        datasets = dataset_opts(dataset, seed, [*opts, "TEST.AUG.ENABLED", "True"])
        run_logged(CALIBRATE_LINKING,
                   ["--config-file", config, *datasets, "MODEL.WEIGHTS", weights], run_dir, env)
        row = evaluate_run(config, seed, dataset, run_dir, datasets, env)
        row.update(config=name + TTA_SUFFIX, train_time_s=plain["train_time_s"],
                   centre_weight=centre_weight(source))
        atomic_write(row_file, lambda f: json.dump(row, f), "w")
        return row

    return run_locked(run_dir, evaluate_with_tta)


def run_pretrained(config: str, seed: int, dataset: BenchDataset, pretrain: BenchDataset,
                   output: str, opts: list[str], env: dict | None = None,
                   refresh: bool = False) -> dict | None:
    """Pretrain, then fine-tune: the (config, seed) run on ``pretrain`` (e.g. a simulator fitted to
    ``dataset``, ``make_synthetic.py --like``; its row goes to that dataset's table), then the
    same config and schedule on ``dataset`` starting from its final weights. The fine-tuned row,
    config ``pretrain_<config>``, pairs with ``<config>`` at equal fine-tuning iterations; its
    train_time_s is both trainings'. None when another process runs either."""
    first = run_one(config, seed, pretrain, output, opts, env, refresh)
    if first is None:
        return None
    weights = os.path.abspath(os.path.join(run_folder(output, pretrain, config_name(config), seed),
                                           "model_final.pth"))
    return run_one(config, seed, dataset, output, [*opts, "MODEL.WEIGHTS", weights], env, refresh,
                   name=PRETRAIN_PREFIX + config_name(config),
                   pretrain_time=first["train_time_s"])


def run_logged(tool: str, args: list[str], run_dir: str, env: dict | None) -> None:
    """Run the tool (a path) with args, its output appended to ``<run_dir>/benchmark.log``; if it
    fails, raise one line naming the log and the tool's own error line."""
    log_path = os.path.join(run_dir, "benchmark.log")
    with open(log_path, "a") as log:
        returncode = run_child([sys.executable, tool, *args], log, env=env)
    if returncode:
        with open(log_path) as f:
            errors = [line.strip()[len("error: "):] for line in f if line.startswith("error: ")]
        raise RuntimeError(f"{log_path}: {os.path.basename(tool)} failed (exit "
                           f"{returncode})" + (f": {errors[-1]}" if errors else ""))


def dataset_opts(dataset: BenchDataset, seed: int, opts: list[str]) -> list[str]:
    """The config overrides of every subprocess of a run: its datasets, seed and ``opts``."""
    return ["DATASETS.TRAIN", f"('{dataset.train}',)", "DATASETS.VAL", f"('{dataset.val}',)",
            "TEST.CTC.CALIBRATE_LINKING", "True", "SEED", str(seed), *opts]


def _train_and_evaluate(config: str, seed: int, dataset: BenchDataset, run_dir: str,
                        opts: list[str], env: dict | None, train_time: float | None,
                        name: str, pretrain_time: float) -> dict:
    """Train (resumable), then evaluate (:func:`evaluate_run`); write row.json (config ``name``,
    training time plus ``pretrain_time``). train_time: that of a finished training evaluated
    again (refresh; the row says ``refreshed``)."""
    datasets = dataset_opts(dataset, seed, opts)
    start = time.perf_counter()
    run_logged(TRAIN_NET, ["--config-file", config, "--resume", *datasets, "DATASETS.TEST", "()",
                           "OUTPUT_DIR", run_dir], run_dir, env)
    measured = train_time is None
    if measured:
        train_time = time.perf_counter() - start + pretrain_time
    row = evaluate_run(config, seed, dataset, run_dir, datasets, env)
    row.update(config=name, train_time_s=train_time)
    if not measured:
        row["refreshed"] = True
    atomic_write(os.path.join(run_dir, "row.json"), lambda f: json.dump(row, f), "w")
    return row


def evaluate_run(config: str, seed: int, dataset: BenchDataset, run_dir: str,
                 datasets: list[str], env: dict | None) -> dict:
    """``tools/train_net.py --eval-only`` of ``<run_dir>/model_final.pth`` on the test sequence
    with the configured and with the calibrated linking (``<run_dir>/linking.json``); returns the
    row of the run without its training time."""
    weights = os.path.join(run_dir, "model_final.pth")
    results = {}
    for linking, use_calibrated in (("default", "False"), ("calibrated", "True")):
        eval_dir = os.path.join(run_dir, "eval", linking)
        run_logged(TRAIN_NET, ["--config-file", config, "--eval-only", *datasets,
                               "DATASETS.TEST", f"('{dataset.test}',)", "MODEL.WEIGHTS", weights,
                               "OUTPUT_DIR", eval_dir,
                               "TEST.CTC.USE_CALIBRATED_LINKING", use_calibrated], run_dir, env)
        with open(os.path.join(eval_dir, "inference", dataset.test, "results.json")) as f:
            results[linking] = json.load(f)
    with open(os.path.join(run_dir, "linking.json")) as f:
        choice = json.load(f)["choice"]
    ctc, calibrated = results["default"]["ctc"], results["calibrated"]["ctc"]
    return {
        "dataset": dataset.name, "config": config_name(config), "seed": seed,
        "SEG": ctc["SEG"], "SEG_calibrated": calibrated["SEG"],
        **{f"{k}{suffix}": m.get(k, float("nan")) for k in ("DET", "OP_CSB")
           for suffix, m in (("", ctc), ("_calibrated", calibrated))},
        **{k: ctc[k]
           for k in ("SEG_oracle_link", "SEG_2D", "SEG_poles", "SEG_core", "splits", "merges")},
        **{k: calibrated[k] for k in MASK_SCORES},
        "splits_calibrated": calibrated["splits"], "merges_calibrated": calibrated["merges"],
        "z_extent_error_um": calibrated.get("z_extent_error_um", float("nan")),
        "segm_AP": results["default"].get("segm", {}).get("AP", float("nan")),
        "volume_AP": ctc["volume_AP"], "count_error": ctc["count_error"],
        "inference_s_per_volume": ctc["seconds_per_volume"], "linking": linking_label(choice),
    }


def centre_weight(run_dir: str) -> float:
    """The last logged mean weight of the window's centre slice (``fusion/<module>/dz+0`` in
    metrics.json), averaged over the fusion modules; NaN for a model without slice weights."""
    last = {}
    with open(os.path.join(run_dir, "metrics.json")) as f:
        for line in f:
            last.update(
                {k: v for k, v in json.loads(line).items() if k.startswith("fusion/")
                and k.endswith("/dz+0")})
    return float(np.mean(list(last.values()))) if last else float("nan")


def mask_scores(run_dir: str, dataset: BenchDataset) -> dict:
    """:data:`MASK_SCORES` of a finished run, from the label files its calibrated linking wrote
    for the test sequence (``eval/calibrated/inference/<test>/<seq>_RES``), scored against the
    test sequence's reference."""
    from detectron2.data import MetadataCatalog

    from emr_d2.evaluation.ctc_folders import seg_of_folders

    meta = MetadataCatalog.get(dataset.test)
    res_dir = os.path.join(run_dir, "eval", "calibrated", "inference", dataset.test,
                           f"{meta.sequence}_RES")
    summary = seg_of_folders(res_dir,
                             os.path.join(meta.dataset_root, f"{meta.sequence}_GT")).summary()
    return {k: summary[k] for k in MASK_SCORES}


def finished_rows(output: str, dataset: BenchDataset) -> list[dict]:
    """Rows of every finished run of a dataset under ``output``, by config name and seed (a row
    written before the :data:`MASK_SCORES` columns existed gets them, saved in its row.json)."""
    rows = []
    for path in glob.glob(os.path.join(output, dataset.name, "*", "seed*", "row.json")):
        with open(path) as f:
            row = json.load(f)
        if not all(k in row for k in MASK_SCORES):
            row.update(mask_scores(os.path.dirname(path), dataset))
            atomic_write(path, lambda f: json.dump(row, f), "w")
        if "centre_weight" not in row:
            row["centre_weight"] = centre_weight(os.path.dirname(path))
        rows.append({m: float("nan") for m in METRICS} | row)  # NaN: a column added after the run
    return sorted(rows, key=lambda r: (r["config"], r["seed"]))


def published_rows(results: str) -> list[dict]:
    """Rows of ``<results>/results.csv`` as written before (numbers as floats, seeds as ints)."""
    path = os.path.join(results, "results.csv")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for key, value in row.items():
            if key in METRICS:
                row[key] = float(value) if value not in ("", None) else float("nan")
        row["seed"] = int(row["seed"])
    return rows


def merge_rows(published: list[dict], finished: list[dict]) -> list[dict]:
    """The finished runs, and the published rows of (config, seed) pairs not run again (their
    columns added since are NaN), by config name and seed."""
    rows = {(r["config"], r["seed"]): {m: float("nan") for m in METRICS} | r for r in published}
    rows.update({(r["config"], r["seed"]): r for r in finished})
    return [rows[key] for key in sorted(rows)]


def update_tables(output: str, dataset: BenchDataset, results: str) -> list[dict]:
    """Rewrite ``results`` (a dataset's results.{csv,md,png}) from every finished run of the
    dataset under ``output`` and the rows published there before of runs not repeated; returns
    the rows."""
    rows = merge_rows(published_rows(results), finished_rows(output, dataset))
    write_results(rows, results)
    return rows


def run_benchmark(configs: list[str], dataset: BenchDataset, seeds: int, output: str,
                  results_dir: str, opts: list[str] = (), gpus: int = 0, refresh: bool = False,
                  threads: int | None = None, tta: bool = False,
                  pretrain: BenchDataset | None = None) -> list[dict]:
    """All configs x seeds on one dataset (one at a time, or one per GPU in parallel; refresh: see
    :func:`run_one`; tta: each run also evaluated with test-time augmentation, :func:`run_tta`;
    pretrain: each run also pretrained there and fine-tuned, :func:`run_pretrained`),
    each run's CPU work held to ``threads`` threads (default: all cores this process may use,
    :func:`default_threads`). After every
    run, ``<results_dir>/<dataset>/results.{csv,md,png}`` are rewritten from all finished runs of
    the dataset under ``output`` and the rows published there before of runs not repeated (so
    later calls with other configs add to the same tables, and several processes can share the
    work: a run another process holds is skipped). Returns those rows."""
    jobs = [(c, s) for s in range(seeds) for c in configs]
    results = os.path.join(results_dir, dataset.name)
    threads = threads or default_threads()
    if gpus > 1:
        def on_gpu(index_job):
            index, (config, seed) = index_job
            env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(index % gpus),
                       **thread_env(max(threads // gpus, 1)))
            return run_variants(config, seed, dataset, output, list(opts), env, refresh, tta,
                                pretrain)

        with ThreadPoolExecutor(gpus) as pool:
            list(pool.map(on_gpu, enumerate(jobs)))
    else:
        for k, (config, seed) in enumerate(jobs, 1):
            logger.info(f"[{dataset.name} {k}/{len(jobs)}] {config_name(config)} seed {seed}")
            run_variants(config, seed, dataset, output, list(opts),
                         dict(os.environ, **thread_env(threads)), refresh, tta, pretrain)
            update_tables(output, dataset, results)
    if pretrain is not None:  # the pretraining runs' own rows
        update_tables(output, pretrain, os.path.join(results_dir, pretrain.name))
    return update_tables(output, dataset, results)


def run_variants(config: str, seed: int, dataset: BenchDataset, output: str, opts: list[str],
                 env: dict, refresh: bool, tta: bool, pretrain: BenchDataset | None) -> None:
    """The (config, seed) run, with ``pretrain`` also its pretrained row, and with ``tta`` the
    TTA row of each (skipped where another process holds the run)."""
    if run_one(config, seed, dataset, output, opts, env, refresh) and tta:
        run_tta(config, seed, dataset, output, opts, env)
    if pretrain is not None and run_pretrained(config, seed, dataset, pretrain, output, opts, env,
                                               refresh) and tta:
        run_tta(config, seed, dataset, output, opts, env,
                name=PRETRAIN_PREFIX + config_name(config))


def summarise(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """{config: {metric: (mean, std over seeds)}} in the order the configs first appear."""
    summary: dict = {}
    for config in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == config]
        summary[config] = {
            m: (float(np.mean([r[m] for r in mine])), float(np.std([r[m] for r in mine])))
            for m in METRICS}
        summary[config]["seeds"] = len(mine)
    return summary


LOWER_IS_BETTER = {"splits", "merges", "splits_calibrated", "merges_calibrated",
                   "z_extent_error_um",
                   "count_error", "train_time_s", "inference_s_per_volume"}
NOT_RANKED = {"centre_weight"}
ONE_DECIMAL = {"segm_AP", "volume_AP", "splits", "merges", "splits_calibrated", "merges_calibrated",
               "train_time_s", "inference_s_per_volume"}


def results_markdown(rows: list[dict]) -> str:
    """Mean +- std per config over seeds; the best mean of every metric in bold; "–" where a
    config has no value (a column added after its runs)."""
    summary = summarise(rows)
    best = {}
    for m in METRICS:
        means = {c: s[m][0] for c, s in summary.items() if np.isfinite(s[m][0])}
        choose = min if m in LOWER_IS_BETTER else max
        best[m] = None if m in NOT_RANKED or len(means) < 2 else choose(means, key=means.get)
    lines = ["| config | seeds | " + " | ".join(METRICS) + " |",
             "|---|---|" + "---|" * len(METRICS)]
    for config, s in summary.items():
        cells = []
        for m in METRICS:
            mean, std = s[m]
            text = (
                "–"
                if not np.isfinite(mean)
                else f"{mean:.1f} ± {std:.1f}"
                if m in ONE_DECIMAL
                else f"{mean:.3f} ± {std:.3f}"
            )
            cells.append(f"**{text}**" if best[m] == config else text)
        lines.append(f"| {config} | {s['seeds']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: list[dict], output: str) -> None:
    """results.csv (one row per dataset, config and seed), results.md and results.png, each
    written atomically."""
    os.makedirs(output, exist_ok=True)

    def write_csv(f):
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(os.path.join(output, "results.csv"), write_csv, "w")
    atomic_write(os.path.join(output, "results.md"), lambda f: f.write(results_markdown(rows)), "w")
    atomic_write(os.path.join(output, "results.png"), lambda f: plot_results(rows, f))


PLOTTED = ["SEG", "SEG_calibrated", "DET_calibrated", "OP_CSB_calibrated", "SEG_oracle_link"]


def plot_results(rows: list[dict], file):
    """PLOTTED metrics per config as PNG: mean over seeds with a ± std error bar, every seed a
    dot. Points rather than bars, so that an axis zoomed onto the values does not make small
    differences look large; configs without a value are left out of that panel. Returns the
    figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarise(rows)
    names = list(summary)
    panel_width = max(3.6, 0.4 * len(names))  # inches: room for every config's rotated name
    fig = Figure(figsize=(panel_width * len(PLOTTED), 3.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(PLOTTED))
    for ax, metric in zip(axes, PLOTTED):
        for i, c in enumerate(names):
            mean, std = summary[c][metric]
            if not np.isfinite(mean):
                continue
            ax.errorbar([i], [mean], yerr=[std], fmt="o", color="tab:blue", capsize=4, ms=6)
            values = [r[metric] for r in rows if r["config"] == c]
            ax.plot([i + 0.15] * len(values), values, "k.", ms=4)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.5, len(names) - 0.5)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric}\nmean ± std over seeds, dots: seeds", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(file, dpi=110, format="png")
    return fig
