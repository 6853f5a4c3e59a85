"""Bad input: one clear line naming the file and the problem, a non-zero exit code, no traceback
and nothing written under a final name — for train_net, predict, ctc_seg and make_synthetic."""
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from emr_d2.data.slices import load_sequence_records

from helpers import CONFIGS, ROOT, TINY_MODEL


def run_tool(name, *args, datasets=None):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if datasets:
        env["EMR_DATASETS"] = str(datasets)
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def assert_one_line_error(run, *fragments):
    assert run.returncode != 0
    assert "Traceback" not in run.stderr, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, run.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tifffile.imwrite(path, data, photometric="minisblack")


def predict(weights, source, output, *extra):
    return run_tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                    "--input", source,
                    "--output", output, *TINY_MODEL, "INPUT.NUM_SLICES", "3", "MODEL.WEIGHTS",
                    weights, *extra)


def test_predict_2d_tiff(tmp_path, weights):
    write(str(tmp_path / "flat.tif"), np.zeros((64, 64), np.uint16))
    run = predict(weights / "mlp.pth", tmp_path / "flat.tif", tmp_path / "out")
    assert_one_line_error(run, "flat.tif", "expected a 3D stack")
    assert not (tmp_path / "out" / "flat_labels.tif").exists()


def test_predict_corrupt_tiff(tmp_path, weights):
    write(str(tmp_path / "good.tif"), np.ones((4, 64, 64), np.uint16))
    data = (tmp_path / "good.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 3])
    run = predict(weights / "mlp.pth", tmp_path / "cut.tif", tmp_path / "out")
    assert_one_line_error(run, "cut.tif")
    assert not (tmp_path / "out" / "cut_labels.tif").exists()


def test_predict_nan_in_float_raw(tmp_path, weights):
    raw = np.ones((4, 64, 64), np.float32)
    raw[2, 3, 4] = np.inf
    write(str(tmp_path / "nan.tif"), raw)
    run = predict(weights / "mlp.pth", tmp_path / "nan.tif", tmp_path / "out")
    assert_one_line_error(run, "nan.tif", "NaN or Inf")
    assert not (tmp_path / "out" / "nan_labels.tif").exists()


def test_predict_checkpoint_that_does_not_match(tmp_path, weights):
    write(str(tmp_path / "v.tif"), np.ones((4, 64, 64), np.uint16))
    run = predict(weights / "other.pth", tmp_path / "v.tif", tmp_path / "out")
    assert_one_line_error(run, "other.pth", "does not match the config")
    assert not (tmp_path / "out" / "v_labels.tif").exists()


def test_predict_unwritable_output(tmp_path, weights):
    write(str(tmp_path / "v.tif"), np.ones((4, 64, 64), np.uint16))
    (tmp_path / "file").write_text("not a folder")
    run = predict(weights / "mlp.pth", tmp_path / "v.tif", tmp_path / "file" / "out")
    assert_one_line_error(run, "file/out")


def test_num_slices_deeper_than_the_volume_pads_and_warns_once(tmp_path, weights):
    write(
        str(tmp_path / "thin.tif"),
        (np.random.default_rng(0).random((2, 64, 64)) * 1000).astype(np.uint16))
    run = predict(weights / "mlp.pth", tmp_path / "thin.tif", tmp_path / "out")
    assert run.returncode == 0, run.stderr[-2000:]
    assert (run.stdout + run.stderr).count("exceeds the volume's 2 slices") == 1
    assert tifffile.imread(tmp_path / "out" / "thin_labels.tif").shape == (2, 64, 64)


def ctc_pair(tmp_path, gt, res):
    write(str(tmp_path / "GT" / "SEG" / "man_seg000.tif"), gt)
    if res is not None:
        write(str(tmp_path / "RES" / "mask000.tif"), res)
    return run_tool("ctc_seg.py", tmp_path / "RES", tmp_path / "GT")


def test_ctc_seg_shape_mismatch(tmp_path):
    gt = np.zeros((4, 16, 16), np.uint16)
    gt[1, 2:5, 2:5] = 1
    assert_one_line_error(ctc_pair(tmp_path, gt, np.zeros((4, 16, 15), np.uint16)),
                          "man_seg000.tif", "differs")


def test_ctc_seg_all_references_empty_is_one_error(tmp_path):
    run = ctc_pair(tmp_path, np.zeros((4, 16, 16), np.uint16), np.zeros((4, 16, 16), np.uint16))
    assert_one_line_error(run, "every reference frame is empty")


def test_ctc_seg_scores_an_empty_reference_frame_as_the_ctc_does(tmp_path):
    from test_seg import reference_seg

    gt = np.zeros((4, 16, 16), np.uint16)
    gt[1:3, 2:8, 2:8] = 1
    gt[1:4, 9:15, 9:14] = 2
    res = np.zeros_like(gt)
    res[1:3, 2:8, 3:8] = 5
    res[2:4, 9:15, 9:14] = 7
    pairs = [(gt, res), (np.zeros_like(gt), res), (gt, gt)]
    for frame, (reference, result) in enumerate(pairs):
        write(str(tmp_path / "GT" / "SEG" / f"man_seg{frame:03d}.tif"), reference)
        write(str(tmp_path / "RES" / f"mask{frame:03d}.tif"), result)
    run = run_tool("ctc_seg.py", tmp_path / "RES", tmp_path / "GT")
    assert run.returncode == 0, run.stderr[-2000:]
    ours = float(run.stdout.split("SEG measure:")[1])
    assert ours == pytest.approx(reference_seg(tmp_path, pairs),
                                 abs=1e-6)  # py-ctcmetrics' matching
    warnings = [line for line in run.stderr.splitlines() if "contain no object" in line]
    assert len(warnings) == 1 and "1 of 3 reference frames" in warnings[0]


def test_ctc_seg_missing_result_frame(tmp_path):
    gt = np.ones((2, 8, 8), np.uint16)
    (tmp_path / "RES").mkdir()
    assert_one_line_error(ctc_pair(tmp_path, gt, None), "mask000.tif is missing")


def test_ctc_seg_corrupt_result(tmp_path):
    gt = np.ones((2, 8, 8), np.uint16)
    (tmp_path / "RES").mkdir()
    (tmp_path / "RES" / "mask000.tif").write_bytes(b"II*\x00\x08\x00\x00\x00broken")
    assert_one_line_error(ctc_pair(tmp_path, gt, None), "mask000.tif", "unreadable")


def test_missing_reference_frames_are_skipped_with_one_warning(tiny_dataset, tmp_path, caplog):
    root = tmp_path / "PART"
    shutil.copytree(tiny_dataset, root)
    os.remove(root / "02_GT" / "SEG" / "man_seg001.tif")
    with caplog.at_level(logging.WARNING):
        records = load_sequence_records(str(root), "02", cache_dir=str(tmp_path / "cache"))
    assert sorted({r["frame"] for r in records}) == [0, 2]
    assert sum("1 of 3 frames have no reference" in m for m in caplog.messages) == 1


def train(datasets, output, *extra, train_set="BAD_01"):
    return run_tool("train_net.py", "--config-file", os.path.join(CONFIGS, "baseline_2d.yaml"),
                    *TINY_MODEL,
                    "DATASETS.TRAIN", f"('{train_set}',)", "DATASETS.VAL", "()", "DATASETS.TEST",
                    "()",
                    "TEST.CTC.CALIBRATE_LINKING", "False", "SOLVER.MAX_ITER", "2",
                    "OUTPUT_DIR", output, *extra, datasets=datasets)


def bad_dataset(tmp_path, raw, gt):
    root = tmp_path / "datasets" / "BAD"
    write(str(root / "01" / "t000.tif"), raw)
    write(str(root / "01_GT" / "SEG" / "man_seg000.tif"), gt)
    return tmp_path / "datasets"


def test_train_gt_labels_above_65535(tmp_path):
    gt = np.zeros((4, 32, 32), np.uint32)
    gt[1:3, 4:9, 4:9] = 70000
    run = train(bad_dataset(tmp_path, np.ones((4, 32, 32), np.uint16), gt), tmp_path / "out")
    assert_one_line_error(run, "man_seg000.tif", "above 65535")
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_train_raw_and_reference_shapes_differ(tmp_path):
    gt = np.zeros((4, 32, 30), np.uint16)
    gt[1, 2:5, 2:5] = 1
    run = train(bad_dataset(tmp_path, np.ones((4, 32, 32), np.uint16), gt), tmp_path / "out")
    assert_one_line_error(run, "man_seg000.tif", "differs from the raw frame")


def test_train_dataset_folder_without_sequences(tmp_path):
    (tmp_path / "datasets" / "BAD" / "images").mkdir(parents=True)
    run = train(tmp_path / "datasets", tmp_path / "out")
    assert_one_line_error(run, "BAD", "no sequence folders")
    assert not (tmp_path / "out").exists()


def test_train_unknown_config_key(tmp_path):
    run = train(tmp_path, tmp_path / "out", "MODEL.NO_SUCH_KEY", "1")
    assert_one_line_error(run, "MODEL.NO_SUCH_KEY")
    assert not (tmp_path / "out").exists()


def test_train_unwritable_output(tiny_dataset, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    run = train(os.path.dirname(tiny_dataset), tmp_path / "file" / "out", train_set="TINY_01")
    assert_one_line_error(run, "file/out")


def test_make_synthetic_unwritable_output(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    assert_one_line_error(run_tool("make_synthetic.py", "--out", tmp_path / "file" / "data"),
                          "file/data")
    assert_one_line_error(run_tool("make_synthetic.py", "--out", tmp_path / "x", "--frames", "0"),
                          "--frames")


# --- every tool: a correct result, or exit != 0 with one line naming the file, and nothing written
# ---

def stack(path, depth=4, seed=0):
    write(str(path), (np.random.default_rng(seed).random((depth, 64, 64)) * 1000).astype(np.uint16))
    return path


def test_predict_without_weights_is_an_error_unless_random_weights_are_asked_for(tmp_path):
    stack(tmp_path / "v.tif")
    run = run_tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                   "--input",
                   tmp_path / "v.tif", "--output", tmp_path / "out", *TINY_MODEL,
                   "INPUT.NUM_SLICES", "3")
    assert_one_line_error(run, "MODEL.WEIGHTS is empty", "--random-weights")
    assert not (tmp_path / "out").exists()
    run = run_tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                   "--input",
                   tmp_path / "v.tif", "--output", tmp_path / "out", "--random-weights",
                   *TINY_MODEL,
                   "INPUT.NUM_SLICES", "3")
    assert run.returncode == 0, run.stderr[-2000:]
    assert os.listdir(tmp_path / "out") == ["v_labels.tif"]
    # item 7: the known torch.fx line is filtered
    assert "is_fx_tracing" not in run.stdout + run.stderr
    run = run_tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                   "--input",
                   tmp_path / "v.tif", "--output", tmp_path / "other", *TINY_MODEL, "MODEL.WEIGHTS",
                   tmp_path / "nothing.pth")
    assert_one_line_error(run, "nothing.pth", "no such checkpoint")


