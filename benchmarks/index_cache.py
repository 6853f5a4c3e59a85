#!/usr/bin/env python
"""Time of the first registration (slice index built: every volume read, every slice encoded)
and of the second (index read from the on-disk cache) of a full-size SIM+-like sequence
(59 x 350 x 650 voxels per frame), side by side. Last line: cache_speedup=<x>.

    python benchmarks/index_cache.py [--frames 10]
"""
import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from detectron2.data import DatasetCatalog  # noqa: E402

from emr_d2.data.catalog import register_ctc_dataset  # noqa: E402
from emr_d2.data.synthetic import write_synthetic_dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.TemporaryDirectory(prefix="index_cache_")  # removed when main returns
    folder = work.name
    os.environ["EMR_CACHE"] = os.path.join(folder, "cache")
    root = os.path.join(folder, "SIMFULL")
    write_synthetic_dataset(root, "sim+", frames=args.frames)
    seconds = []
    for _ in range(2):
        register_ctc_dataset(root)
        start = time.perf_counter()
        records = DatasetCatalog.get("SIMFULL_01")
        seconds.append(time.perf_counter() - start)
    print(
        f"{len(records)} slice records of {args.frames} frames: first registration "
        f"{seconds[0]:.2f} s, "
        f"second {seconds[1]:.3f} s")
    print(f"cache_speedup={seconds[0] / seconds[1]:.1f}")


if __name__ == "__main__":
    main()
