#!/usr/bin/env python
"""Peak memory and time of predicting stacks of growing size, streaming
(VolumePredictor.predict_file: what tools/predict.py does) and, for comparison, whole-volume
(predict, link and write the whole label volume at once), each size in a fresh process.

The stacks tile demo-preset frames (nuclei about 24 px across, 20 slices deep; uint16,
uncompressed, so the raw stack is memory-mapped) in the plane and along z. The model is the
demo's mlp_fusion: trained weights with --weights (e.g. those of `make demo`), else untrained
ones with the head load fixed at 20 detections per slice. Prints one row per (mode, size)
and the last lines

    depth_bytes_per_voxel=<streaming peak RSS added per voxel by more slices of one size>
    bytes_per_voxel=<streaming peak RSS beyond the smallest stack's, per voxel of the largest>
    rss_ratio=<streaming peak RSS of the largest stack / of the smallest>

    python benchmarks/predict_memory.py --weights output/demo/mlp_fusion/model_final.pth
    python benchmarks/predict_memory.py --weights output/demo/mlp_fusion/model_final.pth \
        --sizes 20x96x96 20x2048x2048 200x2048x2048 --whole-up-to 0

The default sizes separate what grows with a slice (20 x 1024 x 1024 against 20 x 2048 x 2048)
from what grows with the volume (20 against 100 slices of 1024 x 1024).
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ["20x96x96", "20x1024x1024", "100x1024x1024", "20x2048x2048"]
COMMON = ["MODEL.DEVICE", "cpu", "MODEL.RPN.POST_NMS_TOPK_TEST", "100", "TEST.DETECTIONS_PER_IMAGE",
          "20",
          "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "TEST.CTC.SCORE_THRESHOLD", "0.0"]


def child(mode: str, raw: str, out: str, weights: str) -> None:
    """Predict raw into out in this process (mode: streaming or whole; weights: "" for untrained).
    """
    sys.path[:0] = [ROOT, os.path.join(ROOT, "tools")]
    import known_warnings  # noqa: F401  (silences known third-party warnings)
    import torch
    from detectron2.modeling import build_model

    from emr_d2.data.ctc import read_raw_volume, write_label_volume
    from emr_d2.engine import setup_config
    from emr_d2.predictor import VolumePredictor

    torch.manual_seed(0)
    torch.set_num_threads(2)
    opts = ["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu"] if weights else COMMON
    cfg = setup_config(os.path.join(ROOT, "configs", "demo", "mlp_fusion.yaml"), opts)
    predictor = VolumePredictor(cfg) if weights else VolumePredictor(cfg, build_model(cfg))
    if mode == "streaming":
        predictor.predict_file(raw, out)
    else:
        write_label_volume(out, predictor(read_raw_volume(raw)).labels)


def make_stack(path: str, shape: tuple[int, int, int]) -> None:
    """A uint16 stack of the given shape tiled from four demo-preset frames."""
    import numpy as np
    import tifffile

    sys.path.insert(0, ROOT)
    from emr_d2.data.synthetic import PRESETS, SequenceSimulator

    simulator = SequenceSimulator(PRESETS["demo"], np.random.default_rng(0))
    frames = []
    for t in range(4):
        if t:
            simulator.step(t)
        frames.append(simulator.render()[0])
    depth, height, width = frames[0].shape

    def planes():
        for z in range(shape[0]):
            plane = frames[(z // depth) % len(frames)][z % depth]
            yield np.tile(
                plane, (-(-shape[1] // height), -(-shape[2] // width)))[:shape[1], :shape[2]]

    tifffile.imwrite(path, planes(), shape=shape, dtype=np.uint16,
                     bigtiff=np.prod(shape) * 2 > 2 ** 32 - 2 ** 25)


def measure(mode: str, raw: str, out: str, weights: str) -> tuple[float, float]:
    """(peak RSS in bytes, seconds) of one child process."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", mode, raw, out, weights])
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"error: the {mode} run on {raw} failed (status {status})")
    return usage.ru_maxrss * 1024.0, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=SIZES,
                        help="ZxYxX stack sizes (the smallest gives the floor)")
    parser.add_argument("--whole-up-to", type=int, default=100 * 1024 * 1024,
                        help="also run whole-volume prediction up to this many voxels (0: never)")
    parser.add_argument("--weights", default="",
                        help="trained demo mlp_fusion weights (default: untrained)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    if args.weights and not os.path.isfile(args.weights):
        raise SystemExit(f"error: {args.weights}: no such weights file")
    shapes = [tuple(int(v) for v in size.lower().split("x")) for size in args.sizes]
    if any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise SystemExit(f"error: --sizes must be ZxYxX with positive numbers, got {args.sizes}")
    streaming, streaming_shapes = [], []
    print("| mode | stack | voxels | peak RSS (GB) | time (s) |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for shape in shapes:
            raw = os.path.join(folder, "raw.tif")
            make_stack(raw, shape)
            voxels = shape[0] * shape[1] * shape[2]
            modes = ["streaming"] + (["whole"] if voxels <= args.whole_up_to else [])
            for mode in modes:
                rss, seconds = measure(mode, raw, os.path.join(folder, "labels.tif"), args.weights)
                print(
                    f"| {mode} | {'x'.join(map(str, shape))} | {voxels} | {rss / 1e9:.2f} | "
                    f"{seconds:.0f} |", flush=True)
                if mode == "streaming":
                    streaming.append((voxels, rss))
                    streaming_shapes.append((voxels, rss, shape))
    (_, floor), (voxels, largest) = min(streaming), max(streaming)
    for plane in dict.fromkeys(shape[1:] for _, _, shape in streaming_shapes):
        same_plane = sorted((v, r) for v, r, shape in streaming_shapes if shape[1:] == plane)
        if len(same_plane) > 1:  # what grows with the volume: more slices of the same plane size
            (v0, r0), (v1, r1) = same_plane[0], same_plane[-1]
            print(
                f"depth_bytes_per_voxel={(r1 - r0) / (v1 - v0):.2f} ({plane[0]} x {plane[1]} "
                "slices)")
    print(f"bytes_per_voxel={(largest - floor) / voxels:.2f}")
    print(f"rss_ratio={largest / floor:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
