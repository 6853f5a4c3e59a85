"""The benchmark's bookkeeping: run locks shared by processes, the centre-slice weight column,
columns scored from the saved result masks of runs finished before they existed, the threads
each run gets."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

import benchmark_runner as benchmark
from helpers import ROOT
from benchmark_runner import (BenchDataset, centre_weight, claim, default_threads, finished_rows,
                              run_benchmark)


def test_a_run_is_claimed_once_and_a_dead_holder_is_replaced(tmp_path):
    assert claim(str(tmp_path))
    assert not claim(str(tmp_path))  # held by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    (tmp_path / "running.lock").write_text(dead.stdout.strip())
    assert claim(str(tmp_path))


def test_centre_weight_is_the_last_logged_weight_of_offset_zero(tmp_path):
    rows = [{"iteration": 19, "fusion/a/dz+0": 0.5, "fusion/a/dz+1": 0.5},
            {"iteration": 39, "fusion/a/dz+0": 0.9, "fusion/b/dz+0": 0.7, "total_loss": 1.0}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))
    assert abs(centre_weight(str(tmp_path)) - 0.8) < 1e-9
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}))
    assert centre_weight(str(tmp_path)) != centre_weight(str(tmp_path))  # NaN: no slice weights


def test_a_row_written_before_the_mask_columns_gets_them_from_its_saved_results(
    registered_tiny, tmp_path):
    run_dir = tmp_path / "TINY" / "mlp_fusion" / "seed0"
    res_dir = run_dir / "eval" / "calibrated" / "inference" / "TINY_02" / "02_RES"
    gt_dir = os.path.join(registered_tiny, "02_GT", "SEG")
    os.makedirs(res_dir)
    for name in sorted(os.listdir(gt_dir)):
        gt = tifffile.imread(os.path.join(gt_dir, name))
        res = gt.copy()
        res[:, :, : gt.shape[2] // 2] = 0  # every object loses its left half
        tifffile.imwrite(res_dir / name.replace("man_seg", "mask"), res.astype(np.uint16))
    (run_dir
     / "row.json").write_text(json.dumps({"dataset": "TINY", "config": "mlp_fusion", "seed": 0}))
    (run_dir / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}))
    (row,) = finished_rows(str(tmp_path), BenchDataset("TINY"))
    assert (
        0.3 < row["foreground_IoU"] < 0.7
        and 0.5 < row["jaccard_matched"] < 1
        and 0 < row["jaccard_matched_2D"] < 1
    )
    assert json.loads((run_dir
                       / "row.json").read_text())["jaccard_matched"] == row["jaccard_matched"]


def test_each_training_process_is_held_to_the_threads_given(tmp_path, monkeypatch):
    environments = []

    def record(command, log, env=None, **kwargs):
        environments.append(env)
        raise InterruptedError("recorded")

    monkeypatch.setattr(benchmark, "run_child", record)
    with pytest.raises(InterruptedError):
        run_benchmark(["configs/bench/baseline_2d.yaml"], BenchDataset("TINY"), 1, str(tmp_path),
                      str(tmp_path),
                      threads=1)
    assert {environments[0][k]
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")} == {"1"}
    assert default_threads() == len(os.sched_getaffinity(0))


def test_zero_threads_is_refused_in_one_line():
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--configs",
                          os.path.join(ROOT, "configs", "bench", "baseline_2d.yaml"), "--threads",
                          "0"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith(
        "--threads must be at least 1, got 0")


@pytest.mark.parametrize("tool,flag,value,message", [
    ("tools/benchmark.py", "--seeds", "0", "--seeds must be at least 1, got 0"),
    ("benchmarks/peers/run_peers.py", "--seeds", "0", "--seeds must be at least 1, got 0"),
    ("benchmarks/peers/run_peers.py", "--time-budget-s", "0",
     "--time-budget-s must be above 0, got 0"),
    ("benchmarks/peers/run_peers.py", "--patch-px", "-8", "--patch-px must be at least 1, got -8"),
    ("tools/benchmark.py", "--seeds", "three", "invalid int value: 'three'"),
])
def test_no_seed_or_no_budget_is_refused_in_one_line(tool, flag, value, message):
    """Before, --seeds 0 ran nothing and exited 0, and a budget of 0 s started a peer anyway."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, tool), flag, value],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().splitlines()[-1].endswith(message)


def test_the_benchmark_tool_refuses_an_unknown_dataset_in_one_line(tmp_path):
    from test_bad_input import assert_one_line_error, run_tool

    run = run_tool("benchmark.py", "--datasets", "NOSUCH", "--configs",
                   os.path.join(ROOT, "configs", "bench", "baseline_2d.yaml"), "--seeds", "1",
                   "--output", tmp_path / "out")
    assert_one_line_error(run, "dataset 'NOSUCH_01' is not registered")
    assert not (tmp_path / "out").exists()


