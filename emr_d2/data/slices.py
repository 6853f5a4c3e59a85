"""Slice records: one detectron2 dataset dict per (volume, z), built once and cached on disk.

A record (``dict``) holds:
    file_name (raw frame path), image_id (int, unique in the sequence), volume_id ("<seq>/tTTT"),
    sequence, frame, z, depth, height, width, dataset_root, gt_file (3D reference or None),
    annotated (whether slice z has a reference), and annotations: a list of
    {bbox (XYWH_ABS), bbox_mode, segmentation (COCO RLE, counts as str), category_id=0,
    instance_id (the reference label)}.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import pickle
from dataclasses import dataclass

import numpy as np
import pycocotools.mask as mask_util
from detectron2.structures import BoxMode
from tqdm import tqdm

from ..atomic import atomic_write
from .ctc import (MAX_LABEL, CTCFormatError, GTFrame, gt_folder, list_frames, list_gt,
                  list_markers, marker_folder, read_gt_frame, read_label_volume, read_raw_volume)

logger = logging.getLogger(__name__)

CACHE_VERSION = 1


def default_cache_dir() -> str:
    """Where slice indices are cached: $EMR_CACHE, else ~/.cache/emr_d2."""
    return os.environ.get("EMR_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "emr_d2"))


def _file_signature(path: str) -> tuple[str, int, int]:
    stat = os.stat(path)
    return (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)


def _gt_signature(gt: GTFrame) -> tuple:
    paths = [gt.volume_path] if gt.is_3d else [gt.slice_paths[z] for z in sorted(gt.slice_paths)]
    return tuple(_file_signature(p) for p in paths)


def encode_slice_instances(labels_2d: np.ndarray) -> list[dict]:
    """Annotations (COCO RLE, XYWH box, category 0, instance_id) of one (H, W) label slice."""
    ids = np.unique(labels_2d)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return []
    masks = np.asfortranarray((labels_2d[:, :, None] == ids[None, None, :]).astype(np.uint8))
    rles = mask_util.encode(masks)
    boxes = mask_util.toBbox(rles)
    annotations = []
    for instance_id, rle, box in zip(ids.tolist(), rles, boxes.tolist()):
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "bbox": box,
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": rle,
                "category_id": 0,
                "instance_id": int(instance_id),
            }
        )
    return annotations


@functools.lru_cache(maxsize=64)
def _reference_frames(dataset_root: str, sequence: str) -> dict[int, GTFrame]:
    return list_gt(gt_folder(dataset_root, sequence))


def read_record_reference(record: dict) -> tuple[np.ndarray, list[int] | None]:
    """(Z, H, W) reference labels of a slice record's frame and its annotated slices (None: all),
    from the record's 3D reference file or the frame's slice-wise reference files."""
    shape = (record["depth"], record["height"], record["width"])
    if record.get("gt_file"):
        return read_gt_frame(GTFrame(record["frame"], volume_path=record["gt_file"]), shape)
    return read_gt_frame(
        _reference_frames(record["dataset_root"], record["sequence"])[record["frame"]], shape)


@functools.lru_cache(maxsize=64)
def _marker_frames(dataset_root: str, sequence: str) -> dict[int, str]:
    return list_markers(marker_folder(dataset_root, sequence))


def read_record_markers(record: dict) -> np.ndarray | None:
    """(Z, H, W) tracking markers (``<seq>_GT/TRA/man_trackTTT.tif``) of a slice record's frame,
    or None when the frame has no marker file."""
    path = _marker_frames(record["dataset_root"], record["sequence"]).get(record["frame"])
    if path is None:
        return None
    markers = read_label_volume(path)
    shape = (record["depth"], record["height"], record["width"])
    if markers.shape != shape:
        raise CTCFormatError(
            f"{path}: marker shape {markers.shape} differs from the raw frame's {shape}")
    return np.asarray(markers)


def build_volume_records(root: str, seq: str, frame: int, raw_path: str, gt: GTFrame) -> list[dict]:
    """Records of every slice of one frame (slices without a reference have annotated=False)."""
    raw = read_raw_volume(raw_path)
    depth, height, width = raw.shape
    labels, annotated_slices = read_gt_frame(gt, raw.shape)
    if labels.size and int(labels.max()) > MAX_LABEL:
        bad = gt.volume_path or next(iter(gt.slice_paths.values()))
        raise CTCFormatError(f"{bad}: reference labels above {MAX_LABEL} (CTC labels are 16-bit)")
    annotated = set(range(depth)) if annotated_slices is None else set(annotated_slices)
    volume_id = f"{seq}/t{frame:03d}"
    records = []
    for z in range(depth):
        records.append(
            {
                "file_name": os.path.abspath(raw_path),
                "image_id": frame * 100000 + z,
                "volume_id": volume_id,
                "sequence": seq,
                "frame": frame,
                "z": z,
                "depth": depth,
                "height": height,
                "width": width,
                "dataset_root": os.path.abspath(root),
                "gt_file": os.path.abspath(gt.volume_path) if gt.is_3d else None,
                "annotated": z in annotated,
                "annotations": encode_slice_instances(labels[z]) if z in annotated else [],
            }
        )
    return records


def _cache_path(cache_dir: str, seq_dir: str) -> str:
    key = hashlib.sha1(os.path.abspath(seq_dir).encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f"index-{key}.pkl")


def _load_cache(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            cache = pickle.load(f)
        return cache if cache.get("version") == CACHE_VERSION else {}
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError):
        return {}


def _save_cache(path: str, cache: dict) -> None:
    try:
        atomic_write(path, lambda f: pickle.dump(cache, f, protocol=pickle.HIGHEST_PROTOCOL))
    except OSError as e:  # a read-only cache only costs time
        logger.warning(f"Could not write the slice index cache {path}: {e}")


def load_sequence_records(
    root: str, seq: str, frames: list[int] | None = None, cache_dir: str | None = None
) -> list[dict]:
    """Slice records of the frames (default: all with a reference) of one CTC sequence.

    Each volume's records are cached, keyed by the path, size and mtime of its raw and
    reference files, so a second call reads no image.
    """
    seq_dir = os.path.join(root, seq)
    raw_frames = list_frames(seq_dir)
    gt_frames = list_gt(gt_folder(root, seq))
    if frames is None:
        frames = sorted(set(raw_frames) & set(gt_frames))
        without = len(raw_frames) - len(frames)
        if without and gt_frames:
            logger.warning(f"{seq_dir}: {without} of {len(raw_frames)} frames have no reference "
                           f"segmentation; the {len(frames)} with one are used")
    missing = [t for t in frames if t not in raw_frames]
    if missing:
        raise CTCFormatError(f"{seq_dir}: raw frames missing for t={missing[:5]}")
    frames = [t for t in frames if t in gt_frames]

    cache_file = _cache_path(cache_dir or default_cache_dir(), seq_dir)
    cache = _load_cache(cache_file)
    volumes = cache.setdefault("volumes", {})
    cache["version"] = CACHE_VERSION
    todo = []
    for t in frames:
        signature = (_file_signature(raw_frames[t]), _gt_signature(gt_frames[t]))
        entry = volumes.get(raw_frames[t])
        if entry is None or entry["signature"] != signature:
            todo.append((t, signature))
    for t, signature in tqdm(todo, desc=f"indexing {os.path.basename(root)}/{seq}",
                             disable=not todo):
        records = build_volume_records(root, seq, t, raw_frames[t], gt_frames[t])
        volumes[raw_frames[t]] = {"signature": signature, "records": records}
    if todo:
        _save_cache(cache_file, cache)
    return [record for t in frames for record in volumes[raw_frames[t]]["records"]]


@dataclass(frozen=True)
class FrameSplit:
    """A sequence's annotated frames split in time: a leading train block, ``gap`` frames left
    out, a trailing val block; ``asked_gap`` is DATASETS.SPLIT.GAP (``gap`` is lower where that
    would have left the train block fewer than half of the frames)."""

    train: list[int]
    val: list[int]
    gap: int
    asked_gap: int

    def describe(self) -> str:
        """One line: which frames each block holds, and the gap (and why it was lowered)."""
        def block(frames):
            if not frames:
                return "none"
            return (f"{len(frames)} frame{'s' if len(frames) > 1 else ''} "
                    + (f"t{frames[0]:03d}" if len(frames) == 1
                       else f"t{frames[0]:03d}-t{frames[-1]:03d}"))

        total = len(self.train) + len(self.val) + self.gap
        line = f"train {block(self.train)}, val {block(self.val)}, gap {self.gap}"
        if self.gap != self.asked_gap:
            line += (f" (DATASETS.SPLIT.GAP {self.asked_gap} lowered to {self.gap}: it would have "
                     f"left {max(total - len(self.val) - self.asked_gap, 0)} of {total} annotated "
                     "frames to train on)")
        return line


def split_frames(frames: list[int], val_fraction: float, gap: int) -> FrameSplit:
    """Split sorted frames into a leading train block and a trailing val block, ``gap`` apart.

    Neighbouring time points are near-duplicates, so frames are never split at random. Where
    the gap would leave the train block fewer than half of the frames it is lowered (the returned
    split says so); where the val block alone leaves fewer, a one-line ValueError names the keys.
    """
    frames = sorted(frames)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"DATASETS.SPLIT.VAL_FRACTION must be in [0, 1), got {val_fraction}")
    if gap < 0:
        raise ValueError(f"DATASETS.SPLIT.GAP must be >= 0, got {gap}")
    n_val = int(round(len(frames) * val_fraction))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    half = max((len(frames) + 1) // 2, 1)
    if len(frames) - n_val < half:
        raise ValueError(
            f"{len(frames)} annotated frames cannot hold a train block of at least half of them "
            f"({half}) and {n_val} val frames (DATASETS.SPLIT.VAL_FRACTION {val_fraction:g}): "
            "lower DATASETS.SPLIT.VAL_FRACTION, annotate more frames, or train on the whole "
            "sequence (DATASETS.TRAIN without _train)")
    used_gap = min(gap, len(frames) - n_val - half)
    n_train = len(frames) - n_val - used_gap
    return FrameSplit(frames[:n_train], frames[len(frames) - n_val:], used_gap, gap)
