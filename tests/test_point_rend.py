"""PointRend mask heads in every fusion family: build, train, reach the fusion, predict at the
native size; the config check names unsupported combinations."""
import numpy as np
import pytest
import tifffile
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from emr_d2.engine import build_mapper
from emr_d2.modeling.fusion import SliceFusion
from emr_d2.predictor import VolumePredictor

from helpers import VARIANTS, tiny_cfg, train_tiny

# neighbor_fusion is mlp_fusion with the neighbour-mask head, a MaskRCNNConvUpsampleHead
FAMILIES = [v for v in VARIANTS if not v.startswith("pointrend_") and v != "neighbor_fusion"]


def point_rend(late: bool) -> list[str]:
    """Overrides that give a tiny model PointRend's mask head (the late-fusion one if late)."""
    return ["MODEL.ROI_MASK_HEAD.NAME",
            "SliceFusionPointRendMaskHead" if late else "PointRendMaskHead",
            "MODEL.ROI_MASK_HEAD.POOLER_TYPE", "", "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", "True",
            "MODEL.ROI_MASK_HEAD.FC_DIM", "64", "MODEL.POINT_HEAD.NUM_CLASSES", "1",
            "MODEL.POINT_HEAD.FC_DIM", "32"]


@pytest.mark.parametrize("variant", FAMILIES)
def test_every_fusion_family_trains_with_point_rend_and_the_z_extent_head(registered_tiny, variant):
    torch.manual_seed(0)
    n = 1 if variant == "baseline_2d" else 3
    cfg = tiny_cfg(variant, n, point_rend(variant.startswith("late_fusion")) + [
        "MODEL.Z_EXTENT.ENABLED", "True", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "4096"])
    model = build_model(cfg)
    mapper = build_mapper(cfg, is_train=True)
    records = sorted(DatasetCatalog.get("TINY_01"), key=lambda r: -len(r["annotations"]))[:2]
    with EventStorage():
        losses = model([mapper(r) for r in records])
    assert {"loss_mask", "loss_mask_point", "loss_z_extent"} <= set(losses)
    (losses["loss_mask"] + losses["loss_mask_point"]).backward()  # the mask losses alone
    fusion = [p for m in model.modules() if isinstance(m, SliceFusion) for p in m.parameters()
              if p.requires_grad]
    if variant == "channel_fusion":
        fusion = [model.backbone.bottom_up.stem.conv1.weight]
    if variant == "cross_slice_attention":
        fusion = []  # it fuses only p4-p6; PointRend reads p2
    if fusion:
        assert sum(float(p.grad.abs().sum()) for p in fusion if p.grad is not None) > 0
    model.eval()
    image = mapper(records[0])["image"]
    with torch.no_grad():
        out = model([{"image": image, "height": 64, "width": 64}])[0]["instances"]
    assert out.pred_masks.shape[1:] == (64, 64)


@pytest.mark.parametrize("late", [False, True])
def test_a_batch_without_nuclei_trains_with_point_rend(registered_tiny, late):
    torch.manual_seed(0)
    variant = "late_fusion_mlp" if late else "channel_fusion"
    cfg = tiny_cfg(variant, 3, point_rend(late))
    model = build_model(cfg)
    mapper = build_mapper(cfg, is_train=True)
    records = [dict(r, annotations=[]) for r in DatasetCatalog.get("TINY_01")[:2]]
    with EventStorage():
        losses = model([mapper(r) for r in records])
    assert float(losses["loss_mask"].detach()) == 0.0
    assert all(torch.isfinite(v.detach()) for v in losses.values())
    sum(losses.values()).backward()


def test_point_rend_learns_the_masks(registered_tiny):
    cfg = tiny_cfg("mlp_fusion", 3,
                   point_rend(False)
                   + ["DATASETS.TRAIN", "('TINY_01',)", "SOLVER.IMS_PER_BATCH", "2",
                                                         "SOLVER.BASE_LR", "0.002",
                      "INPUT.RANDOM_ROT90", "False"])
    _, history = train_tiny(cfg, 40)
    for key in ("loss_mask",
                "loss_mask_point"):  # the point loss sits at the uncertain points: it falls less
        losses = [step[key] for step in history]
        assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5]), (key, losses[:5], losses[-5:])


