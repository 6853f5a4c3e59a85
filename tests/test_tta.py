"""Test-time augmentation: the plane symmetries, the merge, and every prediction path with it."""
import numpy as np
import pytest
import tifffile
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from scipy import ndimage
from torchvision.ops import roi_align

from emr_d2.engine.config_checks import check_config
from emr_d2.modeling.tta import (PLANE_SYMMETRIES, average_mask_outputs, merge_detections,
                                 plane_symmetries)
from emr_d2.predictor import VolumePredictor

from helpers import tiny_cfg

ARRAY_OPS = {
    "identity": lambda a: a, "hflip": lambda a: a[:, ::-1], "vflip": lambda a: a[::-1],
    "rot90": np.rot90, "rot180": lambda a: np.rot90(a, 2), "rot270": lambda a: np.rot90(a, 3),
    "transpose": lambda a: a.T, "antitranspose": lambda a: np.rot90(a, 2).T,
}
TTA = ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.CTC.SCORE_THRESHOLD", "0.05",
       "TEST.AUG.ENABLED", "True"]


def blobs(seed: int, shape=(37, 52)) -> np.ndarray:
    """A (H, W) float image of four separate random bright shapes of different sizes, one in
    each quadrant, placed by seed."""
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    for k, (qy, qx) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        y = qy * shape[0] // 2 + rng.integers(1, shape[0] // 2 - 8)
        x = qx * shape[1] // 2 + rng.integers(1, shape[1] // 2 - 9)
        # rows of random length from the left edge, the first full: one component that fills its
        # box, and no symmetry maps it onto itself
        lengths = np.r_[5 + k, rng.integers(1, 5 + k, 3 + k)]
        block = np.arange(5 + k) < lengths[:, None]
        image[y:y + 4 + k, x:x + 5 + k] = block
    return image


def component_boxes(mask: np.ndarray) -> np.ndarray:
    """(K, 4) XYXY boxes (pixel edges) of the connected components of a (H, W) bool mask."""
    labels, _ = ndimage.label(mask)
    return np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop]
                     for s in ndimage.find_objects(labels)], np.float32).reshape(-1, 4)


@pytest.mark.parametrize("name", sorted(PLANE_SYMMETRIES))
def test_each_symmetry_moves_images_boxes_and_masks_alike(name):
    symmetry = PLANE_SYMMETRIES[name]
    image = blobs(0) > 0
    moved = symmetry.apply_image(torch.from_numpy(image)).numpy()
    np.testing.assert_array_equal(moved, ARRAY_OPS[name](image))
    boxes = torch.from_numpy(component_boxes(image))
    moved_boxes = symmetry.apply_boxes(boxes, image.shape)
    assert symmetry.output_size(image.shape) == moved.shape
    # the transformed image's component boxes are the transformed boxes (in some order)
    expected = component_boxes(moved)
    assert sorted(map(tuple, moved_boxes.tolist())) == sorted(map(tuple, expected.tolist()))
    torch.testing.assert_close(symmetry.invert_boxes(moved_boxes, image.shape), boxes)
    grid = torch.rand(3, 2, 7, 7)
    torch.testing.assert_close(symmetry.invert_image(symmetry.apply_image(grid)), grid)


def test_unknown_or_repeated_symmetries_are_one_line_errors():
    with pytest.raises(ValueError, match="give one or more different names of identity"):
        plane_symmetries(["identity", "rot45"])
    with pytest.raises(ValueError, match="different names"):
        plane_symmetries(["hflip", "hflip"])
    cfg = tiny_cfg("mlp_fusion", 3, freeze=False)
    cfg.TEST.AUG.TRANSFORMS = ["mirror"]
    with pytest.raises(ValueError, match=r"^TEST.AUG.TRANSFORMS: \['mirror'\]: give"):
        check_config(cfg)


class EquivariantDetector:
    """A detector that commutes with every plane symmetry by construction: objects are the
    connected components of image > 0.5 (score from their area), masks the thresholded image
    sampled in each box by ROIAlign (whose sample points are symmetric in each bin)."""

    resolution = 14

    def __init__(self, image: np.ndarray):
        self.image = torch.from_numpy(image)

    def detect(self, symmetry) -> Instances:
        image = symmetry.apply_image(self.image)
        boxes = torch.from_numpy(component_boxes(image.numpy() > 0.5))
        out = Instances(tuple(image.shape))
        out.pred_boxes = Boxes(boxes)
        out.scores = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / 100.0
        out.pred_classes = torch.zeros(len(boxes), dtype=torch.int64)
        return out

    def masks(self, symmetry, instances: list[Instances]) -> list[Instances]:
        image = (symmetry.apply_image(self.image) > 0.5).float()[None, None]
        for item in instances:
            rois = torch.cat([torch.zeros(len(item), 1), item.pred_boxes.tensor], dim=1)
            item.pred_masks = roi_align(image, rois, self.resolution, 1.0, 2, aligned=True)
            item.pred_z_extent = item.pred_boxes.area()[:, None].repeat(1, 2)
        return instances


