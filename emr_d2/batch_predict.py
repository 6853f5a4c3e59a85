"""Predicting files for ``tools/predict.py``: which outputs an input gives, and writing them."""
from __future__ import annotations

import logging
import os

from tqdm import tqdm

from .data.catalog import resolve_voxel_size
from .data.ctc import (RES_PATTERN, CTCFormatError, check_raw_input, list_frames, output_name,
                       read_label_volume, read_raw_volume, write_result_tracks)
from .measurements import measure_nuclei, measurements_path, write_measurements
from .predictor import VolumePredictor

logger = logging.getLogger(__name__)


def plan_outputs(input_path: str, output_dir: str) -> list[tuple[str, str]]:
    """(input volume, output label file) pairs for ``tools/predict.py``: a 3D TIFF, a CTC sequence
    folder (its tTTT.tif frames) or a folder of TIFFs, each named by :func:`output_name`."""
    if os.path.isfile(input_path):
        files = [input_path]
    elif os.path.isdir(input_path):
        frames = list_frames(input_path)
        files = [path for _, path in sorted(frames.items())] or sorted(
            os.path.join(input_path, f) for f in os.listdir(input_path)
            if f.lower().endswith((".tif", ".tiff")))
        if not files:
            raise CTCFormatError(f"{input_path}: no .tif files found")
    else:
        raise CTCFormatError(f"{input_path}: no such file or folder")
    return [(f, os.path.join(output_dir, output_name(f))) for f in files]


def result_folders(pairs: list[tuple[str, str]]) -> list[str]:
    """The folders of CTC result frames (maskTTT.tif) among the outputs of (input, output) pairs."""
    return sorted({os.path.dirname(t) for _, t in pairs if RES_PATTERN.match(os.path.basename(t))})


def predict_files(predictor: VolumePredictor, pairs: list[tuple[str, str]],
                  voxel_um: tuple | None = None, channel: int | None = None,
                  measure: bool = False) -> None:
    """Segment every input volume and write its uint16 label volume (atomically, streaming:
    :meth:`VolumePredictor.predict_file`). Every input is checked (readable, a 3D stack of finite
    numbers, channel ``channel`` of a multi-channel file, a voxel size the model can use: the
    given (Z, Y, X) voxel_um in micrometres, else each file's own, :func:`resolve_voxel_size`)
    before the first volume is predicted; with ``measure``, that its voxel size is known (the
    nuclei are measured by :func:`finish_outputs`)."""
    for source, _ in pairs:
        check_raw_input(source, channel)
        voxel = resolve_voxel_size(source, voxel_um)[0]
        try:
            predictor.geometry(voxel)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None
        if measure and voxel is None:
            raise ValueError(f"{source}: its voxel size is unknown, so its nuclei cannot be "
                             "measured in micrometres: give --voxel-size Z Y X")
    for source, target in tqdm(pairs, desc="volumes", unit="volume", disable=len(pairs) < 2):
        count = predictor.predict_file(source, target, voxel_um, progress=True, channel=channel)
        logger.info(f"{source} -> {os.path.basename(target)}: {count} objects")


def measure_file(label_file: str, source: str, voxel_um: tuple, channel: int | None = None) -> str:
    """Write the CSV of the nuclei of a label TIFF (:func:`measure_nuclei`, intensities from the
    raw stack ``source``, its channel ``channel``) beside it; returns the CSV's path."""
    path = measurements_path(label_file)
    write_measurements(path, measure_nuclei(read_label_volume(label_file),
                                            read_raw_volume(source, channel=channel), voxel_um))
    return path


def finish_outputs(pairs: list[tuple[str, str]], voxel_um: tuple | None = None,
                   channel: int | None = None, measure: bool = False) -> None:
    """Once every output is written: make every folder of CTC result frames among them a valid
    CTC result (labels unique over the sequence, ``res_track.txt``), then, with ``measure``,
    write the CSV of every output's nuclei beside it (:func:`measure_file`; voxel_um and channel
    as for :func:`predict_files`)."""
    for res_dir in result_folders(pairs):
        write_result_tracks(res_dir)
    for source, target in pairs if measure else []:
        measure_file(target, source, resolve_voxel_size(source, voxel_um)[0], channel)
