"""The benchmark's peers (benchmarks/peers): each adapter trains briefly on the tiny dataset in its
own environment, predicts, and is scored into the same results.csv as emr_d2's configs. Skipped
when `make peers` was not run, unless EMR_D2_REQUIRE_PEERS=1."""
import csv
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT

RUN_PEERS = os.path.join(ROOT, "benchmarks", "peers", "run_peers.py")
CEILING = os.path.join(ROOT, "benchmarks", "peers", "star_convex_ceiling.py")
PEERS_ROOT = os.environ.get("EMR_D2_PEERS", os.path.join(ROOT, ".peers"))
REQUIRED = os.environ.get("EMR_D2_REQUIRE_PEERS") == "1"
SPLIT = ["DATASETS.SPLIT.GAP", "1"]  # TINY_01's 6 frames: 4 train, 1 val


def run_peers(dataset_root: str, out: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EMR_DATASETS=os.path.dirname(dataset_root), PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, RUN_PEERS, "--datasets", "TINY", "--output", out,
                           "--threads", "2", "--patch-px", "64",
                           *args, *SPLIT], env=env, cwd=ROOT, capture_output=True, text=True)


def fake_cellpose_env(dataset_root: str, tmp_path) -> dict:
    """An environment whose "cellpose" peer is this Python (for the checks before any peer runs)."""
    fake = tmp_path / "peers" / "cellpose" / "bin"
    fake.mkdir(parents=True)
    os.symlink(sys.executable, fake / "python")
    return dict(os.environ, EMR_DATASETS=os.path.dirname(dataset_root),
                EMR_D2_PEERS=str(tmp_path / "peers"))


def require_env(name: str) -> None:
    if not os.path.isfile(os.path.join(PEERS_ROOT, name, "bin", "python")):
        if REQUIRED:
            pytest.fail(
                f"EMR_D2_REQUIRE_PEERS=1 but {PEERS_ROOT}/{name} is missing: run `make peers`")
        pytest.skip(f"the peers are not installed ({PEERS_ROOT}/{name}): run `make peers`")


@pytest.mark.parametrize(
    "peer,env,budget_s", [("classical", "cellpose", None), ("cellpose", "cellpose", "40"),
    ("stardist3d", "stardist", "40")])
