#!/usr/bin/env python
"""Training-mode SliceStackMapper throughput: N=5 windows per second from one 59 x 512 x 512
volume, in one process (flips, 90-degree rotations, intensity augmentation on). Last line:
windows_per_s=<x>."""
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from emr_d2.data.mapper import SliceStackMapper  # noqa: E402
from emr_d2.data.slices import load_sequence_records  # noqa: E402
from emr_d2.data.synthetic import SyntheticPreset, write_synthetic_dataset  # noqa: E402
from emr_d2.engine import setup_config  # noqa: E402


def main() -> None:
    root = os.path.join(tempfile.mkdtemp(), "SPEED")
    preset = SyntheticPreset(field_um=(11.8, 64.0, 64.0), scale=1.0, frames={"01": 1}, num_nuclei=30)
    write_synthetic_dataset(root, preset)
    records = load_sequence_records(root, "01", cache_dir=os.path.join(root, "cache"))
    cfg = setup_config(opts=["INPUT.NUM_SLICES", "5"])
    mapper = SliceStackMapper(cfg, is_train=True)
    count = 300
    random.seed(0)
    order = [random.choice(records) for _ in range(count)]
    start = time.perf_counter()
    for record in order:
        mapper(record)
    seconds = time.perf_counter() - start
    print(f"volume {records[0]['depth']} x {records[0]['height']} x {records[0]['width']}, N=5, "
          f"{count} random windows in {seconds:.2f} s (normalisation range computed once included)")
    print(f"windows_per_s={count / seconds:.1f}")


if __name__ == "__main__":
    main()
