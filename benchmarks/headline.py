#!/usr/bin/env python
"""The headline table: per dataset, the best emr_d2 config against each peer, from the
benchmark's results.csv files (calibrated SEG, mean +- std over seeds, seeds in brackets).

    python benchmarks/headline.py --results benchmarks/results --datasets SIM-bench SIM-aniso \\
        Fluo-N3DH-CHO-sample [--metric SEG_calibrated]

The best emr_d2 config is the one with the highest mean of the metric among the configs (not
starting with ``peer/``) run for the most seeds on that dataset, so that a single lucky seed
does not head the table; a cell of a peer shows its mean and its difference to that config.
"""
from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "benchmarks")]
os.environ.setdefault("EMR_D2_NO_REGISTER", "1")

from benchmark_runner import LOWER_IS_BETTER, METRICS, NOT_RANKED, published_rows, summarise  # noqa: E402  (benchmarks/benchmark_runner.py)
from emr_d2.cli import add_debug_argument, run_cli  # noqa: E402

PEERS = ["peer/stardist3d", "peer/cellpose", "peer/classical", "peer/stardist3d_own",
         "peer/cellpose_own"]


def headline(results: str, datasets: list[str], metric: str) -> str:
    """The markdown table."""
    lines = ["| dataset | best emr_d2 config | "
             + " | ".join(p.removeprefix("peer/") for p in PEERS) + " |",
             "|---|---|" + "---|" * len(PEERS)]
    for dataset in datasets:
        table = os.path.join(results, dataset, "results.csv")
        if not os.path.isfile(table):
            raise FileNotFoundError(
                f"{table}: no such file (run tools/benchmark.py on {dataset} first)")
        summary = {c: (*s[metric], s["seeds"])
                   for c, s in summarise(published_rows(os.path.join(results, dataset))).items()}
        ours = {c: s for c, s in summary.items() if not c.startswith("peer/")}
        if not ours:
            raise ValueError(f"{results}/{dataset}/results.csv has no emr_d2 row")
        most_seeds = max(s[2] for s in ours.values())
        best = max((c for c in ours if ours[c][2] == most_seeds), key=lambda c: ours[c][0])
        mean, std, seeds = ours[best]
        cells = []
        for peer in PEERS:
            if peer not in summary:
                cells.append("–")
                continue
            p_mean, p_std, p_seeds = summary[peer]
            cells.append(f"{p_mean:.3f} ± {p_std:.3f} ({p_seeds}; {p_mean - mean:+.3f})")
        lines.append(f"| {dataset} | {best}: {mean:.3f} ± {std:.3f} ({seeds}) | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="benchmarks/results")
    parser.add_argument("--datasets", nargs="+",
                        default=["SIM-bench", "SIM-aniso", "Fluo-N3DH-CHO-sample"])
    parser.add_argument("--metric", default="SEG_calibrated")
    add_debug_argument(parser)
    args = parser.parse_args(argv)
    ranked = [m for m in METRICS if m not in LOWER_IS_BETTER | NOT_RANKED]  # best = highest
    if args.metric not in ranked:
        parser.error(f"--metric {args.metric}: not a metric where higher is better (one of "
                     f"{', '.join(ranked)})")
    print(headline(args.results, args.datasets, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
