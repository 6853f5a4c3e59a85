"""napari reader: a CTC sequence folder or a single 3D TIFF.

A sequence folder (``01/`` with tTTT.tif frames) opens as one (T, Z, Y, X) image layer, its
reference ``01_GT/SEG`` and a result ``01_RES`` beside it (if present) as label layers of the same
shape; frames without a reference are empty. A 3D TIFF opens as a (Z, Y, X) image, as the
file's own axes say: a multi-channel or colour stack as one (Z, Y, X) image layer per channel,
a time-lapse (TZYX) as one (T, Z, Y, X) layer. The scale is the voxel size in micrometres, found
as every tool finds it (:func:`resolve_voxel_size`: voxel_size.json beside or above, the TIFF's
ImageJ or OME tags, a known CTC dataset). Stacks larger than :data:`EAGER_BYTES` are read
lazily, frame by frame (dask).
"""
from __future__ import annotations

import os

import numpy as np
import tifffile

from ..data.catalog import resolve_voxel_size
from ..data.ctc import (CTCFormatError, list_frames, list_gt, list_results, read_gt_frame,
                        read_label_volume, read_raw_volume)
from ..data.tiff_stack import CHANNEL_AXES, TIME_AXES, select_stack

EAGER_BYTES = 1 << 30  # sequences up to this size are read into memory (editable labels)


def get_reader(path):
    """The npe2 reader hook: a reader for a CTC sequence folder or a TIFF of one or more 3D stacks
    (channels, time points), else None (the path is left to other readers)."""
    if not isinstance(path, str):
        return None
    if os.path.isdir(path) and list_frames(path):
        return read_ctc_sequence
    if path.lower().endswith((".tif", ".tiff")) and os.path.isfile(path):
        try:
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                axes, shape = series.axes, series.shape
        except (tifffile.TiffFileError, OSError, IndexError):
            return None
        spatial = sum(n > 1 for a, n in zip(axes, shape) if a not in CHANNEL_AXES + TIME_AXES)
        if spatial == 3:
            return read_stack
    return None


def _geometry(voxel: tuple | None, leading: int = 0) -> dict:
    """Layer keywords: axis labels (t, z, y, x) and, where the voxel size is known, the scale in
    micrometres with its unit (the time axis stays in frames)."""
    labels = {"axis_labels": ("t", "z", "y", "x")[1 - leading:]}
    if not voxel:
        return labels
    return {**labels, "scale": (1.0,) * leading + tuple(voxel),
            "units": ("pixel",) * leading + ("µm",) * 3}


def _frame_stack(read, count: int, shape: tuple, dtype) -> np.ndarray:
    """(count, *shape) array of read(i) for every frame i: in memory when small, else a lazy
    dask array read one frame at a time."""
    if count * int(np.prod(shape)) * np.dtype(dtype).itemsize <= EAGER_BYTES:
        return np.stack([np.asarray(read(i), dtype=dtype) for i in range(count)])
    import dask
    import dask.array as da

    return da.stack([da.from_delayed(dask.delayed(read)(i), shape, dtype) for i in range(count)])


def read_stack(path: str) -> list[tuple]:
    """A TIFF's 3D stack as one image layer, scaled by its voxel size; a multi-channel or colour
    stack as one layer per channel (metadata ``channel``), a time-lapse as one (T, Z, Y, X)
    layer."""
    with tifffile.TiffFile(path) as tif:
        axes, shape = tif.series[0].axes, tif.series[0].shape
    voxel = resolve_voxel_size(path)[0]
    name = os.path.splitext(os.path.basename(path))[0]
    metadata = {"ctc_files": [os.path.basename(path)]}
    times = [n for a, n in zip(axes, shape) if a in TIME_AXES and n > 1]
    if times:
        data = np.moveaxis(np.asarray(tifffile.imread(path)), axes.index("T"), 0)
        frames = [read_stack_array(frame, axes.replace("T", ""), path) for frame in data]
        return [(np.stack(frames), {"name": name, **_geometry(voxel, 1), "metadata": metadata},
                 "image")]
    channels = [n for a, n in zip(axes, shape) if a in CHANNEL_AXES and n > 1]
    return [(read_raw_volume(path, memmap=False, channel=c),
             {"name": f"{name} [channel {c}]" if channels else name, **_geometry(voxel),
              "metadata": {**metadata, **({"channel": c} if channels else {})}}, "image")
            for c in (range(channels[0]) if channels else [None])]


def read_stack_array(data: np.ndarray, axes: str, path: str) -> np.ndarray:
    """The (Z, Y, X) stack of one time point of a time-lapse (one channel: a multi-channel
    time-lapse is refused with one line naming the file)."""
    volume = select_stack(data, axes, path)
    if volume.ndim != 3:
        raise CTCFormatError(f"{path}: a time point of shape {volume.shape} is not a 3D stack")
    return volume


def read_ctc_sequence(path: str) -> list[tuple]:
    """A CTC sequence folder as a (T, Z, Y, X) image layer, plus its reference segmentation and
    result as label layers when present (see the module docstring)."""
    path = os.path.normpath(path)
    frames = sorted(list_frames(path).items())
    if not frames:
        raise CTCFormatError(f"{path}: no CTC frames (tTTT.tif) found")
    first = read_raw_volume(frames[0][1])
    shape = first.shape
    root, seq = os.path.dirname(path), os.path.basename(path)

    def raw(i):
        volume = read_raw_volume(frames[i][1], memmap=False)
        if volume.shape != shape:
            raise CTCFormatError(
                f"{frames[i][1]}: shape {volume.shape} differs from {frames[0][1]}'s {shape}")
        return volume

    voxel = resolve_voxel_size(path)[0]
    meta = {"ctc_files": [os.path.basename(p) for _, p in frames], "ctc_sequence": path}
    name = f"{os.path.basename(root)}/{seq}"
    layers = [(_frame_stack(raw, len(frames), shape, first.dtype),
               {"name": name, **_geometry(voxel, 1), "metadata": meta},
               "image")]
    references = list_gt(os.path.join(root, f"{seq}_GT", "SEG"))
    if references:
        def reference(i):
            gt = references.get(frames[i][0])
            return (
                np.zeros(shape, np.uint16)
                if gt is None
                else read_gt_frame(gt, shape, "the raw frame's", frames[i][1])[0]
            )

        layers.append((_frame_stack(reference, len(frames), shape, np.uint16),
                       {"name": f"{name} reference", **_geometry(voxel, 1),
                        "metadata": {**meta, "ctc_reference": True}}, "labels"))
    results = list_results(os.path.join(root, f"{seq}_RES"))
    if results:
        def result(i):
            file = results.get(frames[i][0])
            if file is None:
                return np.zeros(shape, np.uint16)
            labels = read_label_volume(file, memmap=False)
            if labels.shape != shape:
                raise CTCFormatError(
                    f"{file}: shape {labels.shape} differs from the raw frame's {shape}")
            return labels

        layers.append((_frame_stack(result, len(frames), shape, np.uint16),
                       {"name": f"{name} result", **_geometry(voxel, 1), "metadata": dict(meta)},
                       "labels"))
    return layers
