"""What a TIFF says about itself: its axes and its voxel size.

A 3D stack is decided from the file's own axes (tifffile's series axes: ``Z``, ``C`` channel,
``S`` sample (RGB), ``T`` time, ``Q``/``I`` unnamed page axes), never guessed from its shape: a
colour image, a multi-channel hyperstack (ZCYX, CZYX, planar CYX) or a time-lapse (TZYX) is
refused in one line naming the file, unless a channel is picked. The voxel size is read from the
file's ImageJ or OME tags (micrometre units only; a tag left at its default says nothing).

Torch-free, as :mod:`.ctc`, which reads every raw stack through :func:`stack_axes`.
"""
from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import numpy as np
import tifffile

CHANNEL_AXES = "CS"  # a channel or a colour sample
TIME_AXES = "T"
PLANE_AXES = "YX"
# micrometres per unit, for the units a voxel size may be given in
MICROMETRES_PER_UNIT = {"um": 1.0, "µm": 1.0, "\\u00B5m": 1.0, "micron": 1.0,
                        "microns": 1.0, "micrometer": 1.0, "micrometre": 1.0, "nm": 1e-3,
                        "mm": 1e3}


class StackAxesError(ValueError):
    """A TIFF whose axes are not those of one 3D stack (the message names the file)."""


def series_axes(path: str) -> str:
    """The axes of a TIFF's first series as tifffile reads them (e.g. ``QYX``, ``ZCYX``, ``YXS``),
    one letter per axis of the array ``tifffile.imread`` returns."""
    with tifffile.TiffFile(path) as tif:
        return tif.series[0].axes


def stack_axes(axes: str, shape: tuple, path: str, channel: int | None = None
               ) -> tuple[int | None, int | None]:
    """Where the 3D stack lies in an array of tifffile ``axes`` and ``shape``.

    Args:
        axes: one letter per axis (tifffile's series axes).
        shape: the array's shape.
        path: the file, for the error messages.
        channel: the channel to keep where the file has a channel or sample axis longer than 1.

    Returns:
        (channel_axis, channel): the axis to take ``channel`` from, or (None, None) where the file
        has no channel axis longer than 1. Every other axis longer than 1 is Y, X or one stack axis.

    Raises:
        StackAxesError: one line naming the file: a colour or multi-channel file without a
        channel, a channel out of range, a time-lapse, or more than one stack axis.
    """
    long = [(i, a, n) for i, (a, n) in enumerate(zip(axes, shape)) if n > 1]
    described = f"axes {axes}, shape {tuple(shape)}"
    times = [n for _, a, n in long if a in TIME_AXES]
    if times:
        raise StackAxesError(
            f"{path}: a time-lapse of {times[0]} time points ({described}); give one 3D stack per "
            "file, e.g. a CTC sequence folder (01/t000.tif, 01/t001.tif, ...)")
    channels = [(i, a, n) for i, a, n in long if a in CHANNEL_AXES]
    if len(channels) > 1:
        raise StackAxesError(f"{path}: more than one channel axis ({described})")
    if channels:
        index, letter, count = channels[0]
        kind = "colour samples (RGB)" if letter == "S" else "channels"
        if channel is None:
            raise StackAxesError(
                f"{path}: {count} {kind} ({described}); pick the nuclear stain's channel with "
                f"--channel C (0 to {count - 1})")
        if not 0 <= channel < count:
            raise StackAxesError(
                f"{path}: channel {channel} does not exist; it has {count} {kind} (0 to "
                f"{count - 1}; {described})")
    elif channel not in (None, 0):
        raise StackAxesError(f"{path}: channel {channel} does not exist; the file has one channel "
                             f"({described})")
    stack = [a for _, a, _ in long if a not in CHANNEL_AXES + PLANE_AXES]
    if len(stack) > 1:
        raise StackAxesError(f"{path}: {len(stack)} stack axes ({''.join(stack)}; {described}); "
                             "give one 3D stack (Z, Y, X) per file")
    return (channels[0][0], channel) if channels else (None, None)


def select_stack(data: np.ndarray, axes: str, path: str, channel: int | None = None) -> np.ndarray:
    """The 3D stack of an array read from a TIFF with tifffile ``axes`` (:func:`stack_axes`):
    the chosen channel taken, axes of length 1 dropped; a view where numpy allows it.

    Returns:
        (Z, Y, X) array, or an array of another rank where the file holds no 3D stack (a 2D image:
        the caller says what it expected).
    """
    if len(axes) != data.ndim:  # tifffile squeezed differently: only the shape is left to go on
        axes = "Q" * (data.ndim - 2) + PLANE_AXES
    channel_axis, channel = stack_axes(axes, data.shape, path, channel)
    if channel_axis is not None:
        data = np.asarray(np.take(data, channel, axis=channel_axis))  # a copy, no memory map
    if data.ndim > 3 or 1 in data.shape:
        data = data.reshape([s for s in data.shape if s != 1] or [1])
    return data


def _um(value, unit) -> float | None:
    factor = MICROMETRES_PER_UNIT.get(str(unit).strip())
    try:
        size = float(value) * factor if factor else None
    except (TypeError, ValueError):
        return None
    return size if size and 0 < size < float("inf") else None


def _imagej_voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    imagej = tif.imagej_metadata or {}
    unit = imagej.get("unit", "")
    tags = tif.pages[0].tags
    if "spacing" not in imagej or "XResolution" not in tags or "YResolution" not in tags:
        return None  # ImageJ writes spacing only for a calibrated stack
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    if not (xn and yn and xd and yd):
        return None
    sizes = (_um(imagej["spacing"], unit), _um(yd / yn, unit), _um(xd / xn, unit))
    return sizes if all(sizes) else None


def _ome_voxel_size(tif: tifffile.TiffFile) -> tuple[float, float, float] | None:
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.endswith("}Pixels") or e.tag == "Pixels"),
                  None)
    if pixels is None:
        return None
    sizes = tuple(_um(pixels.get(f"PhysicalSize{axis}"),  # OME's default unit is the micrometre
                      pixels.get(f"PhysicalSize{axis}Unit", "µm")) for axis in "ZYX")
    return sizes if all(sizes) else None


def tiff_voxel_size(path: str) -> tuple[float, float, float] | None:
    """(Z, Y, X) voxel size in micrometres that a TIFF states itself: OME's PhysicalSizeZ/Y/X, or
    ImageJ's ``spacing`` and ``unit`` with the X/Y resolution tags; None where it states none
    (or not all three, or in a unit that is no length)."""
    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                return _ome_voxel_size(tif)
            if tif.is_imagej:
                return _imagej_voxel_size(tif)
    except (tifffile.TiffFileError, OSError, IndexError, ValueError):
        return None
    return None
