"""Register CTC datasets with detectron2's DatasetCatalog / MetadataCatalog.

``import emr_d2`` registers every CTC dataset folder under ``$EMR_DATASETS`` (default
``./datasets``) as ``<dataset>_<seq>`` for each sequence with a reference segmentation, plus
``<dataset>_<seq>_train`` and ``<dataset>_<seq>_val``: a leading and a trailing block of frames,
separated by DATASETS.SPLIT.GAP frames (see :func:`configure_splits`).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import re

from detectron2.data import DatasetCatalog, MetadataCatalog

from .ctc import CTCFormatError, find_sequences, gt_folder, list_frames, list_gt
from .tiff_stack import tiff_voxel_size
from .window import check_voxel_size
from .slices import load_sequence_records, split_frames

logger = logging.getLogger(__name__)

# Voxel sizes (Z, Y, X) in micrometres of known CTC datasets.
KNOWN_VOXEL_SIZES = {
    "Fluo-N3DH-SIM+": (0.2, 0.125, 0.125),
    "Fluo-N3DH-CHO": (1.0, 0.202, 0.202),
    "Fluo-N3DH-CE": (1.0, 0.09, 0.09),
}
VOXEL_SIZE_FILE = "voxel_size.json"

_split = {"val_fraction": 0.2, "gap": 5}


def configure_splits(cfg) -> None:
    """Use the config's DATASETS.SPLIT for every ``_train`` / ``_val`` dataset loaded from now on.
    """
    _split["val_fraction"] = float(cfg.DATASETS.SPLIT.VAL_FRACTION)
    _split["gap"] = int(cfg.DATASETS.SPLIT.GAP)


def datasets_root() -> str:
    """The folder of the CTC datasets: ``$EMR_DATASETS``, default ``datasets``."""
    return os.environ.get("EMR_DATASETS", "datasets")


def _voxel_size_file(folder: str) -> tuple[float, float, float] | None:
    """The (Z, Y, X) voxel size in a folder's voxel_size.json, None without one."""
    path = os.path.join(folder, VOXEL_SIZE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            size = tuple(float(v) for v in json.load(f)["zyx_um"])
        check_voxel_size(size, path)
    except (ValueError, TypeError, KeyError) as e:
        raise CTCFormatError(
            f"{path}: expected {{\"zyx_um\": [z, y, x]}} with three positive numbers "
            f"in micrometres ({type(e).__name__}: {e})") from e
    return size


def _first_stack(folder: str) -> str | None:
    """A folder's first raw frame (tTTT.tif), else its first .tif, else its first sequence's first
    raw frame; None if it holds none."""
    if not os.path.isdir(folder):
        return None
    frames = list_frames(folder)
    if frames:
        return frames[min(frames)]
    tiffs = sorted(f for f in os.listdir(folder) if f.lower().endswith((".tif", ".tiff")))
    if tiffs:
        return os.path.join(folder, tiffs[0])
    sequences = find_sequences(folder)
    return _first_stack(os.path.join(folder, sequences[0])) if sequences else None


def resolve_voxel_size(path: str, given: tuple | None = None
                       ) -> tuple[tuple[float, float, float] | None, str]:
    """The (Z, Y, X) voxel size in micrometres of a stack, a folder of stacks, a CTC sequence or a
    CTC dataset, and where it came from, in one order everywhere: ``given`` (--voxel-size), the
    voxel_size.json of the folder or of the folder above, the TIFF's own ImageJ or OME tags (of
    the file, or of a folder's first stack), the published size of a known CTC dataset.

    Returns:
        (voxel size or None, a few words naming its source, "unknown" where no source has one).
    """
    if given is not None:
        check_voxel_size(given, "--voxel-size")
        return tuple(float(v) for v in given), "--voxel-size"
    folder = os.path.abspath(path if os.path.isdir(path) else os.path.dirname(path) or ".")
    folders = (folder, os.path.dirname(folder))
    for place in folders:
        size = _voxel_size_file(place)
        if size:
            return size, os.path.join(place, VOXEL_SIZE_FILE)
    stack = path if os.path.isfile(path) else _first_stack(folder)
    size = tiff_voxel_size(stack) if stack else None
    if size:
        return size, f"the TIFF tags of {stack}"
    for place in folders:
        name = os.path.basename(place)
        if name in KNOWN_VOXEL_SIZES:
            return KNOWN_VOXEL_SIZES[name], f"the known CTC dataset {name}"
    return None, "unknown"


@functools.lru_cache(maxsize=None)
def voxel_size(root: str) -> tuple[float, float, float] | None:
    """(Z, Y, X) voxel size in micrometres of a CTC dataset folder (:func:`resolve_voxel_size`),
    None if unknown."""
    return resolve_voxel_size(root)[0]


def record_voxel_size(record: dict) -> tuple[float, float, float] | None:
    """(Z, Y, X) voxel size (micrometres) of a slice record's dataset, None if unknown."""
    return voxel_size(record["dataset_root"])


def _load_split(root: str, seq: str, part: str) -> list[dict]:
    records = load_sequence_records(root, seq)
    split = split_frames(sorted({r["frame"] for r in records}), _split["val_fraction"],
                         _split["gap"])
    keep = set(split.train if part == "train" else split.val)
    return [r for r in records if r["frame"] in keep]


def _register(name: str, load, metadata: dict) -> None:
    """Register (or register again) a dataset loader and its metadata under ``name``."""
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(**metadata)


def register_ctc_sequence(name: str, root: str, seq: str, frames: list[int] | None = None) -> None:
    """Register one sequence of a CTC dataset folder under ``name`` (frames: default all with GT).
    """
    _register(name, lambda: load_sequence_records(root, seq, frames), _metadata(root, seq))


def _metadata(root: str, seq: str) -> dict:
    return dict(thing_classes=["nucleus"], evaluator_type="ctc", dataset_root=os.path.abspath(root),
                sequence=seq, voxel_size=voxel_size(root))


def register_ctc_dataset(root: str, name: str | None = None) -> list[str]:
    """Register every sequence with a reference of the CTC folder ``root``, and its splits.

    Returns the registered names: ``<name>_<seq>``, ``<name>_<seq>_train``, ``<name>_<seq>_val``.
    ``name`` defaults to the folder's name.
    """
    name = name or os.path.basename(os.path.normpath(root))
    registered = []
    for seq in find_sequences(root):
        if not os.path.isdir(gt_folder(root, seq)):
            continue
        base = f"{name}_{seq}"
        register_ctc_sequence(base, root, seq)
        registered.append(base)
        for part in ("train", "val"):
            _register(f"{base}_{part}", lambda part=part, seq=seq: _load_split(root, seq, part),
                      _metadata(root, seq))
            registered.append(f"{base}_{part}")
    return registered


def register_all_ctc_datasets(root: str | None = None) -> list[str]:
    """Register every CTC dataset folder directly under ``root`` (default ``$EMR_DATASETS``)."""
    root = root or datasets_root()
    if not os.path.isdir(root):
        return []
    registered = []
    for entry in sorted(os.listdir(root)):
        folder = os.path.join(root, entry)
        if not os.path.isdir(folder) or entry.startswith("."):
            continue
        try:
            registered += register_ctc_dataset(folder)
        except Exception as e:  # one broken folder must not stop the import of emr_d2
            logger.warning(f"Skipping {folder}: {e}")
    return registered


def check_splits(names) -> list[str]:
    """Check the time split of every ``_train`` / ``_val`` dataset before any work, and say what
    every dataset holds.

    Returns:
        one line per CTC dataset of ``names``: its annotated frames and slices and, for a split,
        which frames each block holds and the gap (:meth:`FrameSplit.describe`).

    Raises:
        ValueError: one line naming the dataset and the keys to change where a sequence has too
        few annotated frames for DATASETS.SPLIT (:func:`split_frames`).
    """
    lines = []
    for name in dict.fromkeys(names):
        meta = MetadataCatalog.get(name)
        if meta.get("evaluator_type") != "ctc":
            continue
        seq_dir = os.path.join(meta.dataset_root, meta.sequence)
        line = name
        if name.endswith(("_train", "_val")):
            frames = set(list_frames(seq_dir)) & set(
                list_gt(gt_folder(meta.dataset_root, meta.sequence)))
            try:
                split = split_frames(sorted(frames), _split["val_fraction"], _split["gap"])
            except ValueError as e:
                raise ValueError(f"{name} ({seq_dir}): {e}") from None
            line += f" (of {len(frames)} annotated frames: {split.describe()})"
        records = [r for r in DatasetCatalog.get(name) if r.get("annotated", True)]
        frames = sorted({r["frame"] for r in records})
        listed = ", ".join(f"t{t:03d}" for t in frames[:12]) + (", ..." if len(frames) > 12 else "")
        lines.append(f"{line}: {len(frames)} annotated frames, {len(records)} annotated slices "
                     f"({listed})")
    return lines


def check_datasets_registered(names) -> None:
    """Raise a one-line ValueError for the first dataset name that is not registered, saying why."""
    registered = set(DatasetCatalog.list())
    root = datasets_root()
    for name in names:
        if name in registered:
            continue
        match = re.match(r"^(.*)_\d{2,}(_train|_val)?$", name)
        folder = os.path.join(root, match.group(1)) if match else None
        if folder and os.path.isdir(folder) and not find_sequences(folder):
            raise ValueError(
                f"{folder}: no sequence folders (01, 02, ...) with raw frames tTTT.tif, "
                f"so dataset '{name}' is not registered")
        ctc = sorted(n for n in registered if MetadataCatalog.get(n).get("evaluator_type") == "ctc")
        raise ValueError(
            f"dataset '{name}' is not registered: no CTC folder for it under '{root}' "
            f"($EMR_DATASETS); registered CTC datasets: {', '.join(ctc[:8]) or 'none'}"
        )
