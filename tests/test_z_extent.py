"""The z-extent head: targets from the 3D reference, the head in every fusion family, linking
that uses the predicted extents, and its calibration."""
import numpy as np
import pytest
import tifffile
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from emr_d2.calibration import PastedVolume, choose_linking, linking_grid
from emr_d2.data.mapper import object_z_ranges, z_extent_targets
from emr_d2.engine import build_mapper
from emr_d2.data.synthetic import SyntheticPreset, write_synthetic_dataset
from emr_d2.evaluation.seg import score_frame
from emr_d2.evaluation.z_extent import ZExtentErrors
from emr_d2.linking import SlicePrediction, link_volume, paste_volume
from emr_d2.modeling.fusion import SliceFusion
from emr_d2.predictor import VolumePredictor

from helpers import VARIANTS, tiny_cfg, train_tiny

ZEXT = ["MODEL.Z_EXTENT.ENABLED", "True"]
# 12 x 64 x 64 voxels of 1.0 x 0.25 x 0.25 um: flat nuclei about 4 um deep, most inside the stack.
FLAT_PRESET = SyntheticPreset(field_um=(12.0, 16.0, 16.0), scale=0.5, z_scale=1.0,
                              native_voxel_um=(1.0, 0.125, 0.125),
                              frames={"01": 6, "02": 2}, num_nuclei=4, min_separation=1.0,
                              division_rate=0.0,
                              z_axis_ratio=0.7)


@pytest.fixture(scope="module")
def flat_dataset(tmp_path_factory):
    from emr_d2.data.catalog import register_ctc_dataset

    root = str(tmp_path_factory.mktemp("flat") / "FLAT")
    write_synthetic_dataset(root, FLAT_PRESET, seed=3)
    register_ctc_dataset(root, "FLAT")
    return root


def test_extent_targets_count_physical_distances_and_ignore_cut_sides(tmp_path):
    ref = np.zeros((6, 8, 8), np.uint16)
    ref[0:3, 1:3, 1:3] = 1  # begins at the first slice: maybe cut by the stack
    ref[2:5, 4:7, 4:7] = 2  # inside the stack
    ref[3:6, 0:2, 5:8] = 3  # ends at the last slice
    path = str(tmp_path / "ref.tif")
    tifffile.imwrite(path, ref)
    ranges = object_z_ranges(path)
    np.testing.assert_array_equal(ranges[1:], [[0, 2], [2, 4], [3, 5]])
    extent, valid = z_extent_targets(np.array([1, 2, 3]), 3, 6, ranges, 2.0)  # slices 2 um apart
    np.testing.assert_allclose(extent.numpy(), [[6.0, -2.0], [2.0, 2.0], [0.0, 4.0]])
    np.testing.assert_array_equal(valid.numpy(), [[False, True], [True, True], [True, False]])
    _, none = z_extent_targets(np.array([2]), 3, 6, None, 2.0)  # no 3D reference: nothing to learn
    assert not none.any()


