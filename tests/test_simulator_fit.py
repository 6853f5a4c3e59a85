"""The generator fitted to annotated data (tools/make_synthetic.py --like): a synthetic "real"
dataset of known, non-default image formation is measured and reproduced within tolerance."""
import json
import os
from dataclasses import replace

import numpy as np
import pytest

from emr_d2.data.ctc import CTCFormatError
from emr_d2.data.simulator_fit import (TOLERANCE, AnnotatedStacks, measure, misfit,
                                       read_annotated, render, statistics_table)
from emr_d2.data.synthetic import PRESETS, write_synthetic_dataset

from test_bad_input import assert_one_line_error, run_tool, write

# Flat nuclei whose widest slice is the first (a stack of the upper halves of nuclei on a
# coverslip, as the CHO sample), more haze, less dimming and a lower reference cut than aniso.
REAL = replace(PRESETS["aniso"], field_um=(6.0, 40.0, 40.0), scale=1.0, z_scale=1.0,
               native_voxel_um=(1.0, 0.4, 0.4), frames={"01": 8, "02": 2}, num_nuclei=5,
               radius_um=5.0, centre_z=(0.0, 0.15), haze_fraction=0.15, axial_brightness_sigma=0.3,
               reference_min_signal=0.12, photons=1200.0, bleaching=0.2)


@pytest.fixture(scope="module")
def real_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    write_synthetic_dataset(str(root / "REAL"), REAL, seed=7)
    return root


def test_the_fitted_generator_reproduces_every_statistic_within_tolerance(real_like):
    out = real_like / "FIT"
    run = run_tool("make_synthetic.py", "--like", real_like / "REAL" / "01", "--out", out,
                   "--evaluations", "60", "--frames", "6")
    assert run.returncode == 0, run.stderr[-2000:]
    fit = json.loads((out / "fit.json").read_text())
    assert len(read_annotated(str(real_like / "REAL")).pairs) == 10  # both sequences
    real = measure(read_annotated(str(real_like / "REAL" / "01")))  # the first only
    assert fit["real"] == pytest.approx(real, nan_ok=True)
    assert real["widest_z"] < 0.1 and real["nuclei"] >= 4  # the target is not the start preset's
    errors = misfit(fit["generated"], fit["real"])
    assert set(errors) == set(TOLERANCE) and max(errors.values()) <= 1.0, errors
    assert fit["generated"] == pytest.approx(measure(read_annotated(str(out))), nan_ok=True)
    assert fit["preset"]["native_voxel_um"] == [1.0, 0.4, 0.4]
    assert "| area_2 |" in run.stdout and (out / "fit.md").read_text().count("| yes |") == len(
        TOLERANCE)
    assert sorted(os.listdir(out / "01")) == [f"t{t:03d}.tif" for t in range(6)]


def test_the_fit_measures_the_dataset_it_writes(tmp_path):
    """Each candidate of the fit is measured on every frame of the dataset it would write. Nuclei
    divide along a sequence: a fit that measured frames 0-1 only saw fewer nuclei than it wrote
    (on CHO 9 per stack against 11)."""
    dividing = replace(REAL, field_um=(6.0, 60.0, 60.0), num_nuclei=12, division_rate=0.1,
                       frames={"01": 10, "02": 4})
    write_synthetic_dataset(str(tmp_path / "D"), dividing, seed=3)
    written = read_annotated(str(tmp_path / "D"))
    rendered = render(dividing, seed=3).pairs
    assert len(rendered) == 14 and all(np.array_equal(a, b) for pair, other in
                                       zip(rendered, written.pairs) for a, b in zip(pair, other))
    whole = measure(written)["nuclei"]
    first_frames = measure(AnnotatedStacks(written.pairs[:2], written.voxel_um))["nuclei"]
    assert abs(first_frames - whole) > TOLERANCE["nuclei"] * whole


def test_a_generator_far_from_the_target_is_reported_outside_tolerance(real_like):
    real = measure(read_annotated(str(real_like / "REAL")))
    start = write_synthetic_dataset(str(real_like / "START"), replace(
        PRESETS["aniso"], field_um=(6.0, 40.0, 40.0), scale=1.0, z_scale=1.0,
        native_voxel_um=(1.0, 0.4, 0.4), frames={"01": 4}, num_nuclei=5), seed=0)
    assert start.voxel_um == (1.0, 0.4, 0.4)
    generated = measure(read_annotated(str(real_like / "START")))
    assert "| no |" in statistics_table(real, generated)


def test_stacks_with_masks_are_read_and_bad_input_is_one_line(tmp_path, real_like):
    raw = np.random.default_rng(0).integers(0, 100, (4, 16, 16)).astype(np.uint16)
    write(str(tmp_path / "data" / "images" / "a.tif"), raw)
    with pytest.raises(CTCFormatError, match="masks/a.tif: not found"):
        read_annotated(str(tmp_path / "data"), (1.0, 0.2, 0.2))
    write(str(tmp_path / "data" / "masks" / "a.tif"), np.zeros((4, 16, 16), np.uint16))
    stacks = read_annotated(str(tmp_path / "data"), (1.0, 0.2, 0.2))
    assert isinstance(stacks, AnnotatedStacks) and stacks.shape == (4, 16, 16)
    with pytest.raises(CTCFormatError, match="unknown voxel size"):
        read_annotated(str(tmp_path / "data"))

    assert_one_line_error(run_tool("make_synthetic.py", "--like", tmp_path / "nosuch", "--out",
                                   tmp_path / "o1"), "nosuch: no such folder")
    assert_one_line_error(run_tool("make_synthetic.py", "--like", tmp_path, "--out",
                                   tmp_path / "o2"), "no raw stack with a full-volume reference")
    zero = run_tool("make_synthetic.py", "--like", real_like / "REAL", "--out", tmp_path / "o3",
                    "--voxel-size", "0", "0.4", "0.4")
    assert zero.returncode == 2 and "argument --voxel-size: takes three positive numbers" in (
        zero.stderr.strip().splitlines()[-1])
    assert_one_line_error(run_tool("make_synthetic.py", "--like", real_like / "REAL", "--out",
                                   real_like / "REAL"), "exists and is not empty", "--overwrite")
    assert_one_line_error(run_tool("make_synthetic.py", "--like", real_like / "REAL", "--out",
                                   tmp_path / "o4", "--frames", "0"), "--frames must be at least 1")
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3", "o4"))
