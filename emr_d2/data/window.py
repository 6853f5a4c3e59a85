"""N-slice windows of a volume: slice offsets (in slices or micrometres), indices with edge padding,
and per-volume normalisation."""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from .ctc import read_raw_volume

PADDING_MODES = ("replicate", "zero", "reflect")

logger = logging.getLogger(__name__)
_warned: set = set()


def warn_if_deeper_than(depth: int, offsets: np.ndarray, source: str) -> None:
    """Warn once per process when the window spans more slices than the volume has (every
    window is then padded)."""
    span = int(np.max(offsets) - np.min(offsets)) + 1
    if span > depth and (depth, span) not in _warned:
        _warned.add((depth, span))
        logger.warning(
            f"{source}: the slice window spans {span} slices, which exceeds the volume's "
            f"{depth} slices; the windows are padded")


def window_offsets(num_slices: int) -> np.ndarray:
    """Slice offsets dz of an N-slice window: -N//2 .. N - N//2 - 1 (the centre is at N//2)."""
    return np.arange(num_slices) - num_slices // 2


def window_indices(z: int, depth: int, offsets: np.ndarray, padding: str) -> np.ndarray:
    """Source slice of every window position z + offsets, (N,) int; -1 marks a zero-padded slice."""
    if padding not in PADDING_MODES:
        raise ValueError(f"INPUT.SLICE_PADDING must be one of {PADDING_MODES}, got {padding!r}")
    idx = z + np.asarray(offsets)
    outside = (idx < 0) | (idx >= depth)
    if padding == "replicate":
        return np.clip(idx, 0, depth - 1)
    if padding == "zero":
        return np.where(outside, -1, idx)
    if depth == 1:
        return np.zeros_like(idx)
    period = 2 * (depth - 1)
    idx = np.mod(idx, period)
    return np.where(idx >= depth, period - idx, idx)


@dataclass(frozen=True)
class SliceWindow:
    """Which slices make the window of slice z: z + offsets, padded at the volume edges.

    The offsets are INPUT.SLICE_OFFSETS, or the default N-slice offsets (``window_offsets``)
    times a step: 1, or with INPUT.SLICE_SPACING_UM the spacing in slices of the volume's z
    voxel size (rounded, at least 1). The centre (offset 0) is always window position N//2.
    """

    num_slices: int
    padding: str = "replicate"
    offsets: tuple[int, ...] = ()
    spacing_um: float = 0.0

    @classmethod
    def from_config(cls, cfg) -> "SliceWindow":
        return cls(cfg.INPUT.NUM_SLICES, cfg.INPUT.SLICE_PADDING, tuple(cfg.INPUT.SLICE_OFFSETS),
                   float(cfg.INPUT.SLICE_SPACING_UM))

    def slice_offsets(self, z_um: float | None = None, source: str = "the volume") -> np.ndarray:
        """(N,) int offsets in slices for a volume of z voxel size ``z_um`` (micrometres)."""
        if self.offsets:
            return np.asarray(self.offsets, dtype=np.int64)
        step = 1
        if self.spacing_um > 0:
            if not z_um:
                raise ValueError(
                    f"INPUT.SLICE_SPACING_UM needs the z voxel size of {source}: give it "
                    "(--voxel-size Z Y X, or voxel_size.json in the dataset folder)")
            step = max(1, int(round(self.spacing_um / z_um)))
        return window_offsets(self.num_slices) * step

    def offsets_for(self, voxel_um: tuple | None, source: str = "the volume") -> np.ndarray:
        """slice_offsets for a volume of (Z, Y, X) voxel size voxel_um (None: unknown)."""
        check_voxel_size(voxel_um, source)
        return self.slice_offsets(voxel_um[0] if voxel_um else None, source)

    def indices(self, z: int, depth: int, offsets: np.ndarray) -> np.ndarray:
        """Source slice of every window position of slice z (-1: zero padding), (N,) int."""
        return window_indices(z, depth, offsets, self.padding)


PERCENTILE_SAMPLE_SLICES = 32  # at most this many slices, evenly spaced
PERCENTILE_SAMPLE_PIXELS = 1 << 20  # and about this many pixels of each


