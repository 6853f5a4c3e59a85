"""benchmarks/seg_loss.py: 1 - SEG split by where each reference object loses its voxels."""

import csv
import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from emr_d2.evaluation.seg import SEGAccumulator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def seg_loss():
    """benchmarks/seg_loss.py as a module (conftest undoes the EMR_D2_NO_REGISTER it sets)."""
    return importlib.import_module("seg_loss")


def nucleus_volume() -> tuple[np.ndarray, np.ndarray]:
    """A (5, 20, 20) reference with two objects and a result that (object 1) leaves its last
    slice empty and paints one slice beyond its first, and (object 2) misses it entirely."""
    gt = np.zeros((5, 20, 20), np.uint16)
    gt[0:4, 2:10, 2:10] = 1  # slices 0-3, widest 1 (larger), end slices 0 and 3
    gt[1, 1:11, 1:11] = 1
    gt[1:3, 12:18, 12:18] = 2
    res = np.zeros_like(gt)
    res[0:3, 2:10, 2:10] = 7  # slice 3 left empty
    res[1, 1:11, 1:11] = 7
    res[4, 3:9, 3:9] = 7  # beyond the reference (slice 4: object 1 absent there)
    res[1:3, 12:18, 12:14] = 9  # a third of object 2: not matched
    return gt, res


def test_the_places_add_up_to_one_minus_seg_and_are_where_the_voxels_were_lost(seg_loss):
    gt, res = nucleus_volume()
    table = seg_loss.loss_table(seg_loss.object_planes(gt, res))
    accumulator = SEGAccumulator()
    accumulator.add("0", gt, res)
    assert np.isclose(1 - sum(t["loss"] for t in table.values()),
                      accumulator.summary()["SEG"])
    union = 292 + 264 - 228  # object 1: reference 292 voxels, result 264, overlap 228
    assert np.isclose(table["end"]["loss"], 64 / union / 2)  # slice 3 empty; slice 0 exact
    assert np.isclose(table["outside"]["loss"], 36 / union / 2)
    assert np.isclose(table["outside"]["over"], table["outside"]["loss"])
    assert table["end"]["over"] == 0  # the end's loss is the empty slice 3: nothing beyond
    assert table["widest"]["loss"] == table["inner"]["loss"] == 0
    assert table["missed"]["loss"] == 0.5 and table["missed"]["planes"] == 1
    assert table["end"]["empty"] == 0.5 and table["end"]["iou"] == 0.5
    assert table["widest"]["iou"] == 1 and table["widest"]["area_median"] == 1


def test_the_tool_reads_ctc_folders_and_names_a_missing_frame(tmp_path):
    gt, res = nucleus_volume()
    (tmp_path / "02_GT" / "SEG").mkdir(parents=True)
    (tmp_path / "02_RES").mkdir()
    tifffile.imwrite(tmp_path / "02_GT" / "SEG" / "man_seg000.tif", gt)
    script = os.path.join(ROOT, "benchmarks", "seg_loss.py")
    missing = subprocess.run([sys.executable, script, str(tmp_path / "02_RES"),
                              str(tmp_path / "02_GT")], capture_output=True, text=True)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / '02_RES' / 'mask000.tif'}: result frame missing "
        "(run with --debug for the traceback)"]
    tifffile.imwrite(tmp_path / "02_RES" / "mask000.tif", res)
    table = tmp_path / "loss.csv"
    args = [sys.executable, script, str(tmp_path / "02_RES"), str(tmp_path / "02_GT"), "--csv",
            str(table)]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "SEG = 0.3476" in done.stdout and "| outside | 1 |" in done.stdout
    row = next(csv.DictReader(open(table)))
    assert np.isclose(float(row["SEG"]), 228 / 328 / 2) and row["missed_planes"] == "1"
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode != 0 and str(table) in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
