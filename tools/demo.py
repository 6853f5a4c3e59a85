#!/usr/bin/env python
"""The demo behind `make demo`: synthetic SIM+-like data, training, evaluation, pictures.

1. writes the demo dataset to $EMR_DATASETS/SIM-demo (default datasets/SIM-demo) if missing;
2. trains configs/demo/mlp_fusion.yaml on SIM-demo_01 and evaluates it on the held-out
   SIM-demo_02 (RES files, COCO AP tables and the CTC table);
3. draws slices, orthogonal views, fusion weights and training curves;
4. prints where everything is. With --baseline, also trains configs/demo/baseline_2d.yaml.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(args: list[str]) -> None:
    print("$", " ".join(args), flush=True)
    subprocess.run([sys.executable, *args], check=True, cwd=ROOT)


def train_and_evaluate(config: str, output: str) -> dict:
    run([os.path.join("tools", "train_net.py"), "--config-file", config, "--resume", "OUTPUT_DIR", output])
    with open(os.path.join(output, "inference", "SIM-demo_02", "ctc_metrics.json")) as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--baseline", action="store_true", help="also train the 2D baseline")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    dataset = os.path.join(os.environ.get("EMR_DATASETS", "datasets"), "SIM-demo")
    if not os.path.isdir(os.path.join(dataset, "02_GT")):
        run([os.path.join("tools", "make_synthetic.py"), "--out", dataset, "--preset", "demo"])
    runs = {"mlp_fusion": "configs/demo/mlp_fusion.yaml"}
    if args.baseline:
        runs["baseline_2d"] = "configs/demo/baseline_2d.yaml"
    metrics = {name: train_and_evaluate(config, os.path.join(args.output, name)) for name, config in runs.items()}

    flagship = os.path.join(args.output, "mlp_fusion")
    pictures = os.path.join(args.output, "pictures")
    raw, gt = os.path.join(dataset, "02", "t000.tif"), os.path.join(dataset, "02_GT", "SEG", "man_seg000.tif")
    res = os.path.join(flagship, "inference", "SIM-demo_02", "02_RES", "mask000.tif")
    with open(os.path.join(dataset, "voxel_size.json")) as f:
        voxel_size = [str(v) for v in json.load(f)["zyx_um"]]
    run([os.path.join("tools", "visualize.py"), "volume", "--raw", raw, "--gt", gt, "--pred", res, "--out", pictures,
         "--voxel-size", *voxel_size])
    run([os.path.join("tools", "visualize.py"), "fusion", "--config-file", runs["mlp_fusion"], "--raw", raw,
         "--out", os.path.join(pictures, "fusion_weights.png"), "--voxel-size", *voxel_size,
         "MODEL.WEIGHTS", os.path.join(flagship, "model_final.pth")])
    run([os.path.join("tools", "visualize.py"), "curves", "--metrics", os.path.join(flagship, "metrics.json"),
         "--out", os.path.join(pictures, "training_curves.png")])

    print("\n=== emr_d2 demo finished in %.1f min ===" % ((time.perf_counter() - start) / 60))
    for name, m in metrics.items():
        print(f"{name:>12}: SEG {m['SEG']:.3f}  SEG_2D {m['SEG_2D']:.3f}  volume AP {m['volume_AP']:.1f}  "
              f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  (held-out SIM-demo_02)")
    print(f"data:         {dataset}")
    for name in runs:
        out = os.path.join(args.output, name)
        print(f"{name + ':':<13} model {out}/model_final.pth, metrics {out}/inference/SIM-demo_02/ctc_metrics.json,"
              f" CTC results {out}/inference/SIM-demo_02/02_RES/")
    print(f"pictures:     {pictures}/slices.png, orthogonal.png, fusion_weights.png, training_curves.png")
    print(f"TensorBoard:  tensorboard --logdir {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
