"""Linking calibration: the best grid point wins, only DATASETS.VAL is read, and the choice is
applied to the model it belongs to."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

from emr_d2.calibration import (LINKING_FILE, PastedVolume, apply_calibrated_linking,
                                calibrate_linking,
                                choose_linking, linking_grid)
from emr_d2.data.catalog import register_ctc_dataset
from emr_d2.linking import SlicePrediction, paste_volume

from helpers import tiny_cfg


def stacked_discs():
    """Object 1 in slices 0-4 and object 2 in slices 5-9, the same disc shifted by 4 px: the two
    touch along z with an IoU of about 0.6 between slices 4 and 5."""
    y, x = np.mgrid[:48, :48]
    gt = np.zeros((10, 48, 48), np.uint16)
    gt[:5][:, (y - 24) ** 2 + (x - 22) ** 2 <= 100] = 1
    gt[5:][:, (y - 24) ** 2 + (x - 26) ** 2 <= 100] = 2
    return gt


def per_slice(labels):
    for z in range(labels.shape[0]):
        ids = [i for i in np.unique(labels[z]) if i]
        yield z, SlicePrediction(np.stack([labels[z] == i for i in ids]), np.full(len(ids), 0.9))


def test_calibration_picks_the_only_linking_that_separates_touching_objects():
    gt = stacked_discs()
    volume = PastedVolume("v", paste_volume(per_slice(gt), gt.shape), gt, None)
    grid = [dict(strategy=s, threshold=t, look_back=0, min_slices=1, split_depth=0.0)
            for s in ("iou", "overlap") for t in (0.3, 0.5, 0.7)]
    grid.append(
        dict(strategy="connected", threshold=0.0, look_back=0, min_slices=1, split_depth=0.0))
    best, table = choose_linking([volume], grid, fill_gaps=True)
    assert best == dict(strategy="iou", threshold=0.7, look_back=0, min_slices=1, split_depth=0.0)
    seg = {(row["strategy"], row["threshold"]): row["SEG"] for row in table}
    assert seg[("iou", 0.7)] == 1.0
    assert seg[("iou", 0.3)] < 0.6 and seg[("connected", 0.0)] < 0.6
    assert seg[("overlap", 0.7)] < 1.0  # the smaller-area overlap of the shifted discs is above 0.7


def test_grid_covers_linkers_thresholds_look_backs_and_minimum_lengths():
    cfg = tiny_cfg("baseline_2d", 1, freeze=False)
    grid = linking_grid(cfg)
    assert len(grid) == 4 * (2 * 9 * 3 * 3 + 3)  # four split depths by default
    assert dict(strategy="overlap", threshold=0.9, look_back=2, min_slices=3,
                split_depth=0.0) in grid


@pytest.fixture
def broken_test_dataset(tiny_dataset, tmp_path):
    """A copy of the tiny dataset registered as BROKEN_*, whose sequence 02 is unreadable."""
    root = tmp_path / "BROKEN"
    shutil.copytree(tiny_dataset, root)
    register_ctc_dataset(str(root), "BROKEN")
    for name in os.listdir(root / "02"):
        (root / "02" / name).write_bytes(b"not a tiff")
    return str(root)


def test_calibration_reads_only_the_validation_data(broken_test_dataset, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion",
                   3, ["DATASETS.VAL", "('BROKEN_01_val',)", "DATASETS.TEST", "('BROKEN_02',)",
                                     "DATASETS.SPLIT.GAP", "1",
                                     "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                       "TEST.CTC.SCORE_THRESHOLD", "0.0",
                                     "TEST.CTC.CALIBRATION.THRESHOLDS", "[0.3, 0.6]",
                                     "TEST.CTC.CALIBRATION.LOOK_BACKS", "[1]"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        result = calibrate_linking(cfg, model, str(tmp_path))
    saved = json.load(open(tmp_path / LINKING_FILE))
    assert saved["choice"] == result["choice"] and saved["validation"] == ["BROKEN_01_val"]
    assert saved["volumes"] >= 1 and len(saved["table"]) == 4 * (
        2 * 2 * 3 + 3)  # x four split depths
    assert all(0.0 <= row["SEG"] <= 1.0 for row in saved["table"])
    assert result["SEG"] == max(row["SEG"] for row in saved["table"] + [saved["default"]])


def test_calibrated_linking_beside_the_weights_is_applied_unless_overridden(tmp_path):
    weights = tmp_path / "model_final.pth"
    weights.write_bytes(b"")
    choice = {"LINKING": "overlap", "LINK_THRESHOLD": 0.8, "LOOK_BACK": 2, "MIN_SLICES": 3}
    (tmp_path / LINKING_FILE).write_text(json.dumps({"choice": choice}))
    cfg = tiny_cfg("baseline_2d", 1, ["MODEL.WEIGHTS", str(weights)], freeze=False)
    assert (cfg.TEST.CTC.LINKING, cfg.TEST.CTC.LINK_THRESHOLD,
            cfg.TEST.CTC.MIN_SLICES) == ("overlap", 0.8, 3)
    cfg = tiny_cfg("baseline_2d",
                   1, ["MODEL.WEIGHTS", str(weights), "TEST.CTC.LINK_THRESHOLD", "0.4"],
                   freeze=False)
    assert (cfg.TEST.CTC.LINKING, cfg.TEST.CTC.LINK_THRESHOLD) == ("overlap", 0.4)
    cfg = tiny_cfg("baseline_2d",
                   1, ["MODEL.WEIGHTS", str(weights), "TEST.CTC.USE_CALIBRATED_LINKING", "False"],
                   freeze=False)
    assert cfg.TEST.CTC.LINKING == "iou"
    assert apply_calibrated_linking(cfg) is None


def test_calibration_without_validation_data_fails_at_setup():
    with pytest.raises(ValueError, match="DATASETS.VAL"):
        tiny_cfg("baseline_2d", 1, ["TEST.CTC.CALIBRATE_LINKING", "True", "DATASETS.VAL", "()"])


def test_calibration_can_choose_the_shape_split():
    from test_linking import stacked_nuclei

    gt = stacked_nuclei()
    volume = PastedVolume("v", paste_volume(per_slice(gt), gt.shape), gt, None)
    grid = [dict(strategy="overlap", threshold=0.3, look_back=1, min_slices=1, split_depth=d)
            for d in (0.0, 0.25)]
    best, table = choose_linking([volume], grid, fill_gaps=True)
    assert best["split_depth"] == 0.25 and [row["SEG"]
                                            for row in table] == [pytest.approx(0.5, abs=0.1), 1.0]
    cfg = tiny_cfg("baseline_2d", 1, ["TEST.CTC.CALIBRATION.SPLIT_DEPTHS", "[0.0, 0.25]"],
                   freeze=False)
    assert len(linking_grid(cfg)) == 2 * (2 * 9 * 3 * 3 + 3)