def test_voxel_size_takes_three_positive_numbers(tmp_path, weights):
    stack(tmp_path / "v.tif")
    for values, message in ((["0", "0", "0"], "positive"), (["-1", "0.25", "0.25"], "positive"),
                            (["0.4", "0.25", "MODEL.WEIGHTS"], "exactly three numbers")):
        run = run_tool("predict.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                       "--input",
                       tmp_path / "v.tif", "--output", tmp_path / "out", "--voxel-size", *values,
                       *TINY_MODEL,
                       "MODEL.WEIGHTS", weights / "mlp.pth")
        assert run.returncode == 2 and "--voxel-size" in run.stderr and message in run.stderr, (
            run.stderr
        )
        assert not (tmp_path / "out").exists()


def test_a_dataset_voxel_size_file_with_zeros_is_named(tmp_path, weights):
    stack(tmp_path / "data" / "01" / "t000.tif")
    (tmp_path / "data" / "voxel_size.json").write_text('{"zyx_um": [0, 0.25, 0.25]}')
    run = predict(weights / "mlp.pth", tmp_path / "data" / "01", tmp_path / "out",
                  "INPUT.PIXEL_SIZE_UM", "0.25")
    assert_one_line_error(run, "voxel_size.json", "positive")
    assert not (tmp_path / "out").exists()


