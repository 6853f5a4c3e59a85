"""z-linking of per-slice instances into 3D label volumes."""
import numpy as np
import pytest

from emr_d2.linking import SlicePrediction, SliceRegions, link_slices, link_volume, paste_slice
from emr_d2.evaluation.seg import score_frame


def ellipsoids(shape=(12, 48, 48)):
    """Three touching-free ellipsoids, the middle one spanning every slice."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint16)
    for label, (cz, cy, cx, rz,
                ry) in enumerate([(5, 12, 12, 4, 9), (6, 34, 14, 7, 10), (4, 24, 36, 3, 8)], 1):
        labels[((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / ry) ** 2 <= 1] = label
    return labels


def per_slice(labels, drop=None):
    """(z, SlicePrediction) of every slice; drop=(label, z) removes one slice of one object."""
    for z in range(labels.shape[0]):
        ids = [i for i in np.unique(labels[z]) if i and (i, z) != drop]
        masks = np.stack([labels[z] == i
                          for i in ids]) if ids else np.zeros((0,) + labels.shape[1:], bool)
        yield z, SlicePrediction(masks, np.linspace(0.9, 0.6, len(ids)))


@pytest.mark.parametrize("strategy", ["overlap", "connected"])
def test_relinks_a_clean_volume_exactly(strategy):
    gt = ellipsoids()
    linked = link_volume(per_slice(gt), gt.shape, strategy=strategy, threshold=0.3, look_back=1)
    assert linked.labels.dtype == np.uint16
    assert score_frame(gt, linked.labels).scores.mean() == pytest.approx(1.0)
    assert len(linked.scores) == 3


def test_iou_linking_splits_off_only_tiny_poles():
    # A one-pixel pole has IoU 1/area with the next slice: IoU linking leaves it apart.
    gt = ellipsoids()
    linked = link_volume(per_slice(gt), gt.shape, strategy="iou", threshold=0.3, look_back=1)
    assert score_frame(gt, linked.labels).scores.mean() >= 0.99


def test_look_back_bridges_a_missed_slice():
    gt = ellipsoids()
    dropped = link_volume(per_slice(gt, drop=(2, 6)), gt.shape, strategy="iou", threshold=0.3,
                          look_back=1)
    assert score_frame(gt, dropped.labels).scores.mean() >= 0.99
    assert len(set(np.unique(dropped.labels[gt == 2])) - {0}) == 1  # one object
    assert np.count_nonzero(dropped.labels[6][gt[6] == 2]) > 0.9 * np.count_nonzero(
        gt[6] == 2)  # gap filled

    unfilled = link_volume(per_slice(gt, drop=(2, 6)), gt.shape, strategy="iou", threshold=0.3,
                           look_back=1, fill_gaps=False)
    assert len(np.unique(unfilled.labels[gt == 2])) == 2  # one object and the empty gap
    no_bridge = link_volume(per_slice(gt, drop=(2, 6)), gt.shape, strategy="iou", threshold=0.3,
                            look_back=0)
    assert len(np.unique(no_bridge.labels[gt == 2])) == 3  # split in two objects


def test_min_slices_drops_short_objects():
    gt = ellipsoids()
    gt[0, 40:44, 40:44] = 9  # a one-slice speck
    kept = link_volume(per_slice(gt), gt.shape, strategy="overlap", min_slices=1)
    dropped = link_volume(per_slice(gt), gt.shape, strategy="overlap", min_slices=2)
    assert kept.labels.max() == 4 and dropped.labels.max() == 3


def test_paste_resolves_overlaps_by_score():
    masks = np.zeros((2, 8, 8), bool)
    masks[0, :, :5] = True
    masks[1, :, 3:] = True
    label_map, scores, kept = paste_slice(masks, np.array([0.9, 0.5]))
    assert (label_map[:, 3:5] == 1).all()  # the higher score wins the overlap
    assert scores.tolist() == [0.9, 0.5] and kept.tolist() == [0, 1]
    hidden = np.zeros((2, 8, 8), bool)
    hidden[:, :4, :4] = True
    label_map, scores, kept = paste_slice(hidden, np.array([0.3, 0.8]))
    assert scores.tolist() == [0.8] and label_map.max() == 1 and kept.tolist() == [1]


def test_overlap_links_shrinking_poles_that_iou_misses():
    slice_maps = np.zeros((2, 20, 20), np.int32)
    slice_maps[0, 2:18, 2:18] = 1  # 256 pixels
    slice_maps[1, 8:12, 8:12] = 1  # 16 pixels inside: IoU 1/16, overlap 1
    scores = [np.array([0.9]), np.array([0.9])]
    regions = SliceRegions(slice_maps, scores)
    assert link_slices(regions, strategy="iou", threshold=0.3, min_slices=1).labels.max() == 2
    assert link_slices(regions, strategy="overlap", threshold=0.3, min_slices=1).labels.max() == 1


def test_object_score_is_mean_of_slice_scores():
    slice_maps = np.zeros((2, 6, 6), np.int32)
    slice_maps[:, 1:5, 1:5] = 1
    linked = link_slices(SliceRegions(slice_maps, [np.array([0.9]), np.array([0.5])]))
    assert linked.scores.tolist() == pytest.approx([0.7])


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="strategy: 'magic' is not one of"):
        link_slices(SliceRegions(np.zeros((1, 4, 4), np.int32), [np.zeros(0)]), strategy="magic")


def test_oracle_link_of_perfect_masks_with_scrambled_ids_is_perfect_while_linking_is_not():
    from emr_d2.linking import link_with_reference, paste_volume
    from emr_d2.evaluation.seg import SEGAccumulator

    gt = ellipsoids()
    gt[6:, 30:, :] = 0  # the second object ends halfway, and a stray region overlaps nothing
    regions = paste_volume(per_slice(gt), gt.shape)
    regions.maps[2, 45:, 45:] = regions.maps[2].max() + 1
    regions.scores[2] = np.append(regions.scores[2], 0.5)
    linked = link_slices(regions, strategy="iou", threshold=0.99, look_back=0)
    oracle = link_with_reference(regions.maps, gt)
    acc_linked, acc_oracle = SEGAccumulator(), SEGAccumulator()
    acc_linked.add("t", gt, linked.labels)
    acc_oracle.add("t", gt, oracle)
    assert acc_oracle.summary()["SEG"] == 1.0
    assert acc_oracle.summary()["extra"] == 1  # the stray region stays an object of its own
    assert acc_linked.summary()["SEG"] < 1.0


def stacked_nuclei():
    """Two nuclei stacked along z whose caps touch (slices 5 and 6; the upper one 1 px to the
    side): overlap 0.8 and IoU 0.7 between the caps, so linking by overlap merges them."""
    y, x = np.mgrid[:32, :32]
    gt = np.zeros((12, 32, 32), np.uint16)
    for z, radius in enumerate([3, 5, 7, 7, 5, 3]):
        gt[z][(y - 16) ** 2 + (x - 16) ** 2 <= radius ** 2] = 1
        gt[11 - z][(y - 16) ** 2 + (x - 17) ** 2 <= radius ** 2] = 2
    return gt


@pytest.mark.parametrize("strategy", ["iou", "overlap", "connected"])
def test_the_shape_split_separates_stacked_nuclei_that_linking_merges(strategy):
    gt = stacked_nuclei()
    merged = link_volume(per_slice(gt), gt.shape, strategy=strategy, threshold=0.3, look_back=1,
                         split_depth=0.0)
    assert len(merged.scores) == 1 and score_frame(gt, merged.labels).scores.mean() < 0.6
    split = link_volume(per_slice(gt), gt.shape, strategy=strategy, threshold=0.3, look_back=1,
                        split_depth=0.25)
    assert len(split.scores) == 2 and score_frame(gt, split.labels).scores.mean() == 1.0


def test_the_shape_split_leaves_convex_objects_and_shallow_dips_whole():
    gt = ellipsoids()
    linked = link_volume(per_slice(gt), gt.shape, strategy="overlap", threshold=0.3, look_back=1,
                         split_depth=0.25)
    assert len(linked.scores) == 3 and score_frame(
        gt, linked.labels
    ).scores.mean() == pytest.approx(1.0)
    y, x = np.mgrid[:32, :32]
    dented = np.zeros((7, 32, 32), np.uint16)
    for z, radius in enumerate([3, 5, 7, 6.3, 7, 5, 3]):  # a waist of 0.81 of the widest area
        dented[z][(y - 16) ** 2 + (x - 16) ** 2 <= radius ** 2] = 1
    linked = link_volume(per_slice(dented), dented.shape, strategy="overlap", threshold=0.3,
                         look_back=1,
                         split_depth=0.25)
    assert len(linked.scores) == 1


def test_necks_are_found_deepest_first():
    from emr_d2.linking.tracks import deepest_neck

    assert deepest_neck(np.array([9.0, 25, 49, 49, 25, 9, 9, 25, 49]), 0.25) == 5
    assert deepest_neck(np.array([9.0, 25, 49, 40, 49]), 0.25) is None  # 40 / 49 = 0.82
    assert deepest_neck(np.array([9.0, 25, 49, 30, 49, 10, 49]),
                        0.25) == 5  # 10 / 49 before 30 / 49
    assert deepest_neck(np.array([49.0, 9]), 0.25) is None
