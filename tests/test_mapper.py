"""SliceStackMapper: N-slice windows, edge padding, augmentation applied alike to image and masks.
"""
import numpy as np
import pytest
import tifffile
import torch
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T

from emr_d2.data.augment import IntensityAugmentation, RandomRot90, Rot90Transform
from emr_d2.data.mapper import SliceStackMapper
from emr_d2.engine import build_mapper
from emr_d2.data.window import (SliceWindow, normalise, percentile_range, window_indices,
                                window_offsets)
from emr_d2.engine import setup_config


def mapper(num_slices=5, padding="replicate", augmentations=(), intensity=None, is_train=True):
    return SliceStackMapper(is_train, augmentations=list(augmentations),
                            window=SliceWindow(num_slices, padding),
                            percentiles=(1.0, 99.8), intensity_augmentation=intensity)


@pytest.fixture(scope="module")
def records(registered_tiny):
    return DatasetCatalog.get("TINY_01")


def normalised_volume(record):
    raw = tifffile.imread(record["file_name"])
    return normalise(raw, *percentile_range(raw, (1.0, 99.8)))


@pytest.mark.parametrize("padding,expected", [
    ("replicate", [0, 0, 0, 1, 2]), ("reflect", [2, 1, 0, 1, 2]), ("zero", [None, None, 0, 1, 2]),
])
def test_window_at_z0_pads_as_configured(records, padding, expected):
    record = next(r for r in records if r["z"] == 0)
    volume = normalised_volume(record)
    image = mapper(5, padding)(record)["image"]
    assert image.shape == (5,) + volume.shape[1:] and image.dtype == torch.float32
    for position, source in enumerate(expected):
        want = np.zeros_like(volume[0]) if source is None else volume[source]
        np.testing.assert_allclose(image[position].numpy(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_slices", [1, 2, 3, 4, 7])
def test_any_window_size(records, num_slices):
    record = next(r for r in records if r["z"] == 4)
    out = mapper(num_slices)(record)
    volume = normalised_volume(record)
    assert out["image"].shape[0] == num_slices
    np.testing.assert_allclose(out["image"][num_slices // 2].numpy(), volume[4], atol=1e-6)


def test_window_indices_for_even_n_and_deep_reflection():
    assert window_indices(0, 10, window_offsets(4), "replicate").tolist() == [0, 0, 0, 1]
    assert window_indices(1, 2, window_offsets(7), "reflect").tolist() == [0, 1, 0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match="SLICE_PADDING"):
        window_indices(0, 3, window_offsets(3), "wrap")


def test_centre_slice_masks_equal_the_reference_slice(records, registered_tiny):
    record = max(records, key=lambda r: len(r["annotations"]))
    out = mapper(3)(record)
    gt = tifffile.imread(
        f"{registered_tiny}/01_GT/SEG/man_seg{record['frame']:03d}.tif")[record["z"]]
    masks = out["instances"].gt_masks.tensor.numpy()
    expected = [gt == i for i in np.unique(gt) if i]
    assert len(masks) == len(expected) >= 2
    assert sorted(m.tobytes() for m in masks) == sorted(m.tobytes() for m in expected)
    assert (out["instances"].gt_classes == 0).all()
    boxes = out["instances"].gt_boxes.tensor
    for mask, box in zip(masks, boxes):
        ys, xs = np.nonzero(mask)
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("augmentation,apply", [
    (T.RandomFlip(prob=1.0, horizontal=True, vertical=False), lambda a: a[..., ::-1]),
    (T.RandomFlip(prob=1.0, horizontal=False, vertical=True), lambda a: a[..., ::-1, :]),
])
def test_flip_moves_image_and_masks_together(records, augmentation, apply):
    record = max(records, key=lambda r: len(r["annotations"]))
    plain = mapper(3)(record)
    flipped = mapper(3, augmentations=[augmentation])(record)
    np.testing.assert_array_equal(flipped["image"].numpy(), apply(plain["image"].numpy()))
    want = sorted(apply(m).tobytes() for m in plain["instances"].gt_masks.tensor.numpy())
    assert sorted(m.tobytes() for m in flipped["instances"].gt_masks.tensor.numpy()) == want


def test_rot90_moves_image_masks_and_coordinates_together(records):
    record = max(records, key=lambda r: len(r["annotations"]))
    plain = mapper(3)(record)
    rng_state = np.random.get_state()
    np.random.seed(0)
    k = np.random.randint(4)
    np.random.seed(0)
    rotated = mapper(3, augmentations=[RandomRot90()])(record)
    np.random.set_state(rng_state)
    np.testing.assert_array_equal(rotated["image"].numpy(),
                                  np.rot90(plain["image"].numpy(), k, axes=(1, 2)))
    transform = Rot90Transform(1, 4, 6)
    point = np.array([[1.0, 0.0]])  # x=1, y=0 in a 4 x 6 image
    image = np.zeros((4, 6))
    image[0, 1] = 1
    ys, xs = np.nonzero(transform.apply_image(image))
    assert transform.apply_coords(point).tolist() == [[0.0, 5.0]] and (xs[0], ys[0]) == (0, 4)


def test_scale_jitter_resizes_image_and_masks_alike(records):
    record = max(records, key=lambda r: len(r["annotations"]))
    out = mapper(3, augmentations=[T.ResizeTransform(64, 64, 96, 80)])(record)
    assert out["image"].shape == (3, 96, 80)
    assert out["instances"].gt_masks.tensor.shape[1:] == (96, 80)
    assert out["instances"].image_size == (96, 80)


def test_intensity_augmentation_is_the_same_for_all_slices(records):
    record = next(r for r in records if r["z"] == 0)
    aug = IntensityAugmentation(gamma=(0.5, 2.0), contrast=(0.5, 2.0), noise_std=0.0)
    out = mapper(5, "replicate", intensity=aug)(record)["image"]
    plain = mapper(5, "replicate")(record)["image"]
    assert not torch.allclose(out, plain)
    # positions 0..2 are all slice 0 (replicate padding): augmented alike, they stay equal
    assert torch.equal(out[0], out[2]) and torch.equal(out[1], out[2])


def test_test_mode_has_no_instances_and_keeps_native_size(records):
    out = mapper(3, is_train=False)(records[0])
    assert "instances" not in out and "annotations" not in out
    assert (out["height"], out["width"]) == tuple(out["image"].shape[1:])
    assert {"volume_id", "z", "file_name", "image_id"} <= set(out)


def test_mapper_from_config(records):
    cfg = setup_config(opts=["INPUT.NUM_SLICES", "3", "INPUT.SCALE_JITTER", "(0.8, 1.25)"])
    out = build_mapper(cfg, is_train=True)(records[3])
    assert out["image"].shape[0] == 3
    assert out["instances"].gt_masks.tensor.shape[1:] == out["image"].shape[1:]
