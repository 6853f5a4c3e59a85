#!/usr/bin/env python
"""The demo behind `make demo`: synthetic SIM+-like data, training, evaluation, pictures.

1. writes the demo dataset to $EMR_DATASETS/SIM-demo (default datasets/SIM-demo) if missing;
2. trains configs/demo/mlp_fusion.yaml on SIM-demo_01 and evaluates it on the held-out
   SIM-demo_02 (RES files, COCO AP tables and the CTC table);
3. draws slices, orthogonal views, fusion weights and training curves;
4. prints where everything is. With --baseline, also trains configs/demo/baseline_2d.yaml.

Every stage prints a line when it starts, a progress line every 10 s and a line with its time;
its full output (detectron2's config and log) goes to <output>/logs/<stage>.log, and training
also writes OUTPUT_DIR/config.yaml and log.txt.
"""
import known_warnings  # noqa: F401  (first: silences known third-party warnings)
import argparse
import json
import os
import re
import sys
import time

from emr_d2.cli import run_child, stop_on_sigterm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


PROGRESS_EVERY_S = 10


def last_progress(log_file: str) -> str:
    """What a stage's log says it is doing now: the last training iteration, else its last line
    (shortened)."""
    with open(log_file, errors="replace") as f:
        text = f.read()
    iterations = re.findall(r"\biter: (\d+)", text)
    lines = [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]
    if iterations and not re.search(r"Start inference|volumes|slices", lines[-1] if lines else ""):
        return f"training, iteration {int(iterations[-1]) + 1}"
    return (lines[-1][:100] if lines else "starting")


def run(stage: str, args: list[str], logs: str) -> None:
    """Run a tool as one stage: one line when it starts, a progress line every PROGRESS_EVERY_S
    seconds and one line with its time; its output goes to <logs>/<stage>.log (whose end is
    shown if it fails)."""
    os.makedirs(logs, exist_ok=True)
    log_file = os.path.join(logs, re.sub(r"[^a-z0-9]+", "_", stage.lower()).strip("_") + ".log")
    start = time.perf_counter()
    print(f"{stage} ...  ({log_file})", flush=True)

    def tick():
        print(f"    {time.perf_counter() - start:5.0f} s  {last_progress(log_file)}", flush=True)

    with open(log_file, "w") as log:
        returncode = run_child([sys.executable, *args], log, cwd=ROOT,
                               every_s=PROGRESS_EVERY_S, on_tick=tick)
    if returncode:
        with open(log_file) as log:
            print(f"failed; the end of {log_file}:\n" + "".join(log.readlines()[-20:]),
                  file=sys.stderr)
        sys.exit(returncode)
    print(f"{stage}: done in {time.perf_counter() - start:.1f} s", flush=True)


def train_and_evaluate(name: str, config: str, output: str, logs: str) -> dict:
    run(f"train + evaluate {name}",
        [os.path.join("tools", "train_net.py"), "--config-file", config, "--resume",
         "OUTPUT_DIR", output], logs)
    with open(os.path.join(output, "inference", "SIM-demo_02", "ctc_metrics.json")) as f:
        return json.load(f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo")
    parser.add_argument("--baseline", action="store_true", help="also train the 2D baseline")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    dataset = os.path.join(os.environ.get("EMR_DATASETS", "datasets"), "SIM-demo")
    logs = os.path.join(args.output, "logs")
    if not os.path.isdir(os.path.join(dataset, "02_GT")):
        run("make data",
            [os.path.join("tools", "make_synthetic.py"), "--out", dataset, "--preset", "demo"],
            logs)
    runs = {"mlp_fusion": "configs/demo/mlp_fusion.yaml"}
    if args.baseline:
        runs["baseline_2d"] = "configs/demo/baseline_2d.yaml"
    metrics = {name: train_and_evaluate(name, config, os.path.join(args.output, name), logs)
               for name, config in runs.items()}

    flagship = os.path.join(args.output, "mlp_fusion")
    pictures = os.path.join(args.output, "pictures")
    raw = os.path.join(dataset, "02", "t000.tif")
    gt = os.path.join(dataset, "02_GT", "SEG", "man_seg000.tif")
    res = os.path.join(flagship, "inference", "SIM-demo_02", "02_RES", "mask000.tif")
    with open(os.path.join(dataset, "voxel_size.json")) as f:
        voxel_size = [str(v) for v in json.load(f)["zyx_um"]]
    run("pictures: volume",
        [os.path.join("tools", "visualize.py"), "volume", "--raw", raw, "--gt", gt, "--pred", res,
         "--out", pictures, "--voxel-size", *voxel_size], logs)
    run("pictures: fusion",
        [os.path.join("tools", "visualize.py"), "fusion", "--config-file", runs["mlp_fusion"],
         "--raw", raw, "--out", os.path.join(pictures, "fusion_weights.png"),
         "--voxel-size", *voxel_size,
         "MODEL.WEIGHTS", os.path.join(flagship, "model_final.pth")], logs)
    run("pictures: curves", [os.path.join("tools", "visualize.py"), "curves", "--metrics",
                             os.path.join(flagship, "metrics.json"), "--out",
                             os.path.join(pictures, "training_curves.png")], logs)

    print(
        f"\n=== emr_d2 demo finished in {(time.perf_counter() - start) / 60:.1f} min; held-out "
        "SIM-demo_02 ===")
    print(
        f"{'config':<12} {'SEG':>6} {'DET':>6} {'OP_CSB':>7} {'SEG_2D':>7} {'volume AP':>10} "
        f"{'precision':>10} "
        f"{'recall':>7}")
    for name, m in metrics.items():
        print(
            f"{name:<12} {m['SEG']:6.3f} {m['DET']:6.3f} {m['OP_CSB']:7.3f} {m['SEG_2D']:7.3f} "
            f"{m['volume_AP']:10.1f} "
            f"{m['precision']:10.3f} {m['recall']:7.3f}")
    print(f"\ndata:         {dataset}")
    for name in runs:
        out = os.path.join(args.output, name)
        print(
            f"{name + ':':<13} model {out}/model_final.pth, metrics "
            f"{out}/inference/SIM-demo_02/ctc_metrics.json,"
            f" CTC results {out}/inference/SIM-demo_02/02_RES/")
    print(
        f"pictures:     {pictures}/slices.png, orthogonal.png, fusion_weights.png, "
        "training_curves.png")
    print(f"TensorBoard:  tensorboard --logdir {args.output}")
    print("These models know the synthetic demo data only: for real nuclei, train on your data "
          "(README: 'Real data in 15 minutes').")
    return 0


if __name__ == "__main__":
    stop_on_sigterm()
    sys.exit(main())
