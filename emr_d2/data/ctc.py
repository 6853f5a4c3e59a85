"""The Cell Tracking Challenge folder layout: find sequences and frames, read and validate volumes.

A CTC dataset folder holds, for every sequence ``<seq>`` (``01``, ``02``, ...):

- ``<seq>/tTTT.tif``: raw 3D frames (ZYX; 3 or 4 digits),
- ``<seq>_GT/SEG/man_segTTT.tif``: full 3D reference labels, or
  ``<seq>_GT/SEG/man_seg_TTT_ZZZ.tif``: reference labels of single slices,
- ``<seq>_GT/TRA/man_trackTTT.tif``: tracking markers (3D labels; DET is scored on them),
- ``<seq>_RES/maskTTT.tif``: results (uint16 labels, same shape as the raw frame), and
  ``<seq>_RES/res_track.txt``: one line ``L B E P`` per track (label, first and last frame,
  parent label or 0), as the CTC's tools require.

Torch-free on purpose: command-line tools such as ``tools/ctc_seg.py`` import it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import numpy as np
import tifffile
from scipy import ndimage

from ..atomic import atomic_write
from ..linking.regions import MAX_LABEL
from .tiff_stack import StackAxesError, select_stack, series_axes

RAW_PATTERN = re.compile(r"^t(\d{3,4})\.tif$")
GT_3D_PATTERN = re.compile(r"^man_seg(\d{3,4})\.tif$")
GT_SLICE_PATTERN = re.compile(r"^man_seg_(\d{3,4})_(\d{3,4})\.tif$")
RES_PATTERN = re.compile(r"^mask(\d{3,4})\.tif$")
TRA_PATTERN = re.compile(r"^man_track(\d{3,4})\.tif$")
RES_TRACK_FILE = "res_track.txt"
SEQUENCE_PATTERN = re.compile(r"^\d{2,}$")



class CTCFormatError(ValueError):
    """A file or folder that does not follow the CTC layout; the message names it."""


@dataclass
class GTFrame:
    """Reference segmentation of one frame: a full 3D file, or files of single slices."""

    frame: int
    volume_path: str | None = None
    slice_paths: dict[int, str] = field(default_factory=dict)

    @property
    def is_3d(self) -> bool:
        return self.volume_path is not None



def output_name(raw_file: str) -> str:
    """The one naming rule for predictions: a CTC raw frame ``tTTT.tif`` gives the CTC result
    name ``maskTTT.tif`` (same digits), any other ``name.tif`` gives ``name_labels.tif``."""
    base = os.path.basename(raw_file)
    if RAW_PATTERN.match(base):
        return "mask" + base[1:]
    return os.path.splitext(base)[0] + "_labels.tif"

def find_sequences(root: str) -> list[str]:
    """Names of the sequences (``01``, ``02``, ...) of a CTC dataset folder that hold raw frames."""
    if not os.path.isdir(root):
        raise CTCFormatError(f"{root}: not a folder")
    names = [
        name
        for name in sorted(os.listdir(root))
        if SEQUENCE_PATTERN.match(name) and os.path.isdir(os.path.join(root, name))
    ]
    return [name for name in names if list_frames(os.path.join(root, name))]


def _frames_by_pattern(folder: str, pattern: re.Pattern) -> dict[int, str]:
    if not os.path.isdir(folder):
        return {}
    found = {}
    for name in sorted(os.listdir(folder)):
        match = pattern.match(name)
        if match:
            found[int(match.group(1))] = os.path.join(folder, name)
    return found


def list_frames(seq_dir: str) -> dict[int, str]:
    """Raw frames of a sequence folder: {frame number: path of tTTT.tif}."""
    return _frames_by_pattern(seq_dir, RAW_PATTERN)


def list_results(res_dir: str) -> dict[int, str]:
    """Result frames of a ``<seq>_RES`` folder: {frame number: path of maskTTT.tif}."""
    return _frames_by_pattern(res_dir, RES_PATTERN)


def list_markers(tra_dir: str) -> dict[int, str]:
    """Tracking markers of a ``<seq>_GT/TRA`` folder: {frame number: path of man_trackTTT.tif}."""
    return _frames_by_pattern(tra_dir, TRA_PATTERN)


def list_gt(seg_dir: str) -> dict[int, GTFrame]:
    """Reference frames of a ``<seq>_GT/SEG`` folder, 3D files and slice files alike."""
    frames: dict[int, GTFrame] = {}
    if not os.path.isdir(seg_dir):
        return frames
    for name in sorted(os.listdir(seg_dir)):
        path = os.path.join(seg_dir, name)
        match_3d = GT_3D_PATTERN.match(name)
        match_slice = GT_SLICE_PATTERN.match(name)
        if match_3d:
            t = int(match_3d.group(1))
            frames.setdefault(t, GTFrame(t)).volume_path = path
        elif match_slice:
            t, z = int(match_slice.group(1)), int(match_slice.group(2))
            frames.setdefault(t, GTFrame(t)).slice_paths[z] = path
    for gt in frames.values():
        if gt.is_3d and gt.slice_paths:
            raise CTCFormatError(
                f"{seg_dir}: frame {gt.frame} has both a 3D file and slice files; keep one kind"
            )
    return frames


def annotated_frames(root: str, seq: str) -> dict[int, tuple[str, GTFrame]]:
    """The frames of sequence ``seq`` of a CTC dataset folder that have a full-volume reference:
    {frame number: (path of tTTT.tif, its reference)}."""
    raw = list_frames(os.path.join(root, seq))
    return {t: (raw[t], gt) for t, gt in sorted(list_gt(gt_folder(root, seq)).items())
            if gt.is_3d and t in raw}


def gt_folder(root: str, seq: str) -> str:
    """The ``<seq>_GT/SEG`` folder of a sequence."""
    return os.path.join(root, f"{seq}_GT", "SEG")


def marker_folder(root: str, seq: str) -> str:
    """The ``<seq>_GT/TRA`` folder of a sequence."""
    return os.path.join(root, f"{seq}_GT", "TRA")


def _open_tiff(path: str, memmap: bool) -> np.ndarray:
    if not os.path.isfile(path):
        raise CTCFormatError(f"{path}: file not found")
    try:
        if memmap:
            try:
                return tifffile.memmap(path, mode="r")
            except ValueError:
                pass  # compressed or not contiguous: read it whole
        return tifffile.imread(path)
    except CTCFormatError:
        raise
    except Exception as e:  # tifffile raises many kinds on a damaged file
        raise CTCFormatError(f"{path}: unreadable TIFF ({type(e).__name__}: {e})") from e


def _squeeze_to_3d(data: np.ndarray, path: str) -> np.ndarray:
    if data.ndim > 3:
        data = data.reshape([s for s in data.shape if s != 1] or [1])
    if data.ndim != 3:
        raise CTCFormatError(
            f"{path}: expected a 3D stack (Z, Y, X), got an array of shape {tuple(data.shape)}"
        )
    return data


def read_raw_volume(path: str, memmap: bool = True, channel: int | None = None) -> np.ndarray:
    """Read a raw frame as a (Z, Y, X) array (memory-mapped when the file allows it), decided
    from the file's own axes (:func:`.tiff_stack.select_stack`): ``channel`` picks one channel of
    a multi-channel or colour file.

    Raises CTCFormatError naming the file for anything but a 3D stack of finite numbers.
    """
    data = _open_tiff(path, memmap)
    try:
        data = _squeeze_to_3d(select_stack(data, series_axes(path), path, channel), path)
    except StackAxesError as e:
        raise CTCFormatError(str(e)) from None
    if data.dtype.kind not in "uif":
        raise CTCFormatError(f"{path}: unsupported pixel type {data.dtype}")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise CTCFormatError(f"{path}: raw data contains NaN or Inf values")
    return data


def looks_like_labels(volume, slices: int = 5) -> bool:
    """Whether a (Z, Y, X) stack (array or :class:`RawStack`) is a label image rather than raw
    microscopy: integers, a background of exact zeros (at least a fifth of the pixels) and
    piecewise-constant objects (90 % of the object pixels equal their right neighbour), on up to
    ``slices`` evenly spaced slices. Raw fluorescence has noise inside the nuclei."""
    if volume.dtype.kind not in "ui":
        return False
    planes = np.stack([np.asarray(volume[int(z)])
                       for z in np.linspace(0, volume.shape[0] - 1, slices).round()])
    inside = planes[..., :-1] != 0
    if inside.mean() > 0.8 or not inside.any():
        return False
    return float((planes[..., :-1] == planes[..., 1:])[inside].mean()) >= 0.9


def check_not_labels(volume, source: str, instead: str) -> None:
    """Raise a one-line CTCFormatError naming source if the stack looks like a label image
    (:func:`looks_like_labels`); ``instead`` says what to give instead."""
    if looks_like_labels(volume):
        raise CTCFormatError(
            f"{source}: looks like a label image (integer objects on a zero background), not raw "
            f"microscopy; {instead}")


def check_raw_input(path: str, channel: int | None = None) -> None:
    """Raise a one-line CTCFormatError if the stack at path cannot be segmented: not a 3D stack
    of finite numbers (:func:`read_raw_volume`; ``channel`` as there), or a label image
    (:func:`check_not_labels`)."""
    check_not_labels(read_raw_volume(path, channel=channel), path,
                     "give the raw stack (tTTT.tif), not a reference or result")


class RawStack:
    """A raw frame's (Z, Y, X) stack read one slice at a time from its file, so that resident
    memory grows with a slice and not with the stack (a memory map keeps every slice it has
    touched resident). Indexing: ``stack[z]``, ``stack[z, rows, cols]``, ``stack[[z1, z2]]``.
    A TIFF that cannot be memory-mapped (compressed, not contiguous) or whose stack is one channel
    of several is read whole once."""

    def __init__(self, path: str, channel: int | None = None):
        data = read_raw_volume(path, channel=channel)
        self.path, self.shape, self.dtype, self.ndim = path, tuple(data.shape), data.dtype, 3
        contiguous = isinstance(data, np.memmap) and data.flags.c_contiguous
        self._whole = None if contiguous else np.asarray(data)
        self._offset = int(data.offset) if contiguous else 0
        self._filename = data.filename if contiguous else None

    def _plane(self, z: int) -> np.ndarray:
        if self._whole is not None:
            return self._whole[z]
        if not -self.shape[0] <= z < self.shape[0]:
            raise IndexError(f"slice {z} of a stack of {self.shape[0]}")
        count = self.shape[1] * self.shape[2]
        offset = self._offset + (z % self.shape[0]) * count * self.dtype.itemsize
        return np.fromfile(self._filename, dtype=self.dtype, count=count,
                           offset=offset).reshape(self.shape[1:])

    def __getitem__(self, key):
        if isinstance(key, tuple):
            return self._plane(int(key[0]))[key[1:]]
        if np.ndim(key) == 0:
            return self._plane(int(key))
        return (
            np.stack([self._plane(int(z)) for z in key])
            if len(key)
            else np.zeros((0, *self.shape[1:]), self.dtype)
        )


def read_label_volume(path: str, memmap: bool = True) -> np.ndarray:
    """Read a label image (2D slice or 3D volume) with integer labels, 0 = background
    (read-only and memory-mapped when the file allows it)."""
    data = _open_tiff(path, memmap)
    if data.dtype.kind not in "ui":
        raise CTCFormatError(f"{path}: labels must be integers, got pixel type {data.dtype}")
    if data.dtype.kind == "i" and data.size and data.min() < 0:
        raise CTCFormatError(f"{path}: negative labels")
    return data


def read_gt_frame(gt: GTFrame, shape: tuple[int, int, int], shape_of: str = "the raw frame's",
                  shape_file: str = "") -> tuple[np.ndarray, list[int] | None]:
    """Reference labels of one frame as a (Z, Y, X) volume of the given shape (that of the raw
    frame; errors name it ``shape_of``, and ``shape_file`` if given).

    Returns (labels, annotated_slices): annotated_slices is None for a full 3D reference,
    else the sorted z indices that have a reference (other slices are zero and must not be
    scored).
    """
    if gt.is_3d:
        labels = _squeeze_to_3d(read_label_volume(gt.volume_path), gt.volume_path)
        if labels.shape != tuple(shape):
            raise CTCFormatError(
                f"{gt.volume_path}: reference shape {labels.shape} differs from {shape_of} "
                f"{tuple(shape)}" + (f" ({shape_file})" if shape_file else "")
            )
        return np.asarray(labels), None
    labels = None
    for z, path in sorted(gt.slice_paths.items()):
        plane = read_label_volume(path)
        if plane.ndim != 2 or plane.shape != tuple(shape[1:]):
            raise CTCFormatError(
                f"{path}: reference slice shape {plane.shape} differs from {shape_of} "
                f"{tuple(shape[1:])}" + (f" ({shape_file})" if shape_file else "")
            )
        if not 0 <= z < shape[0]:
            raise CTCFormatError(f"{path}: slice {z} outside a volume of {shape[0]} slices")
        if labels is None:
            labels = np.zeros(shape, dtype=plane.dtype)
        labels[z] = plane
    return labels, sorted(gt.slice_paths)


def write_label_volume(path: str, labels: np.ndarray) -> None:
    """Write a uint16 label volume atomically (temporary name, then rename)."""
    if labels.size and int(labels.max()) > MAX_LABEL:
        raise CTCFormatError(f"{path}: {int(labels.max())} objects do not fit a uint16 label image")
    data = labels.astype(np.uint16, copy=False)
    atomic_write(path, lambda f: tifffile.imwrite(f, data, photometric="minisblack"))


def z_ranges(labels: np.ndarray) -> np.ndarray:
    """(L + 1, 2) first and last slice of every label 1..L of a (Z, H, W) label volume (-1, -1
    for a label that is absent, and for 0)."""
    found = ndimage.find_objects(np.asarray(labels))
    ranges = np.full((len(found) + 1, 2), -1, dtype=np.int64)
    for label, box in enumerate(found, start=1):
        if box is not None:
            ranges[label] = box[0].start, box[0].stop - 1
    return ranges


def write_label_planes(path: str, planes, shape: tuple[int, int, int],
                       bigtiff: bool | None = None) -> None:
    """Write a uint16 label volume from an iterable of its (H, W) planes in z order, atomically,
    one plane in memory at a time; BigTIFF when it would exceed 4 GB (bigtiff None) or when
    asked."""
    big = int(np.prod(shape)) * 2 > 2 ** 32 - 2 ** 25 if bigtiff is None else bigtiff

    def checked():
        count = 0
        for plane in planes:
            if plane.shape != tuple(shape[1:]):
                raise ValueError(
                    f"{path}: plane {count} has shape {plane.shape}, expected {tuple(shape[1:])}")
            count += 1
            yield np.asarray(plane, dtype=np.uint16)
        if count != shape[0]:
            raise ValueError(f"{path}: {count} planes written, expected {shape[0]}")

    atomic_write(path, lambda f: tifffile.imwrite(f, checked(), shape=tuple(shape), dtype=np.uint16,
                                                  bigtiff=big, photometric="minisblack"))


def write_marker_tracks(tra_dir: str, parents: dict[int, int] | None = None) -> None:
    """``man_track.txt`` of a TRA folder: every marker label a track from its first to its last
    frame with a marker file (``L B E P``), its parent from ``parents`` if that track is present,
    else 0."""
    present: dict[int, list[int]] = {}
    for frame, path in sorted(list_markers(tra_dir).items()):
        for label in np.unique(read_label_volume(path)):
            if label:
                present.setdefault(int(label), []).append(frame)
    parent = {label: p for label, p in (parents or {}).items() if p in present}
    lines = [f"{label} {min(frames)} {max(frames)} {parent.get(label, 0)}\n"
             for label, frames in sorted(present.items())]
    atomic_write(os.path.join(tra_dir, "man_track.txt"), lambda f: f.writelines(lines), "w")


def write_result_tracks(res_dir: str) -> int:
    """Make a result folder a valid CTC result: every object a track of its own frame, so that its
    label is unique over the sequence, and ``res_track.txt`` listing them (``L t t 0``).

    Frames are read in frame order; a frame whose labels collide with an earlier frame's is
    relabelled past them (atomically rewritten), keeping its objects' order. Returns the number
    of tracks. Raises CTCFormatError naming the folder when they do not fit uint16 labels.
    """
    tracks, used = [], 0
    for frame, path in sorted(list_results(res_dir).items()):
        labels = read_label_volume(path)
        ids = np.unique(labels)
        ids = ids[ids > 0]
        if ids.size and int(ids[0]) <= used:
            if used + ids.size > MAX_LABEL:
                raise CTCFormatError(
                    f"{res_dir}: more than {MAX_LABEL} objects over the sequence do not "
                    "fit uint16 labels unique over the sequence")
            lookup = np.zeros(int(ids[-1]) + 1, np.uint16)
            lookup[ids] = np.arange(used + 1, used + 1 + ids.size)
            write_label_volume(path, lookup[labels])
            ids = lookup[ids]
        tracks += [(int(label), frame) for label in ids]
        used = max(used, int(ids[-1])) if ids.size else used
    atomic_write(os.path.join(res_dir, RES_TRACK_FILE),
                 lambda f: f.writelines(f"{label} {frame} {frame} 0\n" for label, frame in tracks),
                 "w")
    return len(tracks)
