"""Data from another microscope: models work at a physical pixel size (INPUT.PIXEL_SIZE_UM)."""
import numpy as np
import pytest
import tifffile
import torch
from detectron2.modeling import build_model

from emr_d2.evaluation.seg import SEGAccumulator
from emr_d2.predictor import VolumePredictor

from helpers import tiny_cfg, train_tiny

TINY_VOXEL = (0.4, 0.25, 0.25)  # conftest's TINY_PRESET at scale 0.5
AT_QUARTER_UM = ["INPUT.PIXEL_SIZE_UM", "0.25", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0",
                 "TEST.CTC.SCORE_THRESHOLD", "0.0"]


@pytest.mark.parametrize("pixel_um", [0.125, 0.5])
def test_predictions_come_back_at_the_native_shape(tiny_dataset, pixel_um):
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion", 3, AT_QUARTER_UM)
    predictor = VolumePredictor(cfg, build_model(cfg))
    volume = tifffile.imread(f"{tiny_dataset}/02/t000.tif")[:, :60, :52]
    instances = dict(predictor.slice_instances(volume, voxel_um=(0.4, pixel_um, pixel_um)))
    assert sum(len(i) for i in instances.values()) > 0
    assert all(tuple(i.pred_masks.shape[1:]) == (60, 52) for i in instances.values())
    assert predictor(volume, voxel_um=(0.4, pixel_um, pixel_um)).labels.shape == volume.shape


def block_majority(labels: np.ndarray) -> np.ndarray:
    """(Z, 2H, 2W) labels -> (Z, H, W): each 2 x 2 block takes a label covering at least 2 pixels.
    """
    z, h, w = labels.shape
    out = np.zeros((z, h // 2, w // 2), labels.dtype)
    for label in np.unique(labels[labels > 0]):
        share = (labels == label).reshape(z, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
        out[share >= 0.5] = label
    return out


def test_a_volume_at_twice_the_pixel_count_gives_the_same_objects(registered_tiny, tiny_dataset):
    cfg = tiny_cfg("mlp_fusion", 3, ["DATASETS.TRAIN", "('TINY_01',)", "SOLVER.IMS_PER_BATCH", "2",
                                     "SOLVER.BASE_LR", "0.002", "INPUT.PIXEL_SIZE_UM", "0.25"])
    model, _ = train_tiny(cfg, 160)
    predictor = VolumePredictor(cfg, model)
    volume = tifffile.imread(f"{tiny_dataset}/02/t000.tif")
    native = predictor(volume, voxel_um=TINY_VOXEL).labels
    fine = volume.repeat(2, axis=1).repeat(2, axis=2)  # 0.125 um pixels
    resampled = predictor(fine, voxel_um=(0.4, 0.125, 0.125)).labels
    assert resampled.shape == fine.shape
    assert native.max() >= 2
    accumulator = SEGAccumulator()
    accumulator.add("t", native, block_majority(resampled))
    assert accumulator.summary()["SEG"] >= 0.95
