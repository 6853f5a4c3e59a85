"""Predicting files for ``tools/predict.py``: which outputs an input gives, and writing them."""
from __future__ import annotations

import logging
import os

from tqdm import tqdm

from .data.ctc import (RES_PATTERN, CTCFormatError, check_raw_input, list_frames, output_name,
                       write_result_tracks)
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
                  voxel_um: tuple | None = None) -> None:
    """Segment every input volume ((Z, Y, X) voxel size voxel_um, micrometres) and write its
    uint16 label volume (atomically, streaming: :meth:`VolumePredictor.predict_file`). Every
    input is checked (readable, a 3D stack of finite numbers) before the first volume is
    predicted."""
    predictor.slice_offsets(voxel_um)  # a missing voxel size fails before any work
    predictor.input_scale(voxel_um)
    for source, _ in pairs:
        check_raw_input(source)
    for source, target in tqdm(pairs, desc="volumes", unit="volume", disable=len(pairs) < 2):
        count = predictor.predict_file(source, target, voxel_um, progress=True)
        logger.info(f"{source} -> {os.path.basename(target)}: {count} objects")


def finish_result_folders(pairs: list[tuple[str, str]]) -> None:
    """Make every folder of CTC result frames among the outputs a valid CTC result (labels unique
    over the sequence, ``res_track.txt``), once all its frames are written."""
    for res_dir in result_folders(pairs):
        write_result_tracks(res_dir)