def test_the_mapper_gives_targets_at_the_stack_edge_as_inside(flat_dataset):
    cfg = tiny_cfg("mlp_fusion", 3,
                   ZEXT + ["INPUT.RANDOM_FLIP", "none", "INPUT.SLICE_PADDING", "zero"])
    mapper = build_mapper(cfg, is_train=True)
    records = [r for r in DatasetCatalog.get("FLAT_01") if r["frame"] == 0]
    ranges = object_z_ranges(records[0]["gt_file"])
    checked = 0
    for record in (records[0], records[len(records) // 2], records[-1]):  # edge-padded windows too
        instances = mapper(record)["instances"]
        ids = [int(i) for i in np.unique(tifffile.imread(record["gt_file"])[record["z"]]) if i]
        expected, valid = z_extent_targets(np.array(ids, dtype=np.int64), record["z"],
                                           record["depth"], ranges, 1.0)
        torch.testing.assert_close(instances.gt_z_extent, expected)
        assert torch.equal(instances.gt_z_extent_valid, valid)
        checked += len(ids)
    assert checked > 0


@pytest.mark.parametrize("variant,num_slices", [("baseline_2d", 1)]
                         + [(v, 3) for v in VARIANTS if v != "baseline_2d"])
def test_the_head_trains_in_every_fusion_family_and_reaches_the_fusion(
    flat_dataset, variant, num_slices):
    torch.manual_seed(0)
    cfg = tiny_cfg(variant, num_slices, ZEXT + ["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "4096"])
    model = build_model(cfg)
    mapper = build_mapper(cfg, is_train=True)
    records = sorted(DatasetCatalog.get("FLAT_01"), key=lambda r: -len(r["annotations"]))[:2]
    with EventStorage():
        losses = model([mapper(r) for r in records])
    assert torch.isfinite(losses["loss_z_extent"]) and losses["loss_z_extent"] > 0
    losses["loss_z_extent"].backward()  # the extent loss alone
    head = model.roi_heads.z_extent_head
    assert head.predictor.weight.grad.abs().sum() > 0
    fusion = [p for m in model.modules() if isinstance(m, SliceFusion) for p in m.parameters()
              if p.requires_grad]
    if variant == "channel_fusion":  # its fusion is the first convolution, over the N slices
        fusion = [model.backbone.bottom_up.stem.conv1.weight]
    if variant == "cross_slice_attention":
        fusion = []  # it fuses only p4-p6, which the pooler never reads for objects this small
    reached = [p.grad for p in fusion if p.grad is not None]
    if fusion:
        assert sum(float(g.abs().sum()) for g in reached) > 0
    model.eval()
    with torch.no_grad():
        out = model([
            {"image": mapper(records[0])["image"], "height": 64, "width": 64}])[0]["instances"]
    assert out.pred_z_extent.shape == (len(out), 2) and (out.pred_z_extent >= 0).all()


def test_the_extent_loss_falls_in_training(flat_dataset):
    cfg = tiny_cfg("mlp_fusion", 3,
                   ZEXT + ["DATASETS.TRAIN", "('FLAT_01',)", "SOLVER.IMS_PER_BATCH", "2",
                                            "SOLVER.BASE_LR", "0.002", "INPUT.RANDOM_ROT90",
                           "False"])
    _, history = train_tiny(cfg, 40)
    losses = [step["loss_z_extent"] for step in history
              if step["loss_z_extent"] > 0]  # 0: no uncut side
    first, last = np.mean(losses[:5]), np.mean(losses[-10:])
    assert last < 0.75 * first, (first, last)


def stacked_discs():
    """Object 1 in slices 0-4, object 2 in slices 5-9: the same disc shifted by 3 px, so that
    overlap linking merges them (overlap about 0.75 between slices 4 and 5)."""
    y, x = np.mgrid[:48, :48]
    gt = np.zeros((10, 48, 48), np.uint16)
    gt[:5][:, (y - 24) ** 2 + (x - 22) ** 2 <= 100] = 1
    gt[5:][:, (y - 24) ** 2 + (x - 25) ** 2 <= 100] = 2
    return gt


def with_extents(masks_of, spacing_um=2.0, haze=None):
    """(z, SlicePrediction with extents) predictions of the reference's objects in slice z, each
    with its true extent in um; haze = (label, z): also predict that object in slice z, with the
    extent its real slices predict."""
    gt = masks_of
    ranges = {int(i): (np.flatnonzero((gt == i).any(axis=(1, 2)))[[0, -1]]) for i in np.unique(gt)
              if i}
    for z in range(gt.shape[0]):
        ids = [i for i in ranges if (gt[z] == i).any()]
        masks = [gt[z] == i for i in ids]
        if haze and haze[1] == z:
            ids.append(haze[0])
            masks.append(gt[z - 1] == haze[0])
        extents = [[(z - ranges[i][0]) * spacing_um, (ranges[i][1] - z) * spacing_um] for i in ids]
        if haze and haze[1] == z:
            extents[-1] = [(z - ranges[haze[0]][0]) * spacing_um, 0.0]  # it says "I end here"
        yield z, SlicePrediction(np.array(masks).reshape(-1, *gt.shape[1:]), np.full(len(ids), 0.9),
                                 None,
                                 np.array(extents).reshape(-1, 2))


def seg(gt, labels):
    return score_frame(gt, labels).scores.mean()


def test_extent_gating_separates_stacked_objects_that_overlap_linking_merges():
    gt = stacked_discs()
    merged = link_volume(with_extents(gt), gt.shape, z_spacing_um=2.0, strategy="overlap",
                         threshold=0.3)
    assert len(merged.scores) == 1 and seg(gt, merged.labels) < 0.6
    gated = link_volume(with_extents(gt), gt.shape, z_spacing_um=2.0, strategy="overlap",
                        threshold=0.3,
                        extent_gate_um=1.0)
    assert len(gated.scores) == 2 and seg(gt, gated.labels) == 1.0
    ignored = link_volume(((z, p._replace(z_extents=None)) for z, p in with_extents(gt)), gt.shape,
                          strategy="overlap",
                          threshold=0.3, extent_gate_um=1.0)  # no extents predicted: no gate
    assert len(ignored.scores) == 1


def test_cap_trimming_removes_a_haze_slice():
    gt = stacked_discs()
    gt[gt == 2] = 0  # one object in slices 0-4; the model also paints it into slice 5
    kept = link_volume(with_extents(gt, haze=(1, 5)), gt.shape, z_spacing_um=2.0,
                       strategy="overlap", threshold=0.3)
    assert (kept.labels[5] > 0).any() and seg(gt, kept.labels) < 0.9
    trimmed = link_volume(with_extents(gt, haze=(1, 5)), gt.shape, z_spacing_um=2.0,
                          strategy="overlap",
                          threshold=0.3, extent_trim_um=1.0)
    assert not (trimmed.labels[5] > 0).any() and seg(gt, trimmed.labels) == 1.0


def test_calibration_can_choose_the_extent_gate_and_trim():
    gt = stacked_discs()
    volume = PastedVolume("v", paste_volume(with_extents(gt), gt.shape, z_spacing_um=2.0), gt, None)
    base = dict(strategy="overlap", threshold=0.3, look_back=1, min_slices=1, split_depth=0.0,
                extent_trim_um=0.0)
    best, _ = choose_linking([volume], [dict(base, extent_gate_um=g) for g in (0.0, 1.0)],
                             fill_gaps=True)
    assert best["extent_gate_um"] == 1.0
    single = gt.copy()
    single[single == 2] = 0
    volume = PastedVolume("w",
                          paste_volume(with_extents(single, haze=(1, 5)), gt.shape,
                                       z_spacing_um=2.0), single, None)
    base = dict(base, extent_gate_um=0.0)
    best, _ = choose_linking([volume], [dict(base, extent_trim_um=t) for t in (0.0, 1.0)],
                             fill_gaps=True)
    assert best["extent_trim_um"] == 1.0
    cfg = tiny_cfg("baseline_2d", 1, freeze=False)
    grid = linking_grid(cfg, with_extents=True)
    assert {p["extent_gate_um"] for p in grid} == {0.0, 1.0, 2.0}
    assert {p["extent_trim_um"] for p in grid} == {0.0, 0.25, 0.75}
    assert len(grid) == 4 * 3 * (2 * 9 * 3 * 3 * 3
                                 + 3)  # depths x trims x (gated linkers + connected)
    assert all("extent_gate_um" not in p for p in linking_grid(cfg))


def test_predicted_extents_reach_linking_and_their_error_is_measured(flat_dataset):
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion", 3, ZEXT + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                            "TEST.CTC.SCORE_THRESHOLD", "0.0"])
    model = build_model(cfg).eval()
    volume = tifffile.imread(f"{flat_dataset}/02/t000.tif")
    regions = VolumePredictor(cfg, model).regions(volume, voxel_um=(1.0, 0.25, 0.25))
    assert regions.z_extents is not None and regions.z_spacing_um == 1.0
    assert all(e.shape == (int(m.max()), 2) for e, m in zip(regions.z_extents, regions.maps))
    gt = tifffile.imread(f"{flat_dataset}/02_GT/SEG/man_seg000.tif")
    perfect = paste_volume(with_extents(gt, spacing_um=1.0), gt.shape, z_spacing_um=1.0)
    errors = ZExtentErrors()
    errors.add(perfect, gt)
    assert errors.summary()["z_extent_error_um"] == 0.0
    off = paste_volume(((z, p._replace(z_extents=p.z_extents + 1.0))
                        for z, p in with_extents(gt, spacing_um=1.0)),
                       gt.shape)
    errors.add(off, gt)
    assert errors.summary()["z_extent_error_um"] == pytest.approx(0.5)
