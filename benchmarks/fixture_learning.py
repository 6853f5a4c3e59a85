#!/usr/bin/env python
"""Does the test suite's tiny model learn on every CPU kernel path? (the `trained` fixture)

    python benchmarks/fixture_learning.py                       # seeds 1-5 x default/avx2/avx512
    python benchmarks/fixture_learning.py --seeds 1 --paths avx512
    python benchmarks/fixture_learning.py --iterations 30 --base-lr 0.001     # another schedule

PyTorch picks its CPU kernels (ATen's ATEN_CPU_CAPABILITY, oneDNN's ONEDNN_MAX_CPU_ISA) by what the
processor offers, and the floating-point trajectory of a short training differs between them. Each
(seed, kernel path) trains the fixture's model with tests/helpers.train_learning_model in its own
process and reads its CTC metrics on the held-out TINY_02. Rows go to
benchmarks/results/fixture_learning/results.csv (a run resumes: rows already there are kept); the
last lines give the recalls per kernel path, the smallest, and ``learned=<runs with recall >=
the fixture's LEARNED_RECALL>/<runs>`` for the schedule asked for.
"""
import argparse
import csv
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

# ATen's capability and the oneDNN ISA that matches it.
KERNEL_PATHS = {"default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
                "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
                "avx512": {"ATEN_CPU_CAPABILITY": "avx512", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}}
COLUMNS = ["path", "seed", "iterations", "base_lr", "recall", "precision", "DET", "SEG", "seconds"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--paths", nargs="+", choices=sorted(KERNEL_PATHS),
                        default=list(KERNEL_PATHS))
    parser.add_argument("--iterations", type=int, default=None, help="default: the fixture's")
    parser.add_argument("--base-lr", type=float, default=None, help="default: the fixture's")
    parser.add_argument("--out",
                        default=os.path.join(ROOT, "benchmarks", "results", "fixture_learning"))
    args = parser.parse_args()

    from conftest import LEARNED_RECALL, TINY_PRESET
    from helpers import LEARNING_ITERATIONS, LEARNING_RATE, train_learning_model

    schedule = (str(args.iterations or LEARNING_ITERATIONS), str(args.base_lr or LEARNING_RATE))

    from emr_d2.data.synthetic import write_synthetic_dataset

    os.makedirs(args.out, exist_ok=True)
    table = os.path.join(args.out, "results.csv")
    rows = list(csv.DictReader(open(table))) if os.path.isfile(table) else []
    done = {(r["path"], r["seed"], r["iterations"], r["base_lr"]) for r in rows}
    temporary = tempfile.TemporaryDirectory(prefix="fixture_learning_")  # removed when main returns
    work = temporary.name
    os.environ.setdefault("EMR_CACHE", os.path.join(work, "cache"))
    root = os.path.join(work, "TINY")
    write_synthetic_dataset(root, TINY_PRESET, seed=1)
    for path in args.paths:
        for seed in args.seeds:
            key = (path, str(seed), *schedule)
            if key in done:
                continue
            start = time.time()
            run, metrics = train_learning_model(root, tempfile.mkdtemp(dir=work), seed,
                                                env=KERNEL_PATHS[path],
                                                iterations=int(schedule[0]),
                                                base_lr=float(schedule[1]))
            if run.returncode != 0:
                print(run.stderr[-3000:], file=sys.stderr)
                return 1
            row = dict(
                zip(
                COLUMNS,
                [*key, *(f"{metrics[k]:.4f}" for k in ("recall", "precision", "DET", "SEG")),
                                 f"{time.time() - start:.0f}"]))
            print(",".join(row.values()), flush=True)
            rows.append(row)
            with open(table + ".tmp", "w", newline="") as f:
                writer = csv.DictWriter(f, COLUMNS)
                writer.writeheader()
                writer.writerows(rows)
            os.replace(table + ".tmp", table)
    for path in args.paths:
        current = [r for r in rows if (r["iterations"], r["base_lr"]) == schedule
                   and r["path"] == path]
        print(f"{path}: {schedule[0]} iterations at {schedule[1]}: recall "
              + " ".join(r["recall"] for r in current))
    current = [r for r in rows if (r["iterations"], r["base_lr"]) == schedule]
    learned = sum(float(r["recall"]) >= LEARNED_RECALL for r in current)
    print(f"min_recall={min(float(r['recall']) for r in current):.3f}")
    print(f"learned={learned}/{len(current)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
