#!/usr/bin/env python
"""Training speed and memory, mixed precision off and on, side by side in one run.

    python benchmarks/train_speed.py                       # CPU: small sizes, minutes
    python benchmarks/train_speed.py --size full           # GPU: SIM+ size, 512 x 512, batch 8
    python benchmarks/train_speed.py --profile mlp_fusion  # where one training step spends time

Each (config, AMP) pair trains in its own process (so that its peak memory is its own) on
synthetic SIM+-like data: seconds per iteration (median after --warmup), data time, and peak
memory (GPU: allocated by torch; CPU: resident set). AMP is SOLVER.AMP.ENABLED with
SOLVER.AMP.PRECISION "auto" (bfloat16 on the CPU and on GPUs that support it). The last lines are
``amp_speedup=<mlp_fusion off / on>`` and ``peak_mem_gb=<mlp_fusion, AMP on>``.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Small sizes for the CPU: the demo's model (ResNet-18 FPN, 64 channels), 96 x 96 demo volumes.
SMALL = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
         "MODEL.FPN.OUT_CHANNELS", "64",
         "MODEL.ANCHOR_GENERATOR.SIZES", "[[8], [16], [32], [64], [128]]",
         "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "600",
         "MODEL.RPN.POST_NMS_TOPK_TRAIN", "200", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64",
         "MODEL.ROI_BOX_HEAD.NUM_CONV", "0", "MODEL.ROI_BOX_HEAD.NUM_FC", "2",
         "MODEL.ROI_BOX_HEAD.FC_DIM", "256",
         "MODEL.ROI_MASK_HEAD.NUM_CONV", "2", "MODEL.ROI_MASK_HEAD.CONV_DIM", "64",
         "MODEL.FUSION.HIDDEN_DIM", "32",
         "INPUT.CROP.ENABLED", "False", "SOLVER.IMS_PER_BATCH", "2"]
PRESET = {"small": ("demo", 3), "full": ("sim+", 2)}  # synthetic preset and frames of sequence 01


def run_child(args) -> dict:
    """Train one config for warmup + iters steps in this process; return its measurements."""
    import torch
    from detectron2.utils.events import EventStorage

    import emr_d2  # noqa: F401
    from emr_d2.data.catalog import register_ctc_dataset
    from emr_d2.engine import Trainer, setup_config

    register_ctc_dataset(args.data, "SPEED")
    cfg = setup_config(os.path.join(ROOT, "configs", f"{args.child}.yaml"),
                       (SMALL if args.size == "small" else []) + [
                           "DATASETS.TRAIN", "('SPEED_01',)", "DATASETS.VAL", "()", "DATASETS.TEST",
                           "()",
                           "TEST.CTC.CALIBRATE_LINKING", "False", "SOLVER.AMP.ENABLED",
                           str(bool(args.amp)),
                           "DATALOADER.NUM_WORKERS", str(args.workers), "SEED", "0", *args.opts])
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    model = Trainer.build_model(cfg)
    optimizer = Trainer.build_optimizer(cfg, model)
    trainer = Trainer.build_step_trainer(cfg, model, Trainer.build_train_loader(cfg), optimizer)
    cuda = cfg.MODEL.DEVICE.startswith("cuda")
    times = []
    with EventStorage() as storage:
        trainer.storage = storage
        for step in range(args.warmup + args.iters):
            if step == args.warmup and cuda:
                torch.cuda.reset_peak_memory_stats()
            trainer.iter = step
            if args.profile and step == args.warmup:
                profile_step(trainer, cuda)
                return {"config": args.child, "profiled": True}
            start = time.perf_counter()
            trainer.run_step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        data_times = [v for v, _ in storage.history("data_time").values()[args.warmup:]]
    peak = (
        torch.cuda.max_memory_allocated()
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    )
    measured = sorted(times[args.warmup:])
    return {"config": args.child, "amp": args.amp, "device": cfg.MODEL.DEVICE,
            "precision": str(getattr(trainer, "precision", "float32")).replace("torch.", ""),
            "s_per_iter": measured[len(measured) // 2],
            "data_s": sorted(data_times)[len(data_times) // 2],
            "peak_mem_gb": peak / 1e9}


def profile_step(trainer, cuda: bool) -> None:
    """One training step under torch.profiler: the top operators by own time and by own memory."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities, profile_memory=True) as prof:
        trainer.run_step()
    averages = prof.key_averages()
    device = "cuda" if cuda else "cpu"
    print(averages.table(sort_by=f"self_{device}_time_total", row_limit=15), file=sys.stderr)
    print(averages.table(sort_by=f"self_{device}_memory_usage", row_limit=10), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+",
                        default=["baseline_2d", "mlp_fusion", "late_fusion_center"])
    parser.add_argument("--size", choices=["small", "full"], default=None,
                        help="small (CPU default) or full (GPU default): SIM+ volumes, the configs "
                             "as they are")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile", metavar="CONFIG",
                        help="profile one step of CONFIG (AMP off) instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--amp", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    import torch

    size = args.size or ("full" if torch.cuda.is_available() else "small")
    from emr_d2.data.synthetic import write_synthetic_dataset

    work = tempfile.TemporaryDirectory(prefix="train_speed_")  # removed when main returns
    data = os.path.join(work.name, "SPEED")
    preset, frames = PRESET[size]
    write_synthetic_dataset(data, preset, seed=0, frames=frames)
    jobs = [(args.profile, 0)] if args.profile else [(c, amp) for c in args.configs
                                                     for amp in (0, 1)]
    rows = []
    for config, amp in jobs:
        command = [sys.executable, os.path.abspath(__file__), "--child", config, "--amp", str(amp),
                   "--data", data,
                   "--size", size, "--iters", str(args.iters), "--warmup", str(args.warmup),
                   "--workers",
                   str(args.workers)] + (["--profile", config] if args.profile else []) + args.opts
        out = subprocess.run(command, capture_output=True, text=True,
                             env=dict(os.environ, PYTHONWARNINGS="ignore"))
        if out.returncode:
            sys.exit(f"{config} (AMP {'on' if amp else 'off'}) failed:\n{out.stderr[-3000:]}")
        if args.profile:
            print(out.stderr[out.stderr.find("-----"):])
            return
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"measured {config} AMP {'on' if amp else 'off'}", file=sys.stderr)
    print(
        f"size {size}, device {rows[0]['device']}, median of {args.iters} iterations after "
        f"{args.warmup}\n")
    print("| config | AMP | precision | s / iter | data s / iter | peak memory (GB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['config']} | {'on' if r['amp'] else 'off'} | {r['precision']} | "
            f"{r['s_per_iter']:.3f} | "
            f"{r['data_s']:.3f} | {r['peak_mem_gb']:.2f} |")
    flagship = {r["amp"]: r for r in rows if r["config"] == "mlp_fusion"}
    if len(flagship) == 2:
        print(f"amp_speedup={flagship[0]['s_per_iter'] / flagship[1]['s_per_iter']:.2f}")
        print(f"peak_mem_gb={flagship[1]['peak_mem_gb']:.2f}")


if __name__ == "__main__":
    main()
