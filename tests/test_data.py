"""CTC layout, catalog and splits, slice records and their cache, the synthetic generator."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from detectron2.data import DatasetCatalog, MetadataCatalog
from scipy import ndimage

from emr_d2.data import slices as slices_module
from emr_d2.data.catalog import register_ctc_dataset
from emr_d2.data.ctc import CTCFormatError, list_frames, list_gt, read_gt_frame, read_raw_volume
from emr_d2.data.slices import load_sequence_records, split_frames
from emr_d2.data.synthetic import write_synthetic_dataset

from conftest import TINY_PRESET
from helpers import ROOT


def test_make_synthetic_registers_with_detectron2_and_passes_py_ctcmetrics(tmp_path):
    datasets = tmp_path / "datasets"
    out = datasets / "SIM-demo"
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_synthetic.py"), "--out",
                    str(out),
                    "--frames", "3", "--scale", "0.25"], check=True, capture_output=True)
    code = ("import emr_d2; from detectron2.data import DatasetCatalog as C; "
            "print(sorted(n for n in C.list() if n.startswith('SIM-demo')))")
    env = dict(os.environ, EMR_DATASETS=str(datasets))
    names = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                           text=True).stdout.strip()
    assert names == str(
        sorted(f"SIM-demo_{s}{p}" for s in ("01", "02") for p in ("", "_train", "_val")))

    assert py_ctcmetrics_seg_of_reference(out, tmp_path) == pytest.approx(1.0)


def py_ctcmetrics_seg_of_reference(dataset, tmp_path) -> float:
    """py-ctcmetrics' SEG of sequence 01's reference as the result (a copy in tmp_path/01_RES)."""
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    res = tmp_path / "01_RES"
    res.mkdir()
    for name in os.listdir(dataset / "01_GT" / "SEG"):
        shutil.copy(dataset / "01_GT" / "SEG" / name, res / name.replace("man_seg", "mask"))
    return evaluate_sequence(str(res), str(dataset / "01_GT"), metrics=["SEG"], threads=1)["SEG"]


def test_synthetic_is_deterministic_and_time_coherent(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        write_synthetic_dataset(str(out), TINY_PRESET, seed=3, frames=3)
    for rel in ("01/t002.tif", "01_GT/SEG/man_seg002.tif", "01_GT/TRA/man_track.txt"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    raw = tifffile.imread(a / "01" / "t000.tif")
    assert raw.dtype == np.uint16 and raw.shape == TINY_PRESET.shape
    labels = [tifffile.imread(a / "01_GT" / "SEG" / f"man_seg{t:03d}.tif") for t in range(3)]
    inside, outside = raw[labels[0] > 0].mean(), raw[labels[0] == 0].mean()
    assert inside > outside + 100  # nuclei are brighter than the camera offset
    shared = set(np.unique(labels[0])) & set(np.unique(labels[1])) - {0}
    assert shared
    for label in shared:  # identities persist and objects move little between frames
        m0, m1 = labels[0] == label, labels[1] == label
        assert (m0 & m1).sum() / (m0 | m1).sum() > 0.3
    tracks = np.loadtxt(a / "01_GT" / "TRA" / "man_track.txt", dtype=int, ndmin=2)
    assert set(tracks[:, 0]) == set(np.unique(np.concatenate([np.unique(x) for x in labels]))) - {0}


def test_ctc_layout_and_errors(tmp_path):
    seq = tmp_path / "01"
    seq.mkdir()
    tifffile.imwrite(seq / "t000.tif", np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    tifffile.imwrite(seq / "t0001.tif", np.zeros((4, 8, 8), np.uint16), photometric="minisblack")
    tifffile.imwrite(seq / "t002.tif", np.zeros((8, 8), np.uint16))
    assert sorted(list_frames(str(seq))) == [0, 1, 2]
    with pytest.raises(CTCFormatError, match="t002.tif: expected a 3D stack"):
        read_raw_volume(str(seq / "t002.tif"))
    (seq / "t003.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(CTCFormatError, match="t003.tif: unreadable TIFF"):
        read_raw_volume(str(seq / "t003.tif"))
    nan = np.zeros((2, 4, 4), np.float32)
    nan[0, 0, 0] = np.nan
    tifffile.imwrite(seq / "t004.tif", nan, photometric="minisblack")
    with pytest.raises(CTCFormatError, match="NaN or Inf"):
        read_raw_volume(str(seq / "t004.tif"))


def test_slice_wise_reference(tmp_path):
    seg = tmp_path / "01_GT" / "SEG"
    seg.mkdir(parents=True)
    plane = np.zeros((8, 8), np.uint16)
    plane[2:5, 2:5] = 7
    tifffile.imwrite(seg / "man_seg_000_002.tif", plane)
    tifffile.imwrite(seg / "man_seg000.tif".replace("000", "001"), np.zeros((4, 8, 8), np.uint16),
                     photometric="minisblack")
    frames = list_gt(str(seg))
    assert not frames[0].is_3d and frames[1].is_3d
    labels, annotated = read_gt_frame(frames[0], (4, 8, 8))
    assert annotated == [2] and labels[2, 3, 3] == 7 and labels.sum() == 7 * 9
    with pytest.raises(CTCFormatError, match="differs from the raw frame"):
        read_gt_frame(frames[1], (5, 8, 8))


def test_records_hold_rle_annotations_of_the_reference(registered_tiny):
    records = DatasetCatalog.get("TINY_01")
    depth, height, width = TINY_PRESET.shape
    assert len(records) == 6 * depth
    record = next(r for r in records if len(r["annotations"]) >= 2)
    gt = tifffile.imread(
        os.path.join(registered_tiny, "01_GT", "SEG", f"man_seg{record['frame']:03d}.tif"))
    import pycocotools.mask as mask_util

    for ann in record["annotations"]:
        mask = mask_util.decode(ann["segmentation"]).astype(bool)
        assert np.array_equal(mask, gt[record["z"]] == ann["instance_id"])
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                ys.max() - ys.min() + 1)
    metadata = MetadataCatalog.get("TINY_01")
    assert metadata.thing_classes == ["nucleus"] and metadata.evaluator_type == "ctc"
    assert metadata.voxel_size == pytest.approx(TINY_PRESET.voxel_um)


def test_empty_slices_are_kept(tmp_path):
    (tmp_path / "01").mkdir()
    (tmp_path / "01_GT" / "SEG").mkdir(parents=True)
    labels = np.zeros((3, 8, 8), np.uint16)
    labels[1:, 2:5, 2:5] = 4
    tifffile.imwrite(tmp_path / "01" / "t000.tif", np.ones((3, 8, 8), np.uint16),
                     photometric="minisblack")
    tifffile.imwrite(tmp_path / "01_GT" / "SEG" / "man_seg000.tif", labels,
                     photometric="minisblack")
    records = load_sequence_records(str(tmp_path), "01", cache_dir=str(tmp_path / "cache"))
    assert [len(r["annotations"]) for r in records] == [0, 1, 1]
    assert [r["annotated"] for r in records] == [True, True, True]


def test_index_cache_reads_no_image_the_second_time(tiny_dataset, tmp_path, monkeypatch):
    first = load_sequence_records(tiny_dataset, "02", cache_dir=str(tmp_path))

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(slices_module, "build_volume_records", fail)
    assert load_sequence_records(tiny_dataset, "02", cache_dir=str(tmp_path)) == first
    path = os.path.join(tiny_dataset, "02", "t001.tif")
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="cache should"):  # a changed file is re-indexed
        load_sequence_records(tiny_dataset, "02", cache_dir=str(tmp_path))


@pytest.mark.parametrize(
    "n_frames,fraction,gap", [(20, 0.2, 5), (150, 0.2, 5), (10, 0.3, 2), (7, 0.1, 0)])
def test_splits_never_share_a_frame_and_keep_the_gap(n_frames, fraction, gap):
    frames = list(range(100, 100 + n_frames))
    split = split_frames(frames, fraction, gap)
    train, val = split.train, split.val
    assert not set(train) & set(val)
    assert min(val) - max(train) - 1 >= gap
    assert train == frames[: len(train)] and val == frames[-len(val):]


def test_split_datasets_follow_the_config(registered_tiny):
    from emr_d2.data.catalog import configure_splits
    from emr_d2.engine import setup_config

    base = os.path.join(ROOT, "configs", "Base-EMR-RCNN-FPN.yaml")
    setup_config(base, ["DATASETS.SPLIT.VAL_FRACTION", "0.34", "DATASETS.SPLIT.GAP", "1"])
    train = {r["frame"] for r in DatasetCatalog.get("TINY_01_train")}
    val = {r["frame"] for r in DatasetCatalog.get("TINY_01_val")}
    assert train == {0, 1, 2} and val == {4, 5}
    configure_splits(setup_config(base))
    with pytest.raises(ValueError, match="cannot hold"):
        split_frames([0, 1, 2], 0.5, 5)


def test_register_any_folder_under_any_name(tiny_dataset):
    names = register_ctc_dataset(tiny_dataset, "my-nuclei")
    assert "my-nuclei_02" in names and "my-nuclei_02_val" in names
    assert MetadataCatalog.get("my-nuclei_02_val").sequence == "02"


def test_aniso_preset_is_cho_like_and_its_reference_scores_one(tmp_path):
    from emr_d2.data.synthetic import SequenceSimulator, axial_profile, voxel_snr

    out = tmp_path / "SIM-aniso"
    preset = write_synthetic_dataset(str(out), "aniso", seed=0, frames=2)
    assert json.load(open(out / "voxel_size.json"))["zyx_um"] == [
        1.0, 0.4, 0.4]  # CHO's 1 um slice step
    raw = tifffile.imread(out / "01" / "t000.tif")
    labels = tifffile.imread(out / "01_GT" / "SEG" / "man_seg000.tif")
    assert raw.shape == preset.shape == (18, 96, 96)
    extents = [s[0].stop - s[0].start for s in ndimage.find_objects(labels) if s is not None]
    assert 5 <= np.median(extents) <= 8  # flat nuclei about 8 um deep over 1 um slices
    above, below = labels[1:], labels[:-1]
    assert ((above > 0) & (below > 0) & (above != below)).sum() > 200  # two layers touch along z
    assert 8 <= voxel_snr(raw, labels) <= 20  # real CHO-like stacks: 11-13
    # How nuclei end along z, from the widest slice outward in 1 um steps, pooled over frames.
    signal, area, sides = 0, 0, 0
    for seed in range(4):
        sim = SequenceSimulator(preset, np.random.default_rng(seed))
        for t in range(3):
            if t:
                sim.step(t)
            s, a, n = axial_profile(*sim.render())
            if n:
                signal, area, sides = signal + s * n, area + a * n, sides + n
    assert sides >= 20
    np.testing.assert_allclose(signal / sides, [1.00, 0.88, 0.47, 0.19, 0.08], atol=0.08)
    np.testing.assert_allclose(area / sides, [1.00, 0.95, 0.75, 0.47, 0.00], atol=0.08)
    assert py_ctcmetrics_seg_of_reference(out, tmp_path) == pytest.approx(1.0)