def test_one_naming_rule_and_an_existing_output_needs_overwrite(tmp_path, weights):
    stack(tmp_path / "seq" / "t003.tif")
    run = predict(weights / "mlp.pth", tmp_path / "seq" / "t003.tif", tmp_path / "single")
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "single")) == ["mask003.tif", "res_track.txt"]
    run = predict(weights / "mlp.pth", tmp_path / "seq", tmp_path / "single")
    assert_one_line_error(run, "single", "not empty", "--overwrite")
    before = (tmp_path / "single" / "mask003.tif").stat().st_mtime_ns
    run = predict(weights / "mlp.pth", tmp_path / "seq", tmp_path / "single", "--overwrite")
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "single")) == ["mask003.tif", "res_track.txt"]
    assert (tmp_path / "single" / "mask003.tif").stat().st_mtime_ns != before


def test_a_folder_with_one_bad_stack_writes_nothing(tmp_path, weights):
    stack(tmp_path / "in" / "a_good.tif")
    write(str(tmp_path / "in" / "b_flat.tif"), np.zeros((64, 64), np.uint16))
    run = predict(weights / "mlp.pth", tmp_path / "in", tmp_path / "out")
    assert_one_line_error(run, "b_flat.tif", "expected a 3D stack")
    assert not (tmp_path / "out").exists()
    assert sorted(os.listdir(tmp_path)) == ["in"]  # no staging folder left behind either


