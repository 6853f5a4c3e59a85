"""What every peer adapter shares: its task file, reading volumes, choosing settings on the
validation frames by SEG, writing CTC result folders, and its record of times and settings.

Runs inside a peer's own environment (``make peers``): it needs numpy, scipy, tifffile and the
repository root on PYTHONPATH, from which it imports emr_d2's torch-free CTC I/O and SEG
(``EMR_D2_NO_REGISTER=1``), so that the peers' settings are chosen by the code that scores them.

A task (written by ``run_peers.py``) is a JSON object::

    {"peer": "stardist3d", "dataset": "SIM-bench", "voxel_size": [z, y, x] (um),
     "train": [{"raw": path, "gt": path}, ...], "val": [...],
     "test": [{"frame": t, "raw": path}, ...], "seed": 0, "threads": 2,
     "time_budget_s": 300.0, "schedule": "equal" or "own", "out": run folder,
     "patch_px": null or the Y and X size of training patches}

A peer writes ``<out>/RES_default/maskTTT.tif`` (its library's default settings),
``<out>/RES_calibrated/maskTTT.tif`` (the settings chosen on ``val``) and ``<out>/peer.json``
(:func:`write_record`).
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable

import numpy as np

os.environ["EMR_D2_NO_REGISTER"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from emr_d2.data.ctc import read_label_volume, read_raw_volume, write_label_volume  # noqa: E402
from emr_d2.evaluation.seg import SEGAccumulator  # noqa: E402


def load_task(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def normalize(volume: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Percentile normalisation of one volume (as CSBDeep and Cellpose do): ``low`` -> 0,
    ``high`` -> 1, float32."""
    lo, hi = np.percentile(volume, (low, high))
    return ((volume.astype(np.float32) - lo) / max(hi - lo, 1e-6)).astype(np.float32)


def read_pairs(items: list[dict]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(normalised raw volumes, label volumes) of task items with "raw" and "gt"."""
    return ([normalize(read_raw_volume(i["raw"], memmap=False)) for i in items],
            [np.asarray(read_label_volume(i["gt"], memmap=False), dtype=np.int32) for i in items])


def seg(predictions: Iterable[np.ndarray], references: Iterable[np.ndarray]) -> float:
    """Pooled CTC SEG of label volumes against their references (emr_d2's measure)."""
    accumulator = SEGAccumulator()
    for k, (res, gt) in enumerate(zip(predictions, references)):
        accumulator.add(f"{k:03d}", gt, res)
    return accumulator.summary()["SEG"]


def choose_on_val(grid: dict[str, list], segment: Callable[..., list[np.ndarray]],
                  references: list[np.ndarray], log=print) -> tuple[dict, float]:
    """The settings of ``grid`` (every combination) whose segmentation of the validation volumes
    scores the highest SEG against ``references``; ``segment(**settings)`` returns the label
    volumes. Returns (settings, SEG)."""
    best, best_seg = None, -1.0
    names = list(grid)
    for values in itertools.product(*(grid[n] for n in names)):
        settings = dict(zip(names, values))
        score = seg(segment(**settings), references)
        log(f"val SEG {score:.4f} with {settings}")
        if score > best_seg:
            best, best_seg = settings, score
    return best, best_seg


def write_result_folder(folder: str, frames_and_labels: Iterable[tuple[int, np.ndarray]]) -> None:
    """``folder/maskTTT.tif`` (uint16) for every (frame, labels)."""
    os.makedirs(folder, exist_ok=True)
    for frame, labels in frames_and_labels:
        write_label_volume(os.path.join(folder, f"mask{frame:03d}.tif"), labels)


def predict_test(task: dict, settings: dict[str, dict],
                 segment: Callable[[np.ndarray, dict], np.ndarray]) -> float:
    """Segment every test frame with each named settings (``{"default": {...}, "calibrated":
    {...}}``) into ``<out>/RES_<name>``; ``segment(normalised volume, settings)`` returns its
    labels. Returns the seconds per volume of the calibrated settings."""
    seconds = []
    for name, chosen in settings.items():
        def labelled():
            for item in task["test"]:
                volume = normalize(read_raw_volume(item["raw"], memmap=False))
                start = time.perf_counter()
                labels = segment(volume, chosen)
                if name == "calibrated":
                    seconds.append(time.perf_counter() - start)
                yield item["frame"], labels
        write_result_folder(os.path.join(task["out"], f"RES_{name}"), labelled())
    return float(np.mean(seconds))


def write_record(task: dict, train_time_s: float, inference_s: float, default: dict,
                 calibrated: dict,
                 **extra) -> None:
    """``<out>/peer.json``: training time (fitting and choosing the settings), seconds per test
    volume and both settings."""
    record = dict(train_time_s=train_time_s, inference_s_per_volume=inference_s, default=default,
                  calibrated=calibrated, **extra)
    with open(os.path.join(task["out"], "peer.json"), "w") as f:
        json.dump(record, f, indent=1)


def settings_label(settings: dict) -> str:
    """``prob 0.5 nms 0.4`` from ``{"prob": 0.5, "nms": 0.4}``."""
    return " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in settings.items())
