"""The fusion model family: every config builds, trains one step, fuses observably."""

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from emr_d2.engine import build_mapper
from emr_d2.engine import Trainer
from emr_d2.modeling import SliceStackCheckpointer, fusion_weights
from emr_d2.modeling.fusion import SliceFusion, build_fusion, mean_slice_weights
from emr_d2.modeling.intensity import IntensityFrontEnd
from emr_d2.modeling.roi_heads import SliceFusionPooler

from helpers import VARIANTS, tiny_cfg, train_tiny

N_FOR = {v: [3, 5] for v in VARIANTS}
N_FOR["baseline_2d"] = N_FOR["pointrend_baseline_2d"] = [1]
N_FOR["channel_fusion"] = [1, 3, 5]
N_FOR["mlp_fusion"] = [1, 3, 5]
CASES = [(v, n) for v in VARIANTS for n in N_FOR[v]]


def batch(cfg, count=2):
    records = DatasetCatalog.get("TINY_01")
    mapper = build_mapper(cfg, is_train=True)
    chosen = sorted(records, key=lambda r: -len(r["annotations"]))[:count]
    return [mapper(r) for r in chosen]


@pytest.mark.parametrize("variant,num_slices", CASES, ids=[f"{v}-N{n}" for v, n in CASES])
def test_forward_backward_and_inference(registered_tiny, variant, num_slices):
    torch.manual_seed(0)
    # every anchor in the RPN loss, so that every FPN level (and its fusion module) gets a gradient
    cfg = tiny_cfg(variant, num_slices, ["MODEL.INTENSITY.NAME", "gamma_contrast",
                                         "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "4096"])
    model = build_model(cfg)
    inputs = batch(cfg)
    assert inputs[0]["image"].shape[0] == num_slices
    with EventStorage():
        losses = model(inputs)
    assert {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    fusion_params = [(f"{type(m).__name__}.{n}", p) for m in model.modules()
                     if isinstance(m, (SliceFusion, IntensityFrontEnd))
                     for n, p in m.named_parameters() if p.requires_grad]
    if variant.removeprefix("pointrend_") not in ("baseline_2d", "channel_fusion",
                                                  "late_fusion_mean",
                                                  "late_fusion_center"):
        assert len(fusion_params) > 2, "the variant should have fusion parameters"
    for name, p in fusion_params:
        # with one slice, softmax weights are constant: their parameters get zero gradients
        if num_slices > 1 or name.startswith("IntensityFrontEnd"):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} got no gradient"
    model.eval()
    with torch.no_grad():
        outputs = model([{"image": x["image"], "height": 64, "width": 64} for x in inputs])
    instances = outputs[0]["instances"]
    assert instances.image_size == (64, 64)
    assert {"pred_boxes", "scores", "pred_classes", "pred_masks"} <= set(instances.get_fields())


def only_center_cfg(variant, extra=()):
    return tiny_cfg(variant,
                    5,
                    ["MODEL.FUSION.STATIC_INIT", "only_center", "MODEL.FUSION.FREEZE_STATIC",
                       "True",
                                 *extra])


@pytest.mark.parametrize("fusion", ["MLPFusion", "WindowedFusion", "PixelAttentionFusion"])
def test_early_fusion_with_frozen_only_center_returns_the_centre_features(fusion):
    torch.manual_seed(0)
    cfg = only_center_cfg("mlp_fusion", ["MODEL.FUSION.NAME", fusion])
    backbone = build_model(cfg).backbone.eval()
    x = torch.randn(2, 5, 64, 64)
    fused = backbone(x)
    centre = backbone.slice_backbone(x[:, 2:3])
    for level in centre:
        assert torch.equal(fused[level], centre[level]), level


@pytest.mark.parametrize("late", ["MLPFusion", "CenterFusion"])
def test_late_fusion_with_frozen_only_center_returns_the_centre_roi_features(late):
    torch.manual_seed(0)
    cfg = only_center_cfg("late_fusion_mlp", ["MODEL.FUSION.LATE.NAME", late])
    model = build_model(cfg).eval()
    pooler = model.roi_heads.mask_pooler
    assert isinstance(pooler, SliceFusionPooler)
    features = model.backbone(torch.randn(2, 5, 64, 64))
    levels = model.roi_heads.mask_in_features
    boxes = [Boxes(torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 20.0, 60.0, 50.0]]))] * 2
    fused = pooler([features[f + "_slices"] for f in levels], boxes)
    centre = pooler.pooler([features[f + "_slices"][:, 2] for f in levels], boxes)
    assert torch.equal(fused, centre)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_channel_fusion_adapts_a_pretrained_stem(tmp_path, in_channels):
    cfg = tiny_cfg("channel_fusion", 5)
    model = build_model(cfg)
    stem = torch.randn(64, in_channels, 7, 7)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["backbone.bottom_up.stem.conv1.weight"] = stem
    path = str(tmp_path / "pretrained.pth")
    torch.save({"model": state}, path)
    SliceStackCheckpointer(build_model(cfg)).load(path)  # another fresh model would differ
    loaded = build_model(cfg)
    SliceStackCheckpointer(loaded).load(path)
    expected = stem.mean(dim=1, keepdim=True).repeat(1, 5, 1, 1) * in_channels / 5
    torch.testing.assert_close(loaded.backbone.bottom_up.stem.conv1.weight, expected)
    # equal inputs on all channels respond as before
    ones = torch.ones(1, 5, 7, 7)
    response = torch.nn.functional.conv2d(ones, expected)
    torch.testing.assert_close(response,
                               torch.nn.functional.conv2d(torch.ones(1, in_channels, 7, 7), stem))