def test_point_rend_predictions_have_the_native_shape(tiny_dataset):
    torch.manual_seed(0)
    cfg = tiny_cfg("pointrend_mlp_fusion",
                   3, ["MODEL.ROI_MASK_HEAD.FC_DIM", "64", "MODEL.POINT_HEAD.FC_DIM", "32",
                                               "INPUT.PIXEL_SIZE_UM", "0.4",
                       "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                                               "TEST.CTC.SCORE_THRESHOLD", "0.0"])
    volume = tifffile.imread(
        f"{tiny_dataset}/02/t000.tif")  # 0.25 um pixels: the model sees 40 x 40
    predictor = VolumePredictor(cfg, build_model(cfg))
    masks = [i.pred_masks for _, i in predictor.slice_instances(volume, voxel_um=(0.4, 0.25, 0.25))]
    assert all(m.shape[1:] == volume.shape[1:] for m in masks) and sum(len(m) for m in masks) > 0
    assert predictor(volume, voxel_um=(0.4, 0.25, 0.25)).labels.shape == volume.shape


CENTER_POINTS = ["MODEL.FUSION.CENTER_OUTPUTS", "['p2']", "MODEL.POINT_HEAD.IN_FEATURES",
                 "['p2_center']"]


def test_points_from_the_centre_slices_own_features(registered_tiny, tiny_dataset):
    """Early fusion with MODEL.FUSION.CENTER_OUTPUTS: the point head reads the centre slice's
    unfused p2, the coarse head the fused one; cached volume inference still equals per window."""
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion", 3, point_rend(False) + CENTER_POINTS)
    model = build_model(cfg)
    volume = tifffile.imread(f"{tiny_dataset}/02/t000.tif")
    image = torch.from_numpy(volume[2:5].astype(np.float32) / volume.max() * 255)
    features = model.backbone(image[None])
    assert torch.equal(features["p2_center"],
                       model.backbone.forward_slices(image[None])["p2"][:, 1])
    assert not torch.equal(features["p2_center"], features["p2"])
    mapper = build_mapper(cfg, is_train=True)
    records = sorted(DatasetCatalog.get("TINY_01"), key=lambda r: -len(r["annotations"]))[:2]
    with EventStorage():
        losses = model([mapper(r) for r in records])
    head = model.roi_heads.mask_head
    assert list(head.roi_pooler_in_features) == ["p2"] and list(head.mask_point_in_features) == [
        "p2_center"]
    losses["loss_mask_point"].backward()
    assert model.backbone.slice_backbone.bottom_up.stem.conv1.weight.grad.abs().sum() > 0
    model.eval()
    cached, naive = (
        VolumePredictor(cfg, model),
        VolumePredictor(
            tiny_cfg(
            "mlp_fusion",
            3,
            point_rend(False) + CENTER_POINTS + ["TEST.CTC.CACHE_FEATURES", "False"],
            ),
            model,
        ),
    )
    assert cached.use_cache and not naive.use_cache
    assert np.array_equal(cached(volume).labels, naive(volume).labels)
    with pytest.raises(ValueError, match="CENTER_OUTPUTS"):
        tiny_cfg("channel_fusion", 3, point_rend(False) + CENTER_POINTS)


@pytest.mark.parametrize("variant,head,extra,message", [
    ("late_fusion_mlp", "PointRendMaskHead", [], "late fusion"),
    ("mlp_fusion", "SliceFusionPointRendMaskHead", [], "late fusion"),
    ("mlp_fusion", "PointRendMaskHead", ["MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2"],
     "POOLER_TYPE"),
    ("mlp_fusion", "PointRendMaskHead", ["MODEL.POINT_HEAD.NUM_CLASSES", "80"], "NUM_CLASSES"),
])
def test_the_config_check_names_unsupported_point_rend_combinations(variant, head, extra, message):
    opts = point_rend(False)
    opts[1] = head
    with pytest.raises(ValueError, match=message) as error:
        tiny_cfg(variant, 3, opts + extra)
    assert "\n" not in str(error.value)
