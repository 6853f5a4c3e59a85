"""train_net (train, --eval-only, --resume), predict.py, visualize.py and ctc_seg.py end to end
on the tiny dataset, in subprocesses as a user runs them."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch
from ctc_metrics.scripts.evaluate import evaluate_sequence

from emr_d2.engine import setup_config
from emr_d2.evaluation.seg import SEGAccumulator
from emr_d2.predictor import VolumePredictor

from helpers import CONFIGS, LEARNING_ITERATIONS, ROOT, TINY_MODEL, TRAIN, VAL_LOSS_PERIOD, tool


def test_training_learns_evaluates_and_logs_fusion_weights(trained):
    out, log = trained
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.json"))]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert losses[-1] < losses[0]
    assert any(k.startswith("fusion/backbone.fusion.") and k.endswith("dz+0") for r in rows
               for k in r)
    assert "ctc/SEG" in rows[-1] and "segm/AP" in rows[-1]
    # computed every VAL_LOSS_PERIOD iterations; metrics.json keeps the latest value at each write
    # (every 20)
    validation = {r["iteration"]: r["validation_loss"] for r in rows if "validation_loss" in r}
    written = set(range(19, LEARNING_ITERATIONS, 20)) | {LEARNING_ITERATIONS - 1}
    assert set(validation) == {i for i in written if (i + 1) % VAL_LOSS_PERIOD == 0}
    assert all(v > 0 for v in validation.values())
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
    assert os.path.isfile(os.path.join(out, "model_best.pth"))  # BestCheckpointer on ctc/SEG
    assert "\x1b[" not in open(os.path.join(out, "log.txt")).read()  # plain text, no colour codes


def test_fine_tuning_from_pretrained_weights_starts_below_training_from_scratch(
        trained, tiny_dataset, tmp_path):
    model_dir, _ = trained
    first_losses = {}
    for start, weights in (("scratch", []),
                           ("pretrained", ["MODEL.WEIGHTS",
                                           os.path.join(model_dir, "model_final.pth")])):
        out = tmp_path / start
        tool("train_net.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"), "--resume",
             *TINY_MODEL, *TRAIN, "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "5", "SEED", "3",
             "OUTPUT_DIR", str(out), *weights, dataset_root=tiny_dataset)
        rows = [json.loads(line) for line in open(out / "metrics.json")]
        first_losses[start] = [r["total_loss"] for r in rows if "total_loss" in r][0]
        assert rows[-1]["iteration"] == 4  # fine-tuning counts its own iterations from 0
    assert first_losses["pretrained"] < 0.7 * first_losses["scratch"], first_losses


def test_training_calibrates_the_linking_before_the_final_evaluation(trained):
    out, log = trained
    calibration = json.load(open(os.path.join(out, "linking.json")))
    assert (
        calibration["validation"] == ["TINY_01_val"] and len(calibration["table"]) == 660
    )  # x 4 split depths
    choice = calibration["choice"]
    saved = open(os.path.join(out, "config.yaml")).read()
    assert (
        f"LINKING: {choice['LINKING']}" in saved and f"MIN_SLICES: {choice['MIN_SLICES']}" in saved
    )
    assert log.index("Linking calibrated on") < log.index("CTC metrics on TINY_02")


def test_eval_only_writes_res_for_every_frame_and_prints_tables(trained, tiny_dataset, tmp_path):
    out, _ = trained
    run = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
               "--eval-only",
               *TINY_MODEL, *TRAIN, "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"),
               "OUTPUT_DIR", str(tmp_path), dataset_root=tiny_dataset)
    log = run.stdout + run.stderr
    assert "Evaluation results for segm" in log and "Evaluation results for bbox" in log
    assert "CTC metrics on TINY_02" in log and "copypaste: Task: ctc" in log
    assert "Using the linking calibrated in" in log
    res_dir = tmp_path / "inference" / "TINY_02" / "02_RES"
    frames = sorted(os.listdir(os.path.join(tiny_dataset, "02")))
    assert sorted(os.listdir(res_dir)) == [f.replace("t", "mask", 1)
                                           for f in frames] + ["res_track.txt"]
    raw = tifffile.imread(os.path.join(tiny_dataset, "02", frames[0]))
    res = tifffile.imread(res_dir / frames[0].replace("t", "mask", 1))
    assert res.shape == raw.shape and res.dtype == np.uint16
    metrics = json.load(open(tmp_path / "inference" / "TINY_02" / "ctc_metrics.json"))
    assert {"SEG", "SEG_2D", "SEG_poles", "SEG_core", "SEG_oracle_link", "splits", "merges",
            "volume_AP",
            "precision", "recall", "count_error", "DET", "OP_CSB"} <= set(metrics)
    assert "OP_CSB" in log
    seg = tool("ctc_seg.py", str(res_dir), os.path.join(tiny_dataset, "02_GT"),
               dataset_root=tiny_dataset)
    assert f"SEG measure: {metrics['SEG']:.6f}" in seg.stdout
    det = tool("ctc_det.py", str(res_dir), os.path.join(tiny_dataset, "02_GT"), "--op-csb",
               dataset_root=tiny_dataset)
    assert (
        f"DET measure: {metrics['DET']:.6f}" in det.stdout
        and f"OP_CSB measure: {metrics['OP_CSB']:.6f}" in det.stdout
    )
    # the CTC's Python reference reads the evaluator's folder as it is and agrees
    reference = evaluate_sequence(str(res_dir),
                                  os.path.join(tiny_dataset, "02_GT"), ["Valid", "DET", "SEG"],
                                  threads=1)
    assert reference["Valid"] == 1
    for key in ("DET", "SEG", "OP_CSB"):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6)
    assert metrics["DET"] > 0


def test_predict_on_a_raw_stack_without_reference(trained, tiny_dataset, tmp_path):
    out, _ = trained
    stack = tmp_path / "in" / "stack.tif"
    stack.parent.mkdir()
    raw = tifffile.imread(os.path.join(tiny_dataset, "02", "t001.tif"))[:, :60, :50]
    tifffile.imwrite(stack, raw, photometric="minisblack")
    run = tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"), "--input",
               str(stack),
               "--output", str(tmp_path / "out"), *TINY_MODEL, "INPUT.NUM_SLICES", "3",
               "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), dataset_root=tiny_dataset)
    assert "Using the linking calibrated in" in run.stdout + run.stderr
    labels = tifffile.imread(tmp_path / "out" / "stack_labels.tif")
    assert labels.shape == raw.shape and labels.dtype == np.uint16
    opts = [*TINY_MODEL, "INPUT.NUM_SLICES", "3", "MODEL.WEIGHTS",
            os.path.join(out, "model_final.pth")]
    tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"), "--input",
         str(stack), "--output", str(tmp_path / "tta"), "--tta", *opts, dataset_root=tiny_dataset)
    augmented = VolumePredictor(setup_config(os.path.join(CONFIGS, "mlp_fusion.yaml"),
                                             opts + ["TEST.AUG.ENABLED", "True"]))(raw).labels
    assert np.array_equal(tifffile.imread(tmp_path / "tta" / "stack_labels.tif"), augmented)
    tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"), "--input",
         os.path.join(tiny_dataset, "02"), "--output", str(tmp_path / "ctc"), *TINY_MODEL,
         "INPUT.NUM_SLICES", "3",
         "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), dataset_root=tiny_dataset)
    assert sorted(os.listdir(tmp_path / "ctc")) == ["mask000.tif", "mask001.tif", "mask002.tif",
                                                    "res_track.txt"]
    reference = evaluate_sequence(str(tmp_path / "ctc"),
                                  os.path.join(tiny_dataset, "02_GT"), ["Valid", "DET"], threads=1)
    assert reference["Valid"] == 1 and reference["DET"] > 0


def test_visualize_writes_pictures(trained, tiny_dataset, tmp_path):
    out, _ = trained
    raw = os.path.join(tiny_dataset, "02", "t000.tif")
    gt = os.path.join(tiny_dataset, "02_GT", "SEG", "man_seg000.tif")
    tool("visualize.py", "volume", "--raw", raw, "--gt", gt, "--pred", gt, "--out", str(tmp_path),
         dataset_root=tiny_dataset)
    tool("visualize.py", "curves", "--metrics", os.path.join(out, "metrics.json"), "--out",
         str(tmp_path / "curves.png"), dataset_root=tiny_dataset)
    tool("visualize.py", "fusion", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
         "--raw", raw,
         "--out", str(tmp_path / "fusion.png"), *TINY_MODEL, "INPUT.NUM_SLICES", "3",
         "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), dataset_root=tiny_dataset)
    for name in ("slices.png", "orthogonal.png", "curves.png", "fusion.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_killed_training_resumes_from_the_last_complete_checkpoint(tiny_dataset, tmp_path):
    command = [sys.executable, os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
               os.path.join(CONFIGS, "baseline_2d.yaml")]
    opts = [*TINY_MODEL, *TRAIN, "INPUT.NUM_SLICES", "1", "DATASETS.TEST", "()", "SOLVER.MAX_ITER",
            "16",
            "SOLVER.CHECKPOINT_PERIOD", "4", "OUTPUT_DIR", str(tmp_path)]
    env = dict(os.environ, EMR_DATASETS=os.path.dirname(tiny_dataset), PYTHONWARNINGS="ignore")
    process = subprocess.Popen(command + opts, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = tmp_path / "last_checkpoint"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if last.exists() and last.read_text().strip() == "model_0000007.pth":
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.exists() and not (tmp_path
                                  / "model_final.pth").exists(), "training was not stopped early"
    stopped_at = int(last.read_text().strip()[6:13]) + 1
    assert not list(tmp_path.glob("*.tmp"))  # nothing half-written under a final name
    resumed = subprocess.run(command + ["--resume"] + opts, env=env, cwd=ROOT, capture_output=True,
                             text=True, check=True)
    assert f"Starting training from iteration {stopped_at}" in resumed.stdout + resumed.stderr
    final = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert final["iteration"] == 15


def test_the_model_knows_its_pixel_size_and_rescales_a_finer_stack(trained, tiny_dataset, tmp_path):
    out, _ = trained
    assert "PIXEL_SIZE_UM: 0.25" in open(
        os.path.join(out, "config.yaml")).read()  # TINY's voxel: 0.4 x 0.25 x 0.25
    raw = tifffile.imread(os.path.join(tiny_dataset, "02", "t001.tif"))
    (tmp_path / "native").mkdir()
    (tmp_path / "fine").mkdir()
    tifffile.imwrite(tmp_path / "native" / "stack.tif", raw)
    tifffile.imwrite(tmp_path / "fine" / "stack.tif", raw.repeat(2, axis=1).repeat(2, axis=2))
    labels = {}
    for name, voxel in (("native", ["0.4", "0.25", "0.25"]), ("fine", ["0.4", "0.125", "0.125"])):
        tool("predict.py", "--config-file", os.path.join(out, "config.yaml"), "--input",
             str(tmp_path / name),
             "--output", str(tmp_path / f"{name}_out"), "--voxel-size", *voxel,
             "MODEL.WEIGHTS", os.path.join(out, "model_final.pth"), dataset_root=tiny_dataset)
        labels[name] = tifffile.imread(tmp_path / f"{name}_out" / "stack_labels.tif")
    assert labels["native"].max() > 0 and labels["fine"].shape == (
        raw.shape[0], 2 * raw.shape[1], 2 * raw.shape[2])
    accumulator = SEGAccumulator()
    accumulator.add("t", labels["native"].repeat(2, axis=1).repeat(2, axis=2), labels["fine"])
    # the same objects: the stack was resized to the model's pixels
    assert accumulator.summary()["SEG"] >= 0.8


def test_training_into_a_trained_folder_needs_resume_or_overwrite(trained, tiny_dataset, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained[0], folder)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    opts = ["--config-file", os.path.join(CONFIGS, "baseline_2d.yaml"), *TINY_MODEL, *TRAIN,
            "INPUT.NUM_SLICES", "1",
            "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "2", "OUTPUT_DIR", str(folder)]
    run = tool("train_net.py", *opts, dataset_root=tiny_dataset, check=False)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(
        errors) == 1 and "--resume" in errors[0] and "--overwrite" in errors[0]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    tool("train_net.py", "--overwrite", *opts, dataset_root=tiny_dataset)
    assert not (folder / "model_best.pth").exists() and not (folder / "linking.json").exists()
    iterations = [json.loads(line)["iteration"] for line in open(folder / "metrics.json")]
    assert max(iterations) == 1  # a fresh metrics.json, not appended to the old run's


def test_a_split_that_cannot_be_made_fails_before_anything_is_written(tiny_dataset, tmp_path):
    run = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "baseline_2d.yaml"),
               *TINY_MODEL, *TRAIN,
               "INPUT.NUM_SLICES", "1", "DATASETS.TRAIN", "('TINY_02_train',)",
               "DATASETS.SPLIT.VAL_FRACTION", "0.6",
               "OUTPUT_DIR", str(tmp_path / "run"), dataset_root=tiny_dataset, check=False)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(errors) == 1, run.stderr[-2000:]
    assert (
        "TINY_02_train" in errors[0]
        and "DATASETS.SPLIT.VAL_FRACTION" in errors[0]
        and "3 annotated frames cannot hold a train block of at least half" in errors[0]
    )
    assert not (tmp_path / "run").exists()


class _Trainer:
    def __init__(self):
        from detectron2.utils.events import EventStorage

        self.storage = EventStorage()


def test_early_stopping_counts_evaluations_without_improvement():
    from emr_d2.engine.hooks import EarlyStop, EarlyStopping

    hook = EarlyStopping("ctc/SEG", "max", patience=2)
    hook.trainer = _Trainer()
    storage = hook.trainer.storage
    for iteration, seg in [(9, 0.5), (19, 0.6), (29, 0.55)]:
        storage.iter = iteration
        storage.put_scalar("ctc/SEG", seg, smoothing_hint=False)
        hook.after_step()
        hook.after_step()  # no new evaluation: nothing changes
    storage.iter = 39
    storage.put_scalar("ctc/SEG", 0.58, smoothing_hint=False)
    with pytest.raises(EarlyStop):
        hook.after_step()


def test_tools_print_no_third_party_warnings(tiny_dataset, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["EMR_DATASETS"] = os.path.dirname(tiny_dataset)
    runs = [
        [os.path.join(ROOT, "tools", "predict.py"), "--help"],
        [os.path.join(ROOT, "tools", "train_net.py"), "--config-file",
         os.path.join(CONFIGS, "mlp_fusion.yaml"),
         *TINY_MODEL, *TRAIN, "DATASETS.TEST", "()", "SOLVER.MAX_ITER", "3", "OUTPUT_DIR",
         str(tmp_path)],
    ]
    for command in runs:
        run = subprocess.run([sys.executable, *command], env=env, cwd=ROOT, capture_output=True,
                             text=True, check=True)
        warnings = [line for line in (run.stdout + run.stderr).splitlines() if "Warning" in line]
        assert not warnings, warnings
