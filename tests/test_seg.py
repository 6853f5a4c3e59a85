"""SEG and counts against py-ctcmetrics (the CTC's Python reference) on random label volumes."""

import numpy as np
import pytest
import tifffile
from ctc_metrics.utils.representations import match as ctc_match

from emr_d2.evaluation import seg
from emr_d2.evaluation.seg import SEGAccumulator, contingency, pair_counts, score_frame


def random_volume(rng, shape, n_objects, labels, dtype):
    """Random boxes painted with the given labels (later boxes overwrite earlier ones)."""
    volume = np.zeros(shape, dtype=dtype)
    for label in labels[:n_objects]:
        lo = [rng.integers(0, s) for s in shape]
        size = [rng.integers(1, max(s // 2, 2)) for s in shape]
        volume[tuple(slice(a, a + b) for a, b in zip(lo, size))] = label
    return volume


def reference_seg(tmp_path, pairs):
    """Pooled SEG of py-ctcmetrics' matching (written as int64 TIFFs: its label offset must not
    overflow)."""
    ious, n_ref = [], 0
    for i, (gt, res) in enumerate(pairs):
        gt_path, res_path = str(tmp_path / f"gt{i}.tif"), str(tmp_path / f"res{i}.tif")
        tifffile.imwrite(gt_path, gt.astype(np.int64), photometric="minisblack")
        tifffile.imwrite(res_path, res.astype(np.int64), photometric="minisblack")
        labels_ref, _, _, _, iou = ctc_match(gt_path, res_path)
        n_ref += len(labels_ref)
        ious += list(iou)
    return sum(ious) / max(n_ref, 1)


def our_seg(pairs):
    acc = SEGAccumulator()
    for i, (gt, res) in enumerate(pairs):
        acc.add(str(i), gt, res)
    return acc.summary()["SEG"]


CASES = {
    "uint8 small": (np.uint8, lambda r: list(range(1, 30)), np.uint8, lambda r: list(range(1, 30))),
    "non-consecutive": (np.uint16, lambda r: list(r.choice(np.arange(1, 5000), 20, replace=False)),
                        np.uint16, lambda r: list(r.choice(np.arange(1, 9000), 20, replace=False))),
    "gt above 255 and 65535": (np.uint32, lambda r: [300, 70000, 65536, 4_000_000_000, 17, 256],
                               np.uint16, lambda r: list(range(3, 12))),
    "result near dtype max": (np.uint16, lambda r: list(range(1, 12)),
                              np.uint16, lambda r: [65535, 65534, 65533, 65000, 1, 2]),
    "result labels uint32 max": (np.int32, lambda r: list(range(5, 14)),
                                 np.uint32, lambda r: [2**32 - 1, 2**32 - 2, 2**31, 7]),
    "uint64 labels": (np.uint64, lambda r: [2**40, 3, 2**39 + 5, 9, 11],
                      np.uint64, lambda r: [2**41, 1, 2, 3]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_seg_equals_py_ctcmetrics(tmp_path, case):
    gt_dtype, gt_labels, res_dtype, res_labels = CASES[case]
    rng = np.random.default_rng(abs(hash(case)) % 2**32)
    pairs = []
    for _ in range(3):
        gt = random_volume(rng, (6, 24, 24), 8, gt_labels(rng), gt_dtype)
        res = random_volume(rng, (6, 24, 24), 6, res_labels(rng), res_dtype)
        res[gt > 0] = np.where(rng.random(np.count_nonzero(gt)) < 0.7, res_labels(rng)[0],
                               res[gt > 0])
        pairs.append((gt, res))
    assert our_seg(pairs) == pytest.approx(reference_seg(tmp_path, pairs), abs=1e-9)


def test_one_result_object_covering_two_gt_objects(tmp_path):
    gt = np.zeros((4, 20, 20), np.uint16)
    gt[:, 2:8, 2:8], gt[:, 2:8, 10:18] = 1, 2
    res = np.zeros_like(gt)
    res[:, 1:9, 1:19] = 7  # covers both: matched to both references (each > 50% covered)
    ours = score_frame(gt, res)
    assert ours.scores.tolist() == pytest.approx([36 / 144, 48 / 144])
    assert our_seg([(gt, res)]) == pytest.approx(reference_seg(tmp_path, [(gt, res)]), abs=1e-9)


def test_empty_gt_frame_and_frame_without_results(tmp_path):
    gt_full = np.zeros((4, 16, 16), np.uint16)
    gt_full[1:3, 2:8, 2:8] = 5
    empty_gt = np.zeros_like(gt_full)
    some_res = np.zeros_like(gt_full)
    some_res[:, 0:4, 0:4] = 3
    pairs = [(gt_full, np.zeros_like(gt_full)), (empty_gt, some_res), (gt_full, gt_full * 2)]
    ours = our_seg(pairs)
    assert ours == pytest.approx(reference_seg(tmp_path, pairs), abs=1e-9)
    assert ours == pytest.approx(0.5)  # pooled over the 2 reference objects: (0 + 1) / 2


def test_seg_is_pooled_not_mean_of_frames():
    a = np.zeros((2, 8, 8), np.uint8)
    a[:, :4, :4], a[:, 4:, 4:], a[:, :4, 4:] = 1, 2, 3
    b = np.zeros_like(a)
    b[:, :4, :4] = 1
    acc = SEGAccumulator()
    acc.add("three objects, all found", a, a)
    acc.add("one object, missed", b, np.zeros_like(b))
    assert acc.summary()["SEG"] == pytest.approx(3 / 4)
    assert acc.summary()["jaccard_matched"] == 1.0  # the missed object counts in SEG only


def test_jaccard_of_matched_objects_only():
    gt = np.zeros((1, 10, 10), np.uint8)
    gt[0, :4, :4], gt[0, 6:, 6:] = 1, 2
    res = np.zeros_like(gt)
    res[0, :4, :3] = 5  # 12 of 16 voxels: matched, Jaccard 0.75
    acc = SEGAccumulator()
    acc.add("f", gt, res)
    assert acc.summary()["SEG"] == pytest.approx(0.75 / 2)
    assert acc.summary()["jaccard_matched"] == pytest.approx(0.75)
    assert acc.summary()["jaccard_matched_2D"] == pytest.approx(
        0.75)  # one slice: the same cross-section


def test_counts_precision_recall():
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[:, :4, :4], gt[:, 6:, 6:] = 1, 2
    res = np.zeros_like(gt)
    res[:, :4, :4] = 9  # matches 1
    res[:, 5:, :3] = 4  # an extra object
    acc = SEGAccumulator()
    acc.add("f", gt, res)
    s = acc.summary()
    assert (s["matched"], s["missed"], s["extra"]) == (1, 1, 1)
    assert s["precision"] == pytest.approx(0.5) and s["recall"] == pytest.approx(0.5)
    assert s["count_error"] == 0
    assert s["foreground_IoU"] == pytest.approx(32 / (64 + 30))


def test_seg_2d_scores_every_cross_section():
    gt = np.zeros((3, 10, 10), np.uint8)
    gt[:, 2:6, 2:6] = 1
    res = gt.copy()
    res[1] = 0  # the middle cross-section is missed
    acc = SEGAccumulator()
    acc.add("f", gt, res)
    s = acc.summary()
    assert s["SEG"] == pytest.approx(2 / 3)
    assert s["SEG_2D"] == pytest.approx(2 / 3)
    res2 = gt.copy()
    res2[1, 2:6, 2:3] = 0  # 12 of 16 pixels of the middle cross-section remain
    acc2 = SEGAccumulator()
    acc2.add("f", gt, res2)
    assert acc2.summary()["SEG_2D"] == pytest.approx((1 + 0.75 + 1) / 3)
    assert acc2.summary()["SEG"] == pytest.approx(44 / 48)


def test_slice_wise_reference_scores_only_annotated_slices():
    gt = np.zeros((4, 8, 8), np.uint16)
    gt[1, 2:6, 2:6] = 3
    res = np.zeros_like(gt)
    res[:, 2:6, 2:6] = 1  # spans every slice; in 3D it would score 1/4
    acc = SEGAccumulator()
    acc.add("f", gt, res, annotated_slices=[1])
    assert acc.summary()["SEG"] == pytest.approx(1.0)


def test_contingency_of_huge_labels():
    labels = np.array([[0, 2**40, 5], [5, 0, 2**40]], dtype=np.int64)
    table = contingency(labels, (labels > 0).astype(np.uint8))
    assert table.gt_ids.tolist() == [5, 2**40] and table.gt_sizes.tolist() == [2, 2]
    assert table.res_ids.tolist() == [1] and table.res_sizes.tolist() == [4]
    assert table.pair_gt.tolist() == [0, 1] and table.pair_res.tolist() == [0, 0]
    assert table.pair_overlap.tolist() == [2, 2]
    with pytest.raises(ValueError, match="shape"):
        contingency(labels, labels[:, :2])


@pytest.mark.parametrize("block_voxels", [1, 400, 1 << 18])  # a plane, two planes, the whole volume
@pytest.mark.parametrize("per_plane", [False, True])
def test_pair_counts_equal_a_count_of_every_voxel(monkeypatch, block_voxels, per_plane):
    monkeypatch.setattr(seg, "_BLOCK_VOXELS", block_voxels)
    rng = np.random.default_rng(block_voxels)
    gt = random_volume(rng, (5, 12, 16), 8, [2**40, -3, 7, 2**40 + 1, 9, 11, 12, 13], np.int64)
    res = random_volume(rng, (5, 12, 16), 6, [1, 2, 3, 4, 5, 6], np.uint8)
    gt[:, -1, -1], gt[:, 0, 0], res[:, -1, -1], res[:, 0, 0] = 9, 9, 2, 2  # runs across planes
    pairs = pair_counts(gt, res, per_plane)
    counted = {}
    for key in zip(pairs.plane.tolist(), pairs.gt.tolist(), pairs.res.tolist(),
                   pairs.voxels.tolist()):
        counted[key[:3]] = counted.get(key[:3], 0) + key[3]
    z = np.broadcast_to(np.arange(5)[:, None, None] if per_plane else 0, gt.shape)
    foreground = (gt != 0) | (res != 0)
    triples, expected = np.unique(np.stack([z[foreground], gt[foreground], res[foreground]]),
                                  axis=1,
                                  return_counts=True)
    assert counted == {tuple(t): int(n) for t, n in zip(triples.T.tolist(), expected)}


def test_seg_2d_equals_py_ctcmetrics_on_every_slice(tmp_path):
    rng = np.random.default_rng(3)
    gt = random_volume(rng, (5, 24, 24), 8, list(range(1, 9)), np.uint16)
    res = random_volume(rng, (5, 24, 24), 6, [40, 41, 42, 43, 44, 45], np.uint16)
    res[gt > 0] = np.where(rng.random(np.count_nonzero(gt)) < 0.7, 40, res[gt > 0])
    acc = SEGAccumulator()
    acc.add("f", gt, res)
    slices = [(gt[z], res[z]) for z in range(len(gt))]
    assert acc.summary()["SEG_2D"] == pytest.approx(reference_seg(tmp_path, slices), abs=1e-9)


def test_a_reference_split_in_two_along_z_is_one_split_and_no_merge():
    gt = np.zeros((10, 20, 20), np.uint16)
    gt[1:9, 5:15, 5:15] = 1
    gt[1:9, 5:15, 16:19] = 2  # 30 % of the voxels of object 1
    res = gt.copy()
    res[5:9][gt[5:9] == 1] = 3  # the lower half of object 1 becomes another result object
    summary = SEGAccumulator()
    summary.add("t", gt, res)
    counts = summary.summary()
    assert (counts["splits"], counts["merges"]) == (1, 0)
    merged = np.where(gt > 0, 1, 0)  # one result object covering both references
    assert contingency(gt, merged).shared_objects() == (0, 1)


def test_seg_poles_and_core_of_a_known_ellipsoid():
    z, y, x = np.mgrid[:12, :32, :32]
    gt = (((z - 5.5) / 4.2) ** 2 + ((y - 16) / 10) ** 2 + ((x - 16) / 10) ** 2
          <= 1).astype(np.uint16)
    planes = np.flatnonzero(gt.any(axis=(1, 2)))
    assert planes.tolist() == list(range(2, 10))  # 8 slices: the outer quarter is 2 at each end
    table = contingency(gt, gt, slice_wise=True)
    polar = table.polar_cross_sections()
    assert table.gt_planes[polar].tolist() == [2, 3, 8, 9]
    res = gt.copy()
    res[[2, 3, 8, 9]] = 0  # the masks miss the poles, the core is perfect
    acc = SEGAccumulator()
    acc.add("t", gt, res)
    summary = acc.summary()
    assert summary["SEG_core"] == 1.0
    assert summary["SEG_poles"] == 0.0
    assert summary["SEG_2D"] == pytest.approx(4 / 8)