def test_peer_trains_predicts_and_is_scored(tiny_dataset, tmp_path, peer, env, budget_s):
    """budget_s: --time-budget-s of the learned peers (the classical one does not train)."""
    require_env(env)
    out = str(tmp_path / "out")
    budget = ["--time-budget-s", budget_s] if budget_s else []
    run = run_peers(tiny_dataset, out, "--peers", peer, "--seeds", "1", *budget)
    assert run.returncode == 0, run.stdout + run.stderr
    run_dir = os.path.join(out, "TINY", f"peer_{peer}", "seed0")
    for settings in ("default", "calibrated"):
        assert sorted(os.listdir(os.path.join(run_dir, f"RES_{settings}"))) == [
            f"mask{t:03d}.tif" for t in range(3)]
    with open(os.path.join(out, "TINY", "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["config"] for r in rows] == [f"peer/{peer}"]
    row = rows[0]
    for column in ("SEG", "SEG_calibrated", "DET", "OP_CSB_calibrated", "SEG_core", "SEG_poles"):
        assert 0.0 <= float(row[column]) <= 1.0, column
    assert row["linking"] and math.isnan(float(row["volume_AP"]))
    with open(os.path.join(run_dir, "peer.json")) as f:
        record = json.load(f)
    if peer == "classical":
        # Clean, well-separated tiny nuclei: a threshold and a watershed chosen on val find them.
        assert float(row["SEG_calibrated"]) > 0.5 and float(row["DET_calibrated"]) > 0.8
    else:
        assert record["epochs"] >= 2
        assert record["loss_last_epoch"] < record["loss_first_epoch"], record
    if peer == "cellpose":  # both modes are tried on val at equal time too, the better one kept
        assert record["val_SEG"] == max(record["val_SEG_stitch"], record["val_SEG_3d"]), record
        assert ("mode 3d" in row["linking"]) == (record["val_SEG_3d"] > record["val_SEG_stitch"])
    written = os.path.getmtime(os.path.join(run_dir, "peer.json"))
    again = run_peers(tiny_dataset, out, "--peers", peer, "--seeds", "1", *budget)
    assert again.returncode == 0 and f"peer/{peer} seed 0: SEG" in again.stdout
    assert os.path.getmtime(
        os.path.join(run_dir, "peer.json")) == written  # read back, not run again


def test_missing_peer_environment_is_one_line(tiny_dataset, tmp_path):
    env = dict(os.environ, EMR_DATASETS=os.path.dirname(tiny_dataset),
               EMR_D2_PEERS=str(tmp_path / "none"))
    run = subprocess.run([sys.executable, RUN_PEERS, "--datasets", "TINY", "--peers", "cellpose",
                          "--output",
                          str(tmp_path / "out"), *SPLIT], env=env, cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "run `make peers` first" in run.stderr and "Traceback" not in run.stderr


def test_equal_time_needs_emr_d2_rows(tiny_dataset, tmp_path):
    """Without --time-budget-s, equal time is that of the emr_d2 runs in the table: none, one line.
    """
    env = fake_cellpose_env(tiny_dataset, tmp_path)
    run = subprocess.run([sys.executable, RUN_PEERS, "--datasets", "TINY", "--peers", "cellpose",
                          "--output",
                          str(tmp_path / "out"), *SPLIT], env=env, cwd=ROOT, capture_output=True,
                         text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "has no emr_d2 run to match the training time of" in run.stderr.strip().splitlines()[-1]


def test_unknown_dataset_is_one_line(tiny_dataset, tmp_path):
    env = fake_cellpose_env(tiny_dataset, tmp_path)
    run = subprocess.run([sys.executable, RUN_PEERS, "--datasets", "NOSUCH", "--peers", "classical",
                          "--output",
                          str(tmp_path / "out")], env=env, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "dataset 'NOSUCH_01' is not registered" in run.stderr.strip().splitlines()[-1]


def test_star_convex_ceiling(tiny_dataset, tmp_path):
    """The tiny preset's round nuclei redrawn as 96-ray polyhedra score close to the reference,
    as 6-ray ones do not; each number of rays writes a result folder; an existing output folder
    and a missing reference folder are refused in one line."""
    require_env("stardist")
    with open(os.path.join(tiny_dataset, "voxel_size.json")) as f:
        voxel = [str(v) for v in json.load(f)["zyx_um"]]
    out = str(tmp_path / "ceiling")

    def ceiling(gt: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([os.path.join(PEERS_ROOT, "stardist", "bin", "python"), CEILING, gt,
                               out, "--voxel-size", *voxel, *args],
                              capture_output=True, text=True, cwd=ROOT)

    run = ceiling(os.path.join(tiny_dataset, "02_GT"), "--rays", "6", "96")
    assert run.returncode == 0, run.stdout + run.stderr
    seg = {int(n): float(s) for n, s in re.findall(r"(\d+) rays: SEG ([\d.]+)", run.stdout)}
    assert seg[96] > 0.7 and seg[96] > seg[6] + 0.1, seg
    assert sorted(os.listdir(os.path.join(out, "rays96"))) == [f"mask{t:03d}.tif" for t in range(3)]
    with open(os.path.join(out, "ceiling.csv")) as f:
        assert {int(r["rays"]): round(float(r["SEG"]), 3) for r in csv.DictReader(f)} == seg
    for gt, message in ((os.path.join(tiny_dataset, "02_GT"), "exists and is not empty"),
                        (str(tmp_path / "nowhere"), "no such folder")):
        again = ceiling(gt, "--rays", "96")
        assert again.returncode != 0 and "Traceback" not in again.stderr
        assert message in again.stderr.strip().splitlines()[-1]


def test_star_convex_ceiling_outside_the_stardist_environment_is_one_line(tiny_dataset, tmp_path):
    if importlib.util.find_spec("stardist"):
        pytest.skip("stardist is installed in the test environment itself")
    run = subprocess.run([sys.executable, CEILING, os.path.join(tiny_dataset, "02_GT"),
                          str(tmp_path / "out"), "--voxel-size", "1", "1", "1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert ".peers/stardist/bin/python" in run.stderr.strip().splitlines()[-1]
