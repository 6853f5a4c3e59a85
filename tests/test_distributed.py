"""Two processes on the CPU (gloo) lose or double nothing, and calibrate the linking as one; the
same seed gives the same run."""
import json
import os

from helpers import CONFIGS, TINY_MODEL
from test_engine import tool

COMMON = [*TINY_MODEL, "DATASETS.TRAIN", "('TINY_01',)", "DATASETS.TEST", "('TINY_02',)",
          "INPUT.NUM_SLICES", "3",
          "SOLVER.IMS_PER_BATCH", "2", "SOLVER.BASE_LR", "0.001", "SOLVER.WARMUP_ITERS", "2",
          "SOLVER.STEPS", "()",
          "SOLVER.MAX_ITER", "6", "TEST.CTC.COCO_AP", "False", "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
          "0.05",
          "TEST.CTC.SCORE_THRESHOLD", "0.05", "DATASETS.VAL", "('TINY_01_val',)",
          "DATASETS.SPLIT.GAP", "1",
          "TEST.CTC.CALIBRATE_LINKING", "True"]
CONFIG = os.path.join(CONFIGS, "mlp_fusion.yaml")


def ctc_metrics(output):
    with open(os.path.join(output, "inference", "TINY_02", "ctc_metrics.json")) as f:
        return json.load(f)


def test_two_processes_evaluate_like_one(tiny_dataset, tmp_path):
    two = str(tmp_path / "two")
    tool("train_net.py", "--config-file", CONFIG, "--num-gpus", "2", *COMMON, "OUTPUT_DIR", two,
         dataset_root=tiny_dataset, timeout=600)
    one = str(tmp_path / "one")
    tool("train_net.py", "--config-file", CONFIG, "--eval-only", *COMMON, "MODEL.WEIGHTS",
         os.path.join(two, "model_final.pth"), "OUTPUT_DIR", one, dataset_root=tiny_dataset,
         timeout=600)
    distributed, single = ctc_metrics(two), ctc_metrics(one)
    assert distributed["num_volumes"] == single["num_volumes"] == 3
    assert distributed["num_pred"] == single["num_pred"] > 0
    for key in ("SEG", "SEG_2D", "DET", "OP_CSB", "volume_AP", "precision", "recall", "count_error",
                "num_gt"):
        assert distributed[key] == single[key], key
    res_two, res_one = (os.path.join(out, "inference", "TINY_02", "02_RES") for out in (two, one))
    assert sorted(os.listdir(res_two)) == ["mask000.tif", "mask001.tif", "mask002.tif",
                                           "res_track.txt"]
    for name in sorted(
        os.listdir(res_two)):  # labels unique over the sequence, whichever rank wrote a frame
        with open(os.path.join(res_two, name), "rb") as a, open(os.path.join(res_one, name),
                                                                "rb") as b:
            assert a.read() == b.read(), name
    with open(os.path.join(two, "linking.json")) as f:
        calibration = json.load(f)
    assert calibration["volumes"] == 1  # the one TINY_01_val volume, gathered, not doubled
    with open(os.path.join(one, "config.yaml")) as f:
        assert f"LINKING: {calibration['choice']['LINKING']}" in f.read()


def test_same_seed_same_metrics(tiny_dataset, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        tool("train_net.py", "--config-file", CONFIG, *COMMON, "SEED", "7", "OUTPUT_DIR", out,
             dataset_root=tiny_dataset, timeout=600)
        with open(os.path.join(out, "metrics.json")) as f:
            losses = [json.loads(line).get("total_loss") for line in f]
        runs.append((ctc_metrics(out), losses))
    (m1, l1), (m2, l2) = runs
    assert l1 == l2
    assert m1 == m2