def test_tta_of_an_equivariant_detector_equals_its_plain_prediction():
    detector = EquivariantDetector(blobs(1))
    identity = PLANE_SYMMETRIES["identity"]
    plain = detector.masks(identity, [detector.detect(identity)])[0]
    transforms = list(PLANE_SYMMETRIES.values())
    merged = merge_detections([[detector.detect(t)] for t in transforms], transforms,
                              [detector.image.shape], nms_threshold=0.5, max_detections=100)
    tta = average_mask_outputs(merged, transforms, detector.masks)[0]
    order_plain, order_tta = plain.scores.argsort(), tta.scores.argsort()
    assert len(tta) == len(plain) == 4
    torch.testing.assert_close(tta.pred_boxes.tensor[order_tta],
                               plain.pred_boxes.tensor[order_plain])
    torch.testing.assert_close(tta.pred_masks[order_tta], plain.pred_masks[order_plain])
    torch.testing.assert_close(tta.pred_z_extent[order_tta], plain.pred_z_extent[order_plain])
    assert plain.pred_masks.std() > 0.1  # the masks are not trivially uniform


def test_tta_merges_boxes_found_under_some_transforms_only():
    detector = EquivariantDetector(blobs(2))
    transforms = plane_symmetries(["identity", "hflip"])
    found = [[detector.detect(t)] for t in transforms]
    found[1][0] = found[1][0][:1]  # the flipped view misses all but one object
    merged = merge_detections(found, transforms, [detector.image.shape], 0.5, 100)[0]
    assert len(merged) == 4  # every object, each once


def assert_same_instances(a, b, atol=1e-3):
    assert [z for z, _ in a] == [z for z, _ in b]
    total = 0
    for (_, x), (_, y) in zip(a, b):
        assert len(x) == len(y)
        total += len(x)
        torch.testing.assert_close(x.pred_boxes.tensor, y.pred_boxes.tensor, atol=atol, rtol=1e-4)
        torch.testing.assert_close(x.scores, y.scores, atol=1e-4, rtol=1e-4)
        assert (x.pred_masks != y.pred_masks).float().mean() < 1e-3
        for name in ("pred_neighbor_masks", "pred_z_extent"):
            assert x.has(name) == y.has(name)
    assert total > 0


@pytest.mark.parametrize("variant,cache", [("mlp_fusion", True), ("mlp_fusion", False),
                                           ("channel_fusion", False)])
def test_tta_with_only_the_identity_equals_plain_prediction(tiny_dataset, variant, cache):
    torch.manual_seed(0)
    volume = tifffile.imread(f"{tiny_dataset}/02/t000.tif")
    extra = TTA[:4] + ["TEST.CTC.CACHE_FEATURES", str(cache)]
    cfg = tiny_cfg(variant, 3, extra)
    model = build_model(cfg).eval()
    plain = VolumePredictor(cfg, model)
    identity = VolumePredictor(
        tiny_cfg(variant, 3, extra + TTA[4:] + ["TEST.AUG.TRANSFORMS", "['identity']"]), model)
    assert identity.transforms and plain.use_cache == identity.use_cache == cache
    assert_same_instances(list(plain.slice_instances(volume)),
                          list(identity.slice_instances(volume)))


@pytest.mark.parametrize("extra", [[], ["MODEL.ROI_MASK_HEAD.NAME", "NeighborMaskHead",
                                        "MODEL.Z_EXTENT.ENABLED", "True"]])
def test_tta_cached_slice_features_equal_per_window_prediction(tiny_dataset, extra):
    torch.manual_seed(0)
    volume = tifffile.imread(f"{tiny_dataset}/02/t001.tif")
    transforms = ["TEST.AUG.TRANSFORMS", "['identity', 'rot90', 'vflip', 'transpose']"]
    cfg = tiny_cfg("mlp_fusion", 5, TTA + transforms + extra)
    model = build_model(cfg).eval()
    cached = VolumePredictor(cfg, model)
    per_window = VolumePredictor(
        tiny_cfg("mlp_fusion", 5, TTA + transforms + extra + ["TEST.CTC.CACHE_FEATURES", "False"]),
        model)
    assert cached.use_cache and not per_window.use_cache and len(cached.transforms) == 4
    a, b = list(cached.slice_instances(volume)), list(per_window.slice_instances(volume))
    assert_same_instances(a, b)
    if extra:
        _, first = next((z, x) for z, x in a if len(x))
        assert first.pred_neighbor_masks.shape == (len(first), 4, *volume.shape[1:])
        assert first.pred_z_extent.shape == (len(first), 2)


def test_tta_changes_the_prediction_and_streams_as_the_whole_volume(tiny_dataset, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion", 3, TTA)
    model = build_model(cfg).eval()
    tta = VolumePredictor(cfg, model)
    plain = VolumePredictor(tiny_cfg("mlp_fusion", 3, TTA[:4]), model)
    source = f"{tiny_dataset}/02/t000.tif"
    volume = tifffile.imread(source)
    count = tta.predict_file(source, str(tmp_path / "labels.tif"), voxel_um=(0.4, 0.25, 0.25))
    whole = tta(volume, voxel_um=(0.4, 0.25, 0.25))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), whole.labels)
    assert count == int(whole.labels.max()) > 0
    untrained_plain = plain(volume, voxel_um=(0.4, 0.25, 0.25))
    assert not np.array_equal(untrained_plain.labels, whole.labels)