def test_ctc_seg_names_the_result_and_accepts_the_seg_folder(tmp_path):
    gt = np.zeros((4, 16, 16), np.uint16)
    gt[1:3, 2:6, 2:6] = 1
    run = ctc_pair(tmp_path, gt, np.zeros((4, 16, 15), np.uint16))
    assert_one_line_error(run, "man_seg000.tif", "differs from the result's (4, 16, 15)",
                          "mask000.tif")
    write(str(tmp_path / "RES" / "mask000.tif"), gt)
    run = run_tool("ctc_seg.py", tmp_path / "RES", tmp_path / "GT" / "SEG", "--verbose")
    assert run.returncode == 0 and "SEG measure: 1.000000" in run.stdout, run.stderr
    assert "reference objects" in run.stdout.splitlines()[0]
    assert_one_line_error(run_tool("ctc_seg.py", tmp_path / "RES", tmp_path / "NO_GT"),
                          "NO_GT: no such folder")


def test_eval_only_without_config_file_and_with_weights_of_another_model(
    tmp_path, weights, tiny_dataset):
    run = run_tool("train_net.py", "--eval-only", "MODEL.WEIGHTS", weights / "mlp.pth",
                   datasets=tmp_path)
    assert_one_line_error(run, "no --config-file given", "config.yaml")
    (weights / "config.yaml").write_text("# saved beside the weights by training\n")
    run = run_tool("train_net.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                   "--eval-only",
                   *TINY_MODEL, "INPUT.NUM_SLICES", "3", "DATASETS.TEST", "('TINY_02',)",
                   "MODEL.WEIGHTS",
                   weights / "other.pth", "OUTPUT_DIR", tmp_path / "out",
                   datasets=os.path.dirname(tiny_dataset))
    assert_one_line_error(run, "other.pth", "in the checkpoint", str(weights / "config.yaml"))
    assert len((run.stdout + run.stderr).splitlines()) < 5  # no environment or model listing first


def test_debug_is_listed_in_every_help():
    for name in ("train_net.py", "predict.py", "calibrate_linking.py", "ctc_seg.py", "ctc_det.py",
                 "visualize.py",
                 "make_synthetic.py", "benchmark.py"):
        run = run_tool(name, "--help")
        assert run.returncode == 0 and "--debug" in run.stdout, name


def test_visualize_checks_every_input_before_drawing(tmp_path, weights):
    raw = stack(tmp_path / "raw.tif", depth=10)
    write(str(tmp_path / "flat.tif"), np.zeros((64, 64), np.uint16))
    write(str(tmp_path / "short.tif"), np.zeros((9, 64, 64), np.uint16))
    cases = [(["--pred", tmp_path / "flat.tif"], "flat.tif"),
             (["--gt", tmp_path / "short.tif"], "short.tif"),
             (["--voxel-size", "0", "0", "0"], "--voxel-size")]
    for extra, fragment in cases:
        run = run_tool("visualize.py", "volume", "--raw", raw, "--out", tmp_path / "pics", *extra)
        assert run.returncode != 0 and fragment in run.stderr, run.stderr
        assert not (tmp_path / "pics").exists()
    (tmp_path / "log.txt").write_text("[11/30 03:00:00 d2.engine]: Starting training\n")
    run = run_tool("visualize.py", "curves", "--metrics", tmp_path / "log.txt", "--out",
                   tmp_path / "c.png")
    assert_one_line_error(run, "log.txt", "metrics.json")
    assert not (tmp_path / "c.png").exists()
    run = run_tool("visualize.py", "fusion", "--config-file",
                   os.path.join(CONFIGS, "mlp_fusion.yaml"), "--raw", raw,
                   "--out", tmp_path / "f.png", *TINY_MODEL, "INPUT.NUM_SLICES", "3")
    assert_one_line_error(run, "MODEL.WEIGHTS is empty")
    (tmp_path
     / "metrics.json").write_text(
         '{"iteration": 0, "total_loss": 2.0}\n{"iteration": 9, "total_loss": 1.0}\n')
    run = run_tool("visualize.py", "curves", "--metrics", tmp_path / "metrics.json", "--out",
                   tmp_path / "new" / "folder" / "c.png")
    assert run.returncode == 0 and (tmp_path / "new" / "folder"
                                    / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_a_label_image_is_refused_as_input(tmp_path, weights):
    labels = np.zeros((4, 64, 64), np.uint16)
    labels[:, 8:30, 8:30], labels[1:3, 36:60, 30:50] = 1, 2
    write(str(tmp_path / "seq" / "man_seg000.tif"), labels)
    stack(tmp_path / "seq" / "raw.tif")
    run = predict(weights / "mlp.pth", tmp_path / "seq", tmp_path / "out")
    assert_one_line_error(run, "man_seg000.tif", "looks like a label image")
    assert not (tmp_path / "out").exists()