def test_shared_backbone_adapts_a_three_channel_stem_to_one(tmp_path):
    cfg = tiny_cfg("mlp_fusion", 3)
    model = build_model(cfg)
    state = dict(model.state_dict())
    key = "backbone.slice_backbone.bottom_up.stem.conv1.weight"
    state[key] = torch.randn(64, 3, 7, 7)
    torch.save({"model": state}, str(tmp_path / "w.pth"))
    SliceStackCheckpointer(model).load(str(tmp_path / "w.pth"))
    torch.testing.assert_close(model.state_dict()[key], state[key].sum(dim=1, keepdim=True))


def test_fusion_weights_are_observable():
    cfg = tiny_cfg("mlp_fusion", 5, ["MODEL.FUSION.PER_LEVEL", "True"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.backbone(torch.randn(2, 5, 64, 64))
    weights = fusion_weights(model)
    assert len(weights) == 5  # one module per level p2..p6
    for w in weights.values():
        assert w.shape == (2, 5)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(2))
        per_offset = mean_slice_weights(w)
        assert per_offset[2] > per_offset[0]  # the gaussian prior favours the centre
    pixel = build_fusion("PixelAttentionFusion", tiny_cfg("pixel_attention", 3), 8, 3)
    pixel(torch.randn(2, 3, 8, 6, 5))
    assert pixel.slice_weights().shape == (2, 3, 6, 5)
    windowed = build_fusion("WindowedFusion", tiny_cfg("windowed_fusion", 3), 8, 3)
    windowed(torch.randn(1, 3, 8, 9, 9))
    w = windowed.slice_weights()[0, 0]
    assert w.shape == (9, 9) and torch.equal(w[:4, :4], w[0, 0].expand(4, 4))


PRIOR = {"static_init": "gaussian", "gaussian_sigma": 1.0, "freeze_static": False}


@pytest.mark.parametrize("name, extra", [
    ("MeanFusion", {}), ("CenterFusion", {}), ("Conv3dFusion", {}), ("MLPFusion", {"hidden_dim": 4})
    ,
    ("PixelAttentionFusion", {"hidden_dim": 4}), ("WindowedFusion", {"hidden_dim": 4, "window": 2}),
    ("CrossSliceAttentionFusion", {"num_heads": 2}),
])
def test_fusion_modules_build_from_plain_arguments(name, extra):
    """Every fusion module is built without a config, and from_config gives the config's values."""
    from emr_d2.modeling.fusion import FUSION_REGISTRY

    cls = FUSION_REGISTRY.get(name)
    module = cls(channels=8, num_slices=3, **PRIOR, **extra)
    assert module(torch.randn(2, 3, 8, 5, 4)).shape == (2, 8, 5, 4)
    from_cfg = cls.from_config(tiny_cfg("mlp_fusion", 3), channels=8, num_slices=3)
    assert set(from_cfg) == {"channels", "num_slices", *PRIOR, *extra}


def test_static_priors():
    from emr_d2.modeling.fusion import static_slice_logits

    assert torch.softmax(static_slice_logits(5, "zero"), 0).tolist() == pytest.approx([0.2] * 5)
    assert torch.softmax(static_slice_logits(5, "only_center"), 0).tolist() == [0, 0, 1, 0, 0]
    g = torch.softmax(static_slice_logits(5, "gaussian", 1.0), 0)
    assert g[2] > g[1] > g[0] and g[1] == g[3]
    with pytest.raises(ValueError, match="init must be one of"):
        static_slice_logits(3, "uniform")


def test_mlp_fusion_learns_on_a_tiny_volume(registered_tiny):
    cfg = tiny_cfg("mlp_fusion", 3, ["DATASETS.TRAIN", "('TINY_01',)", "SOLVER.IMS_PER_BATCH", "2",
                                     "SOLVER.BASE_LR", "0.001", "INPUT.RANDOM_ROT90", "False"])
    losses = [sum(step.values()) for step in train_tiny(cfg, 40)[1]]
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)


def test_fusion_parameters_get_no_weight_decay():
    cfg = tiny_cfg("mlp_fusion", 3, ["SOLVER.WEIGHT_DECAY", "0.01"])
    model = build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    fusion_ids = {id(p) for m in model.modules() if isinstance(m, SliceFusion)
                  for p in m.parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) in fusion_ids:
                assert group["weight_decay"] == 0.0
    assert any(g["weight_decay"] == 0.01 for g in optimizer.param_groups)


def test_config_files_accept_any_num_slices_and_overrides():
    for variant in VARIANTS:
        for n in (2, 7):
            cfg = tiny_cfg(variant, n, ["SOLVER.BASE_LR", "0.01"])
            assert cfg.INPUT.NUM_SLICES == n and cfg.SOLVER.BASE_LR == 0.01