def percentile_range(volume: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """Intensities at the low / high percentiles of a (Z, Y, X) volume.

    Estimated from a bounded sample, so that the memory does not grow with the volume: at most
    32 evenly spaced slices, every second row and column (more where a slice has over 4M
    pixels). For volumes of up to 32 slices of up to 2048 x 2048 that is every slice: the same
    to well under a grey level as all voxels, four times faster.
    """
    depth, height, width = volume.shape
    zs = np.unique(
        np.linspace(0, depth - 1, min(depth, PERCENTILE_SAMPLE_SLICES)).round().astype(int))
    step = max(2, int(np.ceil(np.sqrt(height * width / PERCENTILE_SAMPLE_PIXELS))))
    sample = np.stack([np.asarray(volume[z, ::step, ::step], dtype=np.float32) for z in zs])
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high)


def normalise(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map intensities so that low -> 0 and high -> 1 (float32)."""
    return (np.asarray(data, dtype=np.float32) - low) / max(high - low, 1e-6)


def normalised_slices(volume: np.ndarray, indices, low: float, high: float) -> np.ndarray:
    """Slices ``indices`` of a (Z, H, W) volume normalised to [low, high] -> [0, 1]: float32
    (S, H, W); index -1 (zero padding) gives a slice of zeros."""
    indices = np.asarray(indices)
    valid = indices >= 0
    out = np.zeros((len(indices),) + volume.shape[1:], dtype=np.float32)
    out[valid] = normalise(volume[indices[valid]], low, high)
    return out


def check_voxel_size(voxel_um: tuple | None, source: str = "the volume") -> None:
    """A (Z, Y, X) voxel size is three finite positive numbers (None: unknown)."""
    if voxel_um is not None and (len(voxel_um) != 3
                                 or not all(0 < float(v) < float("inf") for v in voxel_um)):
        raise ValueError(
            f"the voxel size of {source} must be three positive numbers Z Y X in micrometres, "
            f"got {tuple(voxel_um)}")


def pixel_scale(target_um: float, voxel_um: tuple | None, source: str = "the volume") -> float:
    """Factor that resizes slices of a volume with (Z, Y, X) voxel size voxel_um to the in-plane
    pixel size target_um (INPUT.PIXEL_SIZE_UM; 0: native pixels, factor 1)."""
    check_voxel_size(voxel_um, source)
    if not target_um:
        return 1.0
    if not voxel_um:
        raise ValueError(f"INPUT.PIXEL_SIZE_UM needs the voxel size of {source}: give it "
                         "(--voxel-size Z Y X, or voxel_size.json in the dataset folder)")
    return float(voxel_um[2]) / float(target_um)


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H, W) of a slice resized by ``scale`` (at least one pixel)."""
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


class VolumeWindowReader:
    """Reads normalised N-slice windows of raw volumes.

    Volumes are memory-mapped where the TIFF allows it, so a window reads only its N slices;
    the normalisation range of a volume is computed once, on first use. Keeps the last
    ``max_volumes`` volumes open.
    """

    def __init__(self, percentiles: tuple[float, float] = (1.0, 99.8), max_volumes: int = 4):
        self.percentiles = tuple(percentiles)
        self.max_volumes = max_volumes
        self._volumes: OrderedDict[str, tuple[np.ndarray, float, float]] = OrderedDict()

    def volume(self, path: str) -> tuple[np.ndarray, float, float]:
        """(raw (Z, Y, X) array, low, high) of a volume."""
        if path in self._volumes:
            self._volumes.move_to_end(path)
            return self._volumes[path]
        data = read_raw_volume(path)
        entry = (data, *percentile_range(data, self.percentiles))
        self._volumes[path] = entry
        if len(self._volumes) > self.max_volumes:
            self._volumes.popitem(last=False)
        return entry

    def window(self, path: str, z: int, offsets: np.ndarray, padding: str) -> np.ndarray:
        """Normalised slices z + offsets: float32 (N, H, W)."""
        data, low, high = self.volume(path)
        warn_if_deeper_than(data.shape[0], offsets, path)
        return normalised_slices(data, window_indices(z, data.shape[0], offsets, padding), low,
                                 high)


def z_spacing_um(voxel_um: tuple | None) -> float:
    """The slice spacing z extents are measured in: the voxel's z size, 1.0 (so extents count
    slices) where the dataset's voxel size is unknown."""
    return float(voxel_um[0]) if voxel_um else 1.0