def test_a_finished_run_is_evaluated_again_with_tta_beside_its_own_row(trained, tiny_dataset,
                                                                      tmp_path):
    model_dir, _ = trained
    run_dir = tmp_path / "TINY" / "mlp_fusion" / "seed0"
    run_dir.mkdir(parents=True)
    os.symlink(os.path.join(model_dir, "model_final.pth"), run_dir / "model_final.pth")
    (run_dir / "row.json").write_text(json.dumps({"dataset": "TINY", "config": "mlp_fusion",
                                                  "seed": 0, "train_time_s": 12.5}))
    (run_dir / "metrics.json").write_text(json.dumps({"iteration": 0, "fusion/a/dz+0": 0.6}))
    env = dict(os.environ, EMR_DATASETS=os.path.dirname(tiny_dataset), PYTHONWARNINGS="ignore",
               **benchmark.thread_env(1))
    config = str(tmp_path / "mlp_fusion.yaml")
    shutil.copy(os.path.join(model_dir, "config.yaml"), config)
    row = benchmark.run_tta(config, 0, BenchDataset("TINY"), str(tmp_path),
                            ["DATASETS.SPLIT.GAP", "1"], env)
    tta_dir = tmp_path / "TINY" / "mlp_fusion_tta" / "seed0"
    assert row["config"] == "mlp_fusion_tta" and (tta_dir / "linking.json").is_file()
    assert row["train_time_s"] == 12.5 and row["centre_weight"] == 0.6
    assert 0 < row["SEG_calibrated"] <= 1 and row["inference_s_per_volume"] > 0
    log = (tta_dir / "benchmark.log").read_text()
    assert "test-time augmentation: identity, hflip, vflip, rot180" in log
    saved = json.loads((tta_dir / "row.json").read_text())
    assert saved["config"] == row["config"] and saved["SEG"] == row["SEG"]


def test_a_pretrained_run_fine_tunes_from_the_pretraining_weights(tmp_path, monkeypatch):
    calls = []

    def fake_run_one(config, seed, dataset, output, opts, env=None, refresh=False, name=None,
                     pretrain_time=0.0):
        calls.append(dict(dataset=dataset.name, opts=opts, name=name, pretrain_time=pretrain_time))
        return {"train_time_s": 100.0}

    monkeypatch.setattr(benchmark, "run_one", fake_run_one)
    benchmark.run_pretrained("configs/bench/channel_fusion.yaml", 2, BenchDataset("REAL"),
                             BenchDataset("FITTED"), str(tmp_path), ["INPUT.PIXEL_SIZE_UM", "0.4"])
    pretraining, fine_tuning = calls
    assert pretraining == dict(dataset="FITTED", opts=["INPUT.PIXEL_SIZE_UM", "0.4"], name=None,
                               pretrain_time=0.0)
    weights = os.path.join(tmp_path, "FITTED", "channel_fusion", "seed2", "model_final.pth")
    assert fine_tuning == dict(dataset="REAL", opts=["INPUT.PIXEL_SIZE_UM", "0.4", "MODEL.WEIGHTS",
                                                     weights],
                               name="pretrain_channel_fusion", pretrain_time=100.0)


def test_with_tta_and_pretraining_the_pretrained_run_gets_its_tta_row_too(monkeypatch):
    calls = []
    monkeypatch.setattr(benchmark, "run_one", lambda *a, **k: calls.append("run") or {"ok": 1})
    monkeypatch.setattr(benchmark, "run_pretrained",
                        lambda *a, **k: calls.append("pretrained") or {"ok": 1})
    monkeypatch.setattr(benchmark, "run_tta",
                        lambda *a, name=None, **k: calls.append(("tta", name)))
    benchmark.run_variants("configs/bench/channel_fusion.yaml", 0, BenchDataset("REAL"), "out", [],
                           {}, False, True, BenchDataset("FITTED"))
    assert calls == ["run", ("tta", None), "pretrained", ("tta", "pretrain_channel_fusion")]
    calls.clear()
    monkeypatch.setattr(benchmark, "run_pretrained", lambda *a, **k: None)  # held by another
    benchmark.run_variants("configs/bench/channel_fusion.yaml", 0, BenchDataset("REAL"), "out", [],
                           {}, False, True, BenchDataset("FITTED"))
    assert calls == ["run", ("tta", None)]


def test_a_failing_run_is_one_line_naming_its_log(tiny_dataset, tmp_path):
    from test_bad_input import assert_one_line_error, run_tool

    config = tmp_path / "broken.yaml"
    config.write_text(f"_BASE_: {os.path.join(ROOT, 'configs', 'bench', 'baseline_2d.yaml')}\n"
                      "MODEL:\n  NOSUCH_KEY: 1\n")
    run = run_tool("benchmark.py", "--datasets", "TINY", "--configs", config, "--seeds", "1",
                   "--threads", "1", "--output", tmp_path / "out",
                   datasets=os.path.dirname(tiny_dataset))
    log = tmp_path / "out" / "TINY" / "broken" / "seed0" / "benchmark.log"
    assert_one_line_error(run, f"{log}: train_net.py failed (exit 1): ", "NOSUCH_KEY")


def test_the_headline_best_config_is_chosen_among_the_configs_with_the_most_seeds(tmp_path):
    from benchmark_runner import METRICS
    from headline import headline

    folder = tmp_path / "DS"
    folder.mkdir()
    rows = [("steady", s, 0.80 + 0.01 * s) for s in range(3)] + [("lucky", 0, 0.95),
                                                                   ("peer/classical", 0, 0.70)]
    others = [m for m in METRICS if m != "SEG_calibrated"]
    with open(folder / "results.csv", "w") as f:
        f.write(",".join(["dataset", "config", "seed", "SEG_calibrated", *others]) + "\n")
        f.writelines(",".join(["DS", config, str(seed), str(seg)] + ["nan"] * len(others)) + "\n"
                     for config, seed, seg in rows)
    line = headline(str(tmp_path), ["DS"], "SEG_calibrated").splitlines()[-1]
    assert line.startswith("| DS | steady: 0.810 ± 0.008 (3) |")
    assert "0.700 ± 0.000 (1; -0.110)" in line


def test_the_headline_refuses_a_metric_it_cannot_rank_in_one_line():
    for metric in ("NOSUCH", "train_time_s"):  # unknown; lower is better, so "best" is not max
        run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "headline.py"),
                              "--metric", metric], capture_output=True, text=True)
        assert run.returncode == 2 and run.stdout == ""
        assert f"--metric {metric}: not a metric where higher is better" in run.stderr
