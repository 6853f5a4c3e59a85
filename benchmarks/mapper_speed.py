#!/usr/bin/env python
"""SliceStackMapper throughput: N=5 windows per second from one 59 x 512 x 512 volume, in one
process, slices in random order. Measured side by side: the window alone (memory-mapped read of
N slices, per-volume normalisation, native size: what inference and evaluation read) and the full
training mapper of configs/Base-EMR-RCNN-FPN.yaml (scale jitter, 512 crop, flip, 90-degree
rotation, gamma / contrast / noise, centre-slice masks). Last line: windows_per_s=<window alone>."""
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from emr_d2.data.slices import load_sequence_records  # noqa: E402
from emr_d2.data.synthetic import SyntheticPreset, write_synthetic_dataset  # noqa: E402
from emr_d2.engine import build_mapper, setup_config  # noqa: E402


def main() -> None:
    work = tempfile.TemporaryDirectory(prefix="mapper_speed_")  # removed when main returns
    root = os.path.join(work.name, "SPEED")
    preset = SyntheticPreset(field_um=(11.8, 64.0, 64.0), scale=1.0, frames={"01": 1},
                             num_nuclei=30)
    write_synthetic_dataset(root, preset)
    records = load_sequence_records(root, "01", cache_dir=os.path.join(root, "cache"))
    cfg = setup_config(
        os.path.join(ROOT, "configs", "Base-EMR-RCNN-FPN.yaml"), ["INPUT.NUM_SLICES", "5"])
    random.seed(0)
    rates = {}
    for name, is_train, count in (("training mapper", True, 100), ("window alone", False, 500)):
        mapper = build_mapper(cfg, is_train=is_train)
        order = [random.choice(records) for _ in range(count)]
        start = time.perf_counter()
        for record in order:
            mapper(record)
        rates[name] = count / (time.perf_counter() - start)
        print(
            f"{name:>16}: {rates[name]:7.1f} windows/s ({count} windows, normalisation range "
            "included)")
    print(f"volume {records[0]['depth']} x {records[0]['height']} x {records[0]['width']}, N=5")
    print(f"windows_per_s={rates['window alone']:.1f}")


if __name__ == "__main__":
    main()
