"""DET and OP_CSB against py-ctcmetrics (the CTC's Python reference) on hand-made CTC folders,
and the result folders the project writes as the CTC's tools read them."""
import os

import numpy as np
import pytest
import tifffile
from ctc_metrics.scripts.evaluate import evaluate_sequence

from emr_d2.data.ctc import CTCFormatError, write_marker_tracks, write_result_tracks
from emr_d2.evaluation.ctc_folders import det_of_folders, seg_of_folders
from emr_d2.evaluation.det import count_detections, op_csb

SHAPE = (4, 16, 24)


def box(volume, label, z, y, x):
    """Paint label into the box of slices z, y, x (each a (start, stop) pair)."""
    volume[z[0]:z[1], y[0]:y[1], x[0]:x[1]] = label
    return volume


def two_markers():
    """Two 4 x 6 x 6 markers side by side."""
    markers = np.zeros(SHAPE, np.uint16)
    box(markers, 1, (0, 4), (2, 8), (2, 8))
    return box(markers, 2, (0, 4), (2, 8), (12, 18))


def result(*boxes):
    volume = np.zeros(SHAPE, np.uint16)
    for label, (z, y, x) in enumerate(boxes, 1):
        box(volume, label, z, y, x)
    return volume


FULL = (0, 4)
CASES = {  # name: [(markers, result) per frame]
    "perfect": [(two_markers(), two_markers())],
    "merge of two markers": [(two_markers(), result((FULL, (2, 8), (2, 18))))],
    "split marker": [(two_markers(), result((FULL, (2, 8), (2, 6)), (FULL, (2, 8), (6, 8)),
                                            (FULL, (2, 8), (12, 18))))],
    "missed marker": [(two_markers(), result((FULL, (2, 8), (12, 18))))],
    "false positive": [(two_markers(), box(two_markers(), 3, FULL, (10, 14), (20, 23)))],
    "empty reference frame": [(two_markers(), two_markers()),
                              (np.zeros(SHAPE, np.uint16), result((FULL, (2, 8), (2, 8))))],
    "empty result frame": [(two_markers(), two_markers()),
                           (two_markers(), np.zeros(SHAPE, np.uint16))],
}


def write_sequence(root, frames):
    """A CTC sequence: 01_GT/TRA markers (+ man_track.txt), 01_GT/SEG (the markers as full masks)
    and 01_RES/maskTTT.tif made valid by write_result_tracks. A perfect frame follows a single
    frame (py-ctcmetrics needs two)."""
    frames = frames + [(two_markers(), two_markers())] * (len(frames) == 1)
    gt, res = root / "01_GT", root / "01_RES"
    for folder in (gt / "TRA", gt / "SEG", res):
        folder.mkdir(parents=True)
    for t, (markers, labels) in enumerate(frames):
        tifffile.imwrite(gt / "TRA" / f"man_track{t:03d}.tif", markers, photometric="minisblack")
        tifffile.imwrite(gt / "SEG" / f"man_seg{t:03d}.tif", markers, photometric="minisblack")
        tifffile.imwrite(res / f"mask{t:03d}.tif", labels, photometric="minisblack")
    write_marker_tracks(str(gt / "TRA"))
    write_result_tracks(str(res))
    return str(res), str(gt)


def reference_scores(res, gt):
    scores = evaluate_sequence(res, gt, metrics=["Valid", "DET", "SEG"], threads=1)
    assert scores["Valid"] == 1
    return scores


@pytest.mark.filterwarnings(
    "ignore:Empty frame:UserWarning")  # py-ctcmetrics on the empty result frame
@pytest.mark.parametrize("case", sorted(CASES))
def test_det_equals_py_ctcmetrics(tmp_path, case):
    res, gt = write_sequence(tmp_path, CASES[case])
    expected = reference_scores(res, gt)
    det = det_of_folders(res, gt).summary()["DET"]
    seg = seg_of_folders(res, gt).summary()["SEG"]
    assert det == pytest.approx(expected["DET"], abs=1e-6)
    assert op_csb(seg, det) == pytest.approx(expected["OP_CSB"], abs=1e-6)


