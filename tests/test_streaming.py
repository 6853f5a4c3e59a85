"""Streaming linking gives the whole-volume labels, slice by slice, holding only open slices."""
import numpy as np
import pytest

from emr_d2.linking import SlicePrediction, StreamingLinker, link_volume

from test_linking import stacked_nuclei
from test_z_extent import stacked_discs, with_extents


def noisy_predictions(seed: int = 0, depth: int = 24, size: int = 48):
    """(z, SlicePrediction with neighbour masks and extents) of drifting, growing and shrinking
    discs that touch along z, with missed slices (look-back and gap fills matter), specks
    (min_slices matters), necks (the shape split matters), neighbour masks and extents."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    objects = [(rng.integers(0, depth - 4), rng.integers(4, 9), rng.uniform(10, 38, 2))
               for _ in range(12)]
    for z in range(depth):
        masks, extents = [], []
        for start, length, (cy, cx) in objects:
            if start <= z < start + length and rng.uniform() > 0.1:
                t = (z - start + 0.5) / length
                radius = 2 + 7 * np.sin(np.pi * t) + rng.normal(0, 0.5)
                masks.append((y - cy - 0.3 * z) ** 2 + (x - cx) ** 2 <= radius ** 2)
                extents.append([(z - start) * 1.5 + rng.normal(0, 1), (start + length - 1 - z) * 1.5
                                + rng.normal(0, 1)])
        if rng.uniform() < 0.3:  # a speck
            masks.append((y - rng.integers(5, 40)) ** 2 + (x - rng.integers(5, 40)) ** 2 <= 2)
            extents.append([0.0, 0.0])
        masks = np.array(masks, bool).reshape(-1, size, size)
        neighbors = np.stack([np.roll(masks, s, axis=1) for s in (-1, 1)], axis=1)  # (K, 2, H, W)
        yield z, SlicePrediction(masks, rng.uniform(0.5, 1.0, len(masks)), neighbors,
                                 np.clip(np.array(extents).reshape(-1, 2), 0, None))


def stream(predictions, shape, **options):
    linker = StreamingLinker(shape, window_offsets=[-1, 0, 1], z_spacing_um=1.5, **options)
    labels = np.zeros(shape, np.uint16)
    held = 0
    for z, prediction in predictions:
        for zs, plane in linker.add(z, prediction):
            labels[zs] = plane
        held = max(held, len(linker.regions.maps))
    for zs, plane in linker.finish():
        labels[zs] = plane
    return labels, np.array(linker.scores), held


OPTIONS = [dict(strategy="iou", threshold=0.3, look_back=1),
           dict(strategy="overlap", threshold=0.5, look_back=2, min_slices=2, split_depth=0.15),
           dict(strategy="iou", threshold=0.2, look_back=2, fill_gaps=False, extent_gate_um=1.0,
                extent_trim_um=1.0),
           dict(strategy="predicted", threshold=0.3, look_back=2, min_slices=3, split_depth=0.25,
                extent_trim_um=0.5),
           dict(strategy="overlap", threshold=0.1, look_back=0, split_depth=0.35,
                extent_gate_um=2.0)]


@pytest.mark.parametrize("options", OPTIONS,
                         ids=[f"{o['strategy']}-{i}" for i, o in enumerate(OPTIONS)])
@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_equals_whole_volume_linking(options, seed):
    shape = (24, 48, 48)
    whole = link_volume(noisy_predictions(seed), shape, window_offsets=[-1, 0, 1], z_spacing_um=1.5,
                        **options)
    labels, scores, held = stream(noisy_predictions(seed), shape, **options)
    assert whole.labels.max() > 5
    np.testing.assert_array_equal(labels, whole.labels)
    np.testing.assert_allclose(scores, whole.scores)
    assert held < shape[0]  # never the whole volume


def test_streaming_holds_only_the_slices_of_open_objects():
    one = stacked_nuclei()  # two nuclei of 6 slices, touching along z
    gt = np.concatenate([np.where(one > 0, one + 2 * k, 0) for k in range(5)]
                        + [one[:1] * 0]).astype(np.uint16)
    gt = np.insert(gt, [12, 24, 36, 48], 0, axis=0)  # an empty slice between the pairs: 65 slices
    labels, _, held = stream(with_extents(gt), gt.shape,
                             strategy="overlap", threshold=0.3, look_back=0, split_depth=0.25)
    np.testing.assert_array_equal(labels, gt)
    assert held <= 14  # a linked pair (12 slices) and the look-back, not the 65 slices


def test_streaming_refuses_what_it_cannot_stream():
    with pytest.raises(ValueError, match="connected"):
        StreamingLinker((4, 8, 8), strategy="connected")
    linker = StreamingLinker((4, 8, 8))
    with pytest.raises(ValueError, match="in order"):
        linker.add(1, SlicePrediction(np.zeros((0, 8, 8), bool), np.zeros(0)))
    gt = stacked_discs()
    linker = StreamingLinker(gt.shape)
    linker.add(0, SlicePrediction(gt[:1] == 1, np.ones(1)))
    with pytest.raises(ValueError, match="1 of 10 slices"):
        linker.finish()


@pytest.mark.parametrize(
    "extra", [[], ["TEST.CTC.LINKING", "overlap", "TEST.CTC.LINK_THRESHOLD", "0.5",
    "TEST.CTC.LOOK_BACK", "2", "TEST.CTC.SPLIT_DEPTH", "0.25"],
                                   ["MODEL.ROI_MASK_HEAD.NAME", "NeighborMaskHead",
                                    "TEST.CTC.LINKING", "predicted"],
                                   ["MODEL.Z_EXTENT.ENABLED", "True", "TEST.CTC.EXTENT_GATE_UM",
                                    "0.5",
                                    "TEST.CTC.EXTENT_TRIM_UM", "0.5"],
                                   ["TEST.CTC.LINKING", "connected"]])
def test_predict_file_streams_the_whole_volume_labels(tiny_dataset, tmp_path, extra):
    import tifffile
    import torch
    from detectron2.modeling import build_model

    from emr_d2.predictor import VolumePredictor

    from helpers import tiny_cfg

    torch.manual_seed(0)
    cfg = tiny_cfg("mlp_fusion",
                   3,
                   ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.CTC.SCORE_THRESHOLD",
                      "0.05",
                                     *extra])
    predictor = VolumePredictor(cfg, build_model(cfg))
    source = f"{tiny_dataset}/02/t000.tif"
    count = predictor.predict_file(source, str(tmp_path / "labels.tif"), voxel_um=(0.4, 0.25, 0.25))
    whole = predictor(tifffile.imread(source), voxel_um=(0.4, 0.25, 0.25))
    written = tifffile.imread(tmp_path / "labels.tif")
    assert written.dtype == np.uint16 and count == int(whole.labels.max()) > 0
    np.testing.assert_array_equal(written, whole.labels)


def test_label_planes_are_written_as_bigtiff_and_never_half(tmp_path):
    import tifffile

    from emr_d2.data.ctc import write_label_planes

    planes = [np.full((8, 8), z, np.uint16) for z in range(5)]
    write_label_planes(str(tmp_path / "big.tif"), iter(planes), (5, 8, 8), bigtiff=True)
    with tifffile.TiffFile(tmp_path / "big.tif") as tif:
        assert tif.is_bigtiff
        np.testing.assert_array_equal(tif.asarray(), np.stack(planes))

    def killed():
        yield planes[0]
        raise KeyboardInterrupt  # as a kill during prediction

    with pytest.raises(KeyboardInterrupt):
        write_label_planes(str(tmp_path / "half.tif"), killed(), (5, 8, 8))
    assert list(tmp_path.iterdir()) == [tmp_path / "big.tif"]


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    import torch
    from detectron2.modeling import build_model

    from helpers import tiny_cfg

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.save({"model": build_model(tiny_cfg("mlp_fusion", 3)).state_dict()}, path)
    return str(path)


def predict_tool(tiny_dataset, weights, output, *flags, wait=True):
    import os
    import subprocess
    import sys

    from helpers import CONFIGS, ROOT, TINY_MODEL

    args = [sys.executable, os.path.join(ROOT, "tools", "predict.py"), "--config-file",
            os.path.join(CONFIGS, "mlp_fusion.yaml"), "--input", os.path.join(tiny_dataset, "02"),
            "--output", str(output),
            *flags, *TINY_MODEL, "INPUT.NUM_SLICES", "3", "MODEL.WEIGHTS", weights,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.CTC.SCORE_THRESHOLD", "0.3"]
    env = dict(os.environ, PYTHONWARNINGS="ignore", EMR_DATASETS=os.path.dirname(tiny_dataset))
    if not wait:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, check=True)


def test_two_processes_write_what_one_writes_and_resume_skips_finished_volumes(
    tiny_dataset, random_weights, tmp_path):
    predict_tool(tiny_dataset, random_weights, tmp_path / "one")
    run = predict_tool(tiny_dataset, random_weights, tmp_path / "two", "--num-gpus", "2")
    assert "with 2 process(es)" in run.stdout
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == ["mask000.tif", "mask001.tif", "mask002.tif", "res_track.txt"]
    assert names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two"
                                                          / name).read_bytes(), name
    (tmp_path / "two" / "mask001.tif").unlink()
    before = (tmp_path / "two" / "mask000.tif").stat().st_mtime_ns
    run = predict_tool(tiny_dataset, random_weights, tmp_path / "two", "--resume")
    assert "Wrote 1 label volume(s)" in run.stdout and "2 already there, skipped" in run.stdout
    assert (tmp_path / "two" / "mask000.tif").stat().st_mtime_ns == before
    assert (tmp_path / "two" / "mask001.tif").read_bytes() == (tmp_path / "one"
                                                               / "mask001.tif").read_bytes()


def test_a_kill_during_prediction_leaves_only_whole_volumes(tiny_dataset, random_weights, tmp_path):
    import time

    import tifffile

    process = predict_tool(tiny_dataset, random_weights, tmp_path / "out", "--resume", wait=False)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "out").glob("mask*.tif")):
        time.sleep(0.05)
    process.kill()
    process.wait()
    masks = list((tmp_path / "out").glob("mask*.tif"))
    assert masks  # it was killed after writing at least one volume
    for path in masks:
        assert tifffile.imread(path).shape == (8, 64, 64)
    run = predict_tool(tiny_dataset, random_weights, tmp_path / "out", "--resume")
    assert f"{len(masks)} already there, skipped" in run.stdout
    assert sorted(p.name
                  for p
                  in (tmp_path / "out").glob("mask*.tif")) == ["mask000.tif", "mask001.tif",
                                                               "mask002.tif"]


def test_a_raw_stack_reads_the_slices_a_memory_map_reads(tmp_path):
    import tifffile

    from emr_d2.data.ctc import RawStack

    data = np.arange(5 * 6 * 7, dtype=np.uint16).reshape(5, 6, 7)
    tifffile.imwrite(tmp_path / "plain.tif", data)
    tifffile.imwrite(tmp_path / "packed.tif", data, compression="zlib")  # cannot be memory-mapped
    tifffile.imwrite(tmp_path / "big_endian.tif", data.astype(">u2"), byteorder=">")
    for name in ("plain.tif", "packed.tif", "big_endian.tif"):
        stack = RawStack(str(tmp_path / name))
        assert stack.shape == (5, 6, 7) and stack.ndim == 3
        np.testing.assert_array_equal(stack[3], data[3])
        np.testing.assert_array_equal(stack[np.array([4, 0])], data[[4, 0]])
        np.testing.assert_array_equal(stack[2, ::2, 1:], data[2, ::2, 1:])
