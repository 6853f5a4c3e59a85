"""Neighbour slices that pay: windows by physical distance, neighbour-mask targets and head,
linking by predicted neighbour masks, centre-slice degradation."""
import json
import os

import numpy as np
import pytest
import tifffile
import torch
from detectron2.modeling import build_model

from emr_d2.data.catalog import register_ctc_dataset
from emr_d2.data.mapper import CenterDegradation, SliceStackMapper
from emr_d2.data.window import SliceWindow
from emr_d2.linking import SlicePrediction, link_volume
from emr_d2.evaluation.seg import SEGAccumulator

from helpers import tiny_cfg, train_tiny


def test_slice_spacing_in_micrometres_gives_offsets_per_dataset():
    window = SliceWindow(5, spacing_um=1.0)
    assert window.slice_offsets(0.2).tolist() == [-10, -5, 0, 5, 10]  # SIM+: 0.2 um slices
    assert window.slice_offsets(1.0).tolist() == [-2, -1, 0, 1, 2]  # CHO: 1.0 um slices
    assert window.slice_offsets(3.0).tolist() == [-2, -1, 0, 1, 2]  # at least one slice apart
    assert SliceWindow(3, offsets=(-2, 0, 2)).slice_offsets().tolist() == [-2, 0, 2]
    with pytest.raises(ValueError, match="z voxel size"):
        window.slice_offsets(None)


@pytest.mark.parametrize(
    "offsets,message", [("[-1, 1, 0]", "SLICE_OFFSETS"), ("[0, 1, 2]", "SLICE_OFFSETS"),
    ("[-1, 0]", "SLICE_OFFSETS")])
