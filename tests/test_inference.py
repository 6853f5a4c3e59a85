"""Whole-volume inference: the per-slice feature cache gives the same predictions as running
every window on its own."""
import numpy as np
import pytest
import tifffile
import torch
from detectron2.modeling import build_model

from emr_d2.predictor import VolumePredictor

from helpers import tiny_cfg

EXTRA = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.CTC.BATCH_WINDOWS", "3"]


# Non-contiguous offsets with the neighbour-mask head: its pasted neighbour masks must agree too.
NEIGHBORS = ["INPUT.SLICE_OFFSETS", "[-3, -1, 0, 2, 3]", "MODEL.ROI_MASK_HEAD.NAME",
             "NeighborMaskHead"]
Z_EXTENT = ["MODEL.Z_EXTENT.ENABLED", "True"]


@pytest.mark.parametrize("variant,padding,extra", [
    ("mlp_fusion", "replicate", []), ("windowed_fusion", "zero", []),
    ("late_fusion_mlp", "reflect", []),
    ("late_fusion_center", "replicate", []), ("cross_slice_attention", "zero", []),
    ("mlp_fusion", "reflect", NEIGHBORS), ("late_fusion_center", "zero", NEIGHBORS),
    ("mlp_fusion", "zero", Z_EXTENT), ("late_fusion_mlp", "replicate", Z_EXTENT),
])
def test_cached_and_per_window_inference_agree(tiny_dataset, variant, padding, extra):
    torch.manual_seed(0)
    volume = tifffile.imread(f"{tiny_dataset}/02/t000.tif")
    cached_cfg = tiny_cfg(variant, 5, EXTRA + extra + ["INPUT.SLICE_PADDING", padding])
    model = build_model(cached_cfg).eval()
    naive_cfg = tiny_cfg(variant, 5, EXTRA + extra + ["INPUT.SLICE_PADDING", padding,
                                                      "TEST.CTC.CACHE_FEATURES", "False"])
    cached, naive = VolumePredictor(cached_cfg, model), VolumePredictor(naive_cfg, model)
    assert cached.use_cache and not naive.use_cache
    a, b = list(cached.slice_instances(volume)), list(naive.slice_instances(volume))
    assert [z for z, _ in a] == [z for z, _ in b] == list(range(volume.shape[0]))
    total = 0
    for (_, x), (_, y) in zip(a, b):
        assert len(x) == len(y)
        total += len(x)
        torch.testing.assert_close(x.pred_boxes.tensor, y.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(x.scores, y.scores, atol=1e-4, rtol=1e-4)
        assert (x.pred_masks != y.pred_masks).float().mean() < 1e-3
        if extra == NEIGHBORS:
            assert x.pred_neighbor_masks.shape == (len(x), 4, *volume.shape[1:])
            assert (x.pred_neighbor_masks != y.pred_neighbor_masks).float().mean() < 1e-3
        if extra == Z_EXTENT:
            assert x.pred_z_extent.shape == (len(x), 2)
            torch.testing.assert_close(x.pred_z_extent, y.pred_z_extent, atol=1e-3, rtol=1e-3)
    assert total > 0


def test_channel_fusion_cannot_share_features():
    model = build_model(tiny_cfg("channel_fusion", 5)).eval()
    assert not model.shares_slice_features
    assert not VolumePredictor(tiny_cfg("channel_fusion", 5), model).use_cache


def test_volume_predictor_returns_a_label_volume_of_the_input_shape(tiny_dataset):
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion",
                   3,
                   ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.CTC.SCORE_THRESHOLD",
                      "0.0"])
    volume = tifffile.imread(f"{tiny_dataset}/02/t001.tif")[:, :48, :56]  # not a multiple of 32
    linked = VolumePredictor(cfg, build_model(cfg))(volume)
    assert linked.labels.shape == volume.shape and linked.labels.dtype == np.uint16
    assert linked.labels.max() == len(linked.scores) > 0
