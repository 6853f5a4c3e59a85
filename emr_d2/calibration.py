"""Linking calibration: choose the z-linker and its settings on validation volumes, never the test.

The validation volumes are predicted once; their per-slice masks are relinked for every point of
a grid (linker x threshold x look-back x minimum slices x split depth, and extent gate x extent
trim for a model with a z-extent head) and scored with SEG; the best point wins.
The choice and the whole table are written to ``linking.json``, which
:func:`apply_calibrated_linking` applies to a config whose MODEL.WEIGHTS lie in the same folder.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.utils import comm
from tqdm import tqdm

from .atomic import write_json
from .data.catalog import record_voxel_size
from .data.ctc import read_raw_volume
from .data.slices import read_record_reference
from .linking import CONFIG_KEYS, SIMILARITIES, LinkOptions, SliceRegions, link_slices
from .evaluation.seg import SEGAccumulator
from .predictor import VolumePredictor

logger = logging.getLogger(__name__)

LINKING_FILE = "linking.json"
# Config key of each calibrated link option (all but fill_gaps).
CALIBRATED_KEYS = {option: key for option, key in CONFIG_KEYS.items() if option != "fill_gaps"}


@dataclass
class PastedVolume:
    """Per-slice predictions of one validation volume, pasted, with its reference."""

    name: str
    regions: SliceRegions  # the pasted per-slice predictions
    reference: np.ndarray  # (Z, H, W) reference labels
    annotated: list | None  # slices with a reference (slice-wise reference), None: all


def linking_grid(cfg, with_extents: bool = False) -> list[dict]:
    """Link options (a dict of :class:`LinkOptions` fields) of every grid point of
    TEST.CTC.CALIBRATION. A linker without a similarity ("connected") ignores threshold,
    look-back and extent gate, so it enters once per minimum length, split depth (and extent
    trim). with_extents (a model with a z-extent head): the extent gates and trims too."""
    grid = cfg.TEST.CTC.CALIBRATION
    gates = [float(g) for g in grid.EXTENT_GATES_UM] if with_extents else [None]
    trims = [float(t) for t in grid.EXTENT_TRIMS_UM] if with_extents else [None]
    points = []
    for strategy, min_slices, depth, trim in itertools.product(grid.LINKERS, grid.MIN_SLICES,
                                                               grid.SPLIT_DEPTHS,
                                                               trims):
        common = dict(min_slices=int(min_slices), split_depth=float(depth))
        if strategy not in SIMILARITIES:
            extent = {} if trim is None else {"extent_gate_um": 0.0, "extent_trim_um": trim}
            points.append(dict(strategy=strategy, threshold=0.0, look_back=0, **common, **extent))
            continue
        for threshold, look_back, gate in itertools.product(grid.THRESHOLDS, grid.LOOK_BACKS,
                                                            gates):
            extent = {} if trim is None else {"extent_gate_um": gate, "extent_trim_um": trim}
            points.append(
                dict(strategy=strategy, threshold=float(threshold), look_back=int(look_back),
                **common, **extent))
    return points


def predict_validation_volumes(cfg, model: torch.nn.Module) -> list[PastedVolume]:
    """Predict every volume of DATASETS.VAL once (volumes split over the processes) and paste
    its per-slice masks; every process gets all volumes. Reads nothing else."""
    if not cfg.DATASETS.VAL:
        raise ValueError("linking calibration needs validation data: set DATASETS.VAL")
    predictor = VolumePredictor(cfg, model)
    first_slices = [r for name in cfg.DATASETS.VAL for r in DatasetCatalog.get(name) if r["z"] == 0]
    mine = first_slices[comm.get_rank()::comm.get_world_size()]
    volumes = []
    for record in tqdm(mine, desc="calibration: predicting", unit="volume",
                       disable=not comm.is_main_process()):
        regions = predictor.regions(read_raw_volume(record["file_name"]),
                                    voxel_um=record_voxel_size(record))
        volumes.append(PastedVolume(record["volume_id"], regions, *read_record_reference(record)))
    if comm.get_world_size() > 1:
        volumes = list(itertools.chain(*comm.all_gather(volumes)))
    return volumes


def score_linking(volumes: list[PastedVolume], options: dict, fill_gaps: bool) -> float:
    """Pooled SEG of the volumes linked with one set of link options (the rest: the defaults)."""
    accumulator = SEGAccumulator()
    for volume in volumes:
        linked = link_slices(volume.regions, fill_gaps=fill_gaps, **options)
        accumulator.add(volume.name, volume.reference, linked.labels, volume.annotated)
    return accumulator.summary()["SEG"]


def choose_linking(volumes: list[PastedVolume], grid: list[dict],
                   fill_gaps: bool) -> tuple[dict, list[dict]]:
    """(best options, table of every grid point with its SEG); ties go to the earlier point."""
    if not volumes:
        raise ValueError("linking calibration: the validation datasets hold no volume")
    table = [dict(options, SEG=score_linking(volumes, options, fill_gaps))
             for options in tqdm(grid, desc="calibration: relinking", unit="setting",
                                 disable=not comm.is_main_process())]
    best = max(range(len(table)), key=lambda i: (table[i]["SEG"], -i))
    return {k: table[best][k] for k in CALIBRATED_KEYS if k in table[best]}, table


def calibrate_linking(cfg, model: torch.nn.Module, output_dir: str) -> dict:
    """Choose the linking on DATASETS.VAL and write ``<output_dir>/linking.json`` (main process).

    Returns {"choice": {config key: value}, "SEG": best validation SEG, "default": {...},
    "table": [...]}, the same on every process.
    """
    volumes = predict_validation_volumes(cfg, model)
    default = dataclasses.asdict(LinkOptions.from_config(cfg))
    fill_gaps = default.pop("fill_gaps")
    with_extents = any(v.regions.z_extents is not None for v in volumes)
    best, table = choose_linking(volumes, [default] + linking_grid(cfg, with_extents), fill_gaps)
    result = {
        "choice": {CALIBRATED_KEYS[k]: v for k, v in best.items()},
        "SEG": max(row["SEG"] for row in table),
        "default": dict(table[0]),
        "validation": list(cfg.DATASETS.VAL),
        "volumes": len(volumes),
        "table": table[1:],
    }
    logger.info(f"Linking calibrated on {len(volumes)} volumes of {', '.join(cfg.DATASETS.VAL)}: "
                f"{result['choice']} (validation SEG {result['SEG']:.4f}; "
                f"configured linking {table[0]['SEG']:.4f})")
    if comm.is_main_process():
        write_json(os.path.join(output_dir, LINKING_FILE), result)
    return result


def set_linking(cfg, choice: dict) -> None:
    """Set TEST.CTC.<key> to every value of a calibrated choice (cfg must not be frozen)."""
    for key, value in choice.items():
        cfg.TEST.CTC[key] = value


def apply_calibrated_linking(cfg, explicit: list[str] = ()) -> dict | None:
    """Apply the linking.json beside MODEL.WEIGHTS, if any (and TEST.CTC.USE_CALIBRATED_LINKING),
    except for keys the user gave explicitly (``explicit``: KEY VALUE overrides). Returns the
    applied choice."""
    weights = cfg.MODEL.WEIGHTS
    if not (cfg.TEST.CTC.USE_CALIBRATED_LINKING and weights and os.path.isfile(weights)):
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(weights)), LINKING_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            choice = json.load(f)["choice"]
        except (ValueError, KeyError) as e:
            raise ValueError(f"{path}: not a linking calibration file ({e})") from e
    given = set(explicit[0::2])
    applied = {k: v for k, v in choice.items() if f"TEST.CTC.{k}" not in given}
    set_linking(cfg, applied)
    logger.info(f"Using the linking calibrated in {path}: {applied}")
    return applied