def test_bad_slice_offsets_fail_at_setup(offsets, message):
    with pytest.raises(ValueError, match=message):
        tiny_cfg("mlp_fusion", 3, ["INPUT.SLICE_OFFSETS", offsets])


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A CTC dataset PHANTOM_01 of one 6 x 32 x 32 volume: object 1 in slices 1-2 (it ends inside
    a 3-slice window), object 2 in slices 0-5; voxel 1.0 x 0.5 x 0.5 um."""
    root = tmp_path_factory.mktemp("phantom") / "PHANTOM"
    labels = np.zeros((6, 32, 32), np.uint16)
    labels[1:3, 4:12, 4:12] = 1
    labels[:, 16:28, 14:30] = 2
    raw = (labels > 0).astype(np.uint16) * 800 + 100
    for folder, name, data in [("01", "t000.tif", raw), ("01_GT/SEG", "man_seg000.tif", labels)]:
        os.makedirs(root / folder, exist_ok=True)
        tifffile.imwrite(root / folder / name, data, photometric="minisblack")
    (root / "voxel_size.json").write_text(json.dumps({"zyx_um": [1.0, 0.5, 0.5]}))
    register_ctc_dataset(str(root), "PHANTOM")
    from detectron2.data import DatasetCatalog

    return labels, {r["z"]: r for r in DatasetCatalog.get("PHANTOM_01")}


@pytest.mark.parametrize("padding", ["replicate", "zero"])
def test_neighbor_targets_are_the_reference_slices_at_the_offsets(phantom, padding):
    labels, records = phantom
    mapper = SliceStackMapper(True, augmentations=[],
                              window=SliceWindow(3, padding, spacing_um=2.0),
                              percentiles=(1.0, 99.8), neighbor_masks=True)  # 2 um = 2 slices
    for z in range(6):
        instances = mapper(records[z])["instances"]
        ids = [i for i in (1, 2) if (labels[z] == i).any()]
        neighbors = instances.gt_neighbor_masks
        assert neighbors.masks.shape == (len(ids), 2, 32, 32)
        for k, label in enumerate(ids):
            for m, dz in enumerate((-2, 2)):
                inside = 0 <= z + dz < 6
                assert bool(neighbors.valid[k, m]) == inside  # the padded edge has no target
                if inside:
                    assert torch.equal(neighbors.masks[k, m],
                                       torch.from_numpy(labels[z + dz] == label))
    ends_inside = mapper(records[2])["instances"].gt_neighbor_masks  # object 1 is gone at z = 4
    assert ends_inside.valid[0, 1] and not ends_inside.masks[0, 1].any()


def test_centre_degradation_changes_only_the_centre_slice():
    window = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    degrade = CenterDegradation(prob=1.0, blur_sigma=2.0, noise_std=0.3, dim=0.3)
    rng = np.random.RandomState(0)
    for _ in range(6):
        out = degrade(window, 1, rng)
        assert np.array_equal(out[:, :, [0, 2]], window[:, :, [0, 2]])
        assert not np.allclose(out[:, :, 1], window[:, :, 1])
    assert CenterDegradation(0.0, 2.0, 0.3, 0.3)(window, 1, rng) is window


def stacked_objects():
    """Object 1 in slices 0-4 and object 2 in slices 5-9 of the same x-y place (touching along
    z: IoU-based linking merges them), and object 3 in slices 2-8 elsewhere."""
    y, x = np.mgrid[:40, :40]
    gt = np.zeros((10, 40, 40), np.uint16)
    gt[:5][:, (y - 12) ** 2 + (x - 12) ** 2 <= 64] = 1
    gt[5:][:, (y - 12) ** 2 + (x - 13) ** 2 <= 64] = 2
    gt[2:9][:, (y - 28) ** 2 + (x - 28) ** 2 <= 49] = 3
    return gt


def perfect_predictions(gt, offsets, drop=None):
    """(z, SlicePrediction with neighbour masks) with the reference as predictions; drop = (label,
    z)."""
    for z in range(gt.shape[0]):
        ids = [i for i in np.unique(gt[z]) if i and (i, z) != drop]
        masks = np.stack([gt[z] == i for i in ids]) if ids else np.zeros((0, *gt.shape[1:]), bool)
        neighbors = np.zeros((len(ids), len(offsets), *gt.shape[1:]), bool)
        for k, label in enumerate(ids):
            for m, dz in enumerate(offsets):
                if 0 <= z + dz < gt.shape[0]:
                    neighbors[k, m] = gt[z + dz] == label
        yield z, SlicePrediction(masks, np.full(len(ids), 0.9), neighbors)


def seg_of(gt, labels):
    acc = SEGAccumulator()
    acc.add("v", gt, labels)
    return acc.summary()["SEG"]


@pytest.mark.parametrize("drop", [None, (3, 5)])
def test_predicted_linking_of_perfect_neighbor_masks_reproduces_the_reference(drop):
    gt = stacked_objects()
    linked = link_volume(perfect_predictions(gt, [-1, 1], drop), gt.shape,
                         window_offsets=[-1, 0, 1],
                         strategy="predicted", threshold=0.5, look_back=1)
    assert seg_of(gt, linked.labels) == 1.0  # a missed slice is bridged and filled by prediction
    assert linked.labels.max() == 3
    iou = link_volume(perfect_predictions(gt, [-1, 1], drop), gt.shape, strategy="iou",
                      threshold=0.5, look_back=1)
    assert seg_of(gt, iou.labels) < 0.9  # IoU linking merges the objects touching along z


def test_neighbor_head_learns_the_neighbor_masks(registered_tiny):
    cfg = tiny_cfg("mlp_fusion", 3, ["DATASETS.TRAIN", "('TINY_01',)", "SOLVER.IMS_PER_BATCH", "2",
                                     "SOLVER.BASE_LR", "0.002", "INPUT.RANDOM_ROT90", "False",
                                     "MODEL.ROI_MASK_HEAD.NAME", "NeighborMaskHead"])
    model, history = train_tiny(cfg, 40)
    assert model.roi_heads.mask_head.predictor.out_channels == 3
    losses = [step["loss_neighbor_mask"] for step in history]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)


def test_neighbor_head_is_a_no_op_for_one_slice():
    cfg = tiny_cfg("baseline_2d", 1, ["MODEL.ROI_MASK_HEAD.NAME", "NeighborMaskHead"])
    assert build_model(cfg).roi_heads.mask_head.predictor.out_channels == 1