def test_operations_of_the_hand_made_cases():
    merge = count_detections(*CASES["merge of two markers"][0])
    assert (merge.splits, merge.false_negatives, merge.false_positives) == (1, 0, 0)
    split = count_detections(*CASES["split marker"][0])
    assert (split.splits, split.false_negatives, split.false_positives) == (0, 0, 1)
    missed = count_detections(*CASES["missed marker"][0])
    assert (missed.splits, missed.false_negatives, missed.false_positives) == (0, 1, 0)
    assert count_detections(*CASES["false positive"][0]).false_positives == 1
    assert count_detections(*CASES["perfect"][0]).aogm_d == 0


def test_det_is_zero_when_the_operations_cost_more_than_an_empty_result(tmp_path):
    frames = [(two_markers(),
               result(*[(FULL, (y, y + 1), (x, x + 1)) for y in range(9, 16) for x in range(9)]))]
    res, gt = write_sequence(tmp_path, frames)
    assert det_of_folders(res, gt).summary()["DET"] == 0.0 == reference_scores(res, gt)["DET"]


def test_result_tracks_make_labels_unique_over_the_sequence(tmp_path):
    res, _ = write_sequence(tmp_path, [(two_markers(), two_markers())] * 3)
    labels = [set(np.unique(tifffile.imread(os.path.join(res, f"mask{t:03d}.tif")))) - {0}
              for t in range(3)]
    assert labels == [{1, 2}, {3, 4}, {5, 6}]
    tracks = np.loadtxt(os.path.join(res, "res_track.txt"), dtype=int)
    assert tracks.tolist() == [[1, 0, 0, 0], [2, 0, 0, 0], [3, 1, 1, 0], [4, 1, 1, 0], [5, 2, 2, 0],
                               [6, 2, 2, 0]]
    before = {name: os.path.getmtime(os.path.join(res, name)) for name in os.listdir(res)}
    write_result_tracks(res)  # already unique: no frame is rewritten
    assert all(os.path.getmtime(os.path.join(res, n)) == t for n, t in before.items()
               if n.endswith(".tif"))


def test_missing_result_frame_and_missing_markers_name_the_file(tmp_path):
    res, gt = write_sequence(tmp_path, CASES["empty result frame"])
    os.remove(os.path.join(res, "mask001.tif"))
    with pytest.raises(CTCFormatError, match="mask001.tif is missing"):
        det_of_folders(res, gt)
    with pytest.raises(CTCFormatError, match="no tracking markers"):
        det_of_folders(res, str(tmp_path))
    with pytest.raises(CTCFormatError, match="no such folder"):
        det_of_folders(res, str(tmp_path / "02_GT"))
    tifffile.imwrite(os.path.join(res, "mask001.tif"), np.zeros((3, 16, 24), np.uint16))
    with pytest.raises(CTCFormatError,
                       match=r"mask001.tif: result shape \(3, 16, 24\) differs from the markers'"):
        det_of_folders(res, os.path.join(gt, "SEG"))  # GT_DIR/SEG is taken for GT_DIR


def test_the_generators_markers_are_a_valid_ctc_tracking_result(tiny_dataset, tmp_path):
    """The synthetic TRA markers and man_track.txt, copied as a result, are valid for py-ctcmetrics
    (every track's label present in every frame of its range) and score DET 1."""
    gt = os.path.join(tiny_dataset, "02_GT")
    res = tmp_path / "02_RES"
    res.mkdir()
    for name in sorted(os.listdir(os.path.join(gt, "TRA"))):
        source = os.path.join(gt, "TRA", name)
        target = res / (name.replace("man_track", "mask") if name.endswith(".tif")
                        else "res_track.txt")
        target.write_bytes(open(source, "rb").read())
    assert reference_scores(str(res),
                            gt)["DET"] == 1.0 == det_of_folders(str(res), gt).summary()["DET"]
