"""A generator of Fluo-N3DH-SIM+-like (and Fluo-N3DH-CHO-like) data, written in the CTC layout.

Nuclei are deformed, textured ellipsoids that drift, deform and sometimes divide over time
(labels persist along tracks). Image formation follows what is published about SIM+ (MitoGen):
about 600 * (0.2 + phantom) photons inside nuclei, a Gaussian PSF (sigma about 1 px laterally
and 1.3 slices axially at the native voxel of 0.125 x 0.125 x 0.2 um), Poisson shot noise, and a
camera offset of about 700 with Gaussian read-out noise of sigma about 90. The ``aniso`` preset
adds what real anisotropic stacks show (see its entry in PRESETS): out-of-focus haze from a broad
axial PSF component, and per-slice brightness variation.

Output (``write_synthetic_dataset``)::

    DIR/01/tTTT.tif                 raw uint16 (Z, Y, X)
    DIR/01_GT/SEG/man_segTTT.tif    full 3D labels (uint16)
    DIR/01_GT/TRA/man_trackTTT.tif  tracking markers (the same labels) and man_track.txt
    DIR/02/...                      a second, independent sequence
    DIR/voxel_size.json             {"zyx_um": [...]}
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace

import numpy as np
import tifffile
from scipy import ndimage
from tqdm import tqdm

from ..atomic import atomic_write
from .ctc import write_marker_tracks

FULL_VOXEL_UM = (0.2, 0.125, 0.125)


@dataclass(frozen=True)
class SyntheticPreset:
    """Physical description of a synthetic dataset; ``scale`` is pixels per full-resolution pixel.
    """

    field_um: tuple[float, float, float]  # (Z, Y, X) extent of the volume
    scale: float  # 1.0: the native SIM+ voxel 0.2 x 0.125 x 0.125 um
    frames: dict[str, int] = field(default_factory=lambda: {"01": 10, "02": 5})
    num_nuclei: int = 8
    radius_um: float = 3.0  # nuclei are about 6 um across
    radius_jitter: float = 0.15  # relative spread of the three semi-axes
    min_separation: float = 1.0  # centre distance / (r_i + r_j) that repulsion restores
    photons: float = 600.0
    offset: float = 700.0
    read_noise: float = 90.0
    psf_sigma_px: tuple[float, float, float] = (1.3, 1.0, 1.0)  # at the native voxel
    drift_um: float = 0.25  # per frame
    deform: float = 0.06  # amplitude of the radial modulation
    division_rate: float = 0.02  # per nucleus and frame
    native_voxel_um: tuple[float, float, float] = FULL_VOXEL_UM  # the voxel at scale 1.0
    # Out-of-focus light: this fraction of the signal is spread by a broad Gaussian of
    # haze_sigma_um (Z, Y, X) instead of the in-focus PSF (0: none).
    haze_fraction: float = 0.0
    haze_sigma_um: tuple[float, float, float] = (4.0, 1.0, 1.0)
    # Per-slice gain: bleaching exp(-bleaching * z / Z) along the acquisition, times a flicker
    # of 1 + N(0, flicker) drawn per slice and frame.
    bleaching: float = 0.0
    flicker: float = 0.0
    # Semi-axis along z relative to the in-plane ones; below 1 the nuclei lie flat (as on a
    # coverslip) and turn only in the plane.
    z_axis_ratio: float = 1.0
    # Brightness inside a nucleus: texture * (1.1 - edge_dimming * rho ** edge_power), rho the
    # normalised radius (0 at the centre, 1 at the surface).
    edge_dimming: float = 0.3
    edge_power: float = 4.0
    signal_floor: float = 0.2  # signal = photons * (signal_floor + brightness)
    # Brightness also falls as a Gaussian along the nucleus's own first (z) axis, of this sigma
    # relative to that semi-axis (0: it does not).
    axial_brightness_sigma: float = 0.0
    # A nucleus is in the reference only in the slices where its own (blurred) signal, summed
    # over the slice, is at least this fraction of its brightest slice's (0: wherever it is).
    reference_min_signal: float = 0.0
    z_scale: float | None = None  # slices per native slice (None: scale)
    # Where nucleus centres start along z, as fractions of the field's depth (a stack that images
    # the upper half of nuclei lying on a coverslip: about (-0.2, 0)); they stay within 0.1 of it.
    centre_z: tuple[float, float] = (0.15, 0.85)

    @property
    def voxel_um(self) -> tuple[float, float, float]:
        z_scale = self.scale if self.z_scale is None else self.z_scale
        return tuple(v / s for v, s in zip(self.native_voxel_um, (z_scale, self.scale, self.scale)))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(max(int(round(f / v)), 1) for f, v in zip(self.field_um, self.voxel_um))


PRESETS = {
    # Small and clean enough to train on 2 CPU cores in minutes: 20 x 96 x 96 voxels.
    "demo": SyntheticPreset(field_um=(8.0, 24.0, 24.0), scale=0.5, frames={"01": 20, "02": 8},
                            num_nuclei=7, min_separation=1.05),
    # Harder: denser, touching nuclei, half the photons, stronger anisotropy of the blur.
    "bench": SyntheticPreset(field_um=(10.0, 32.0, 32.0), scale=0.5, frames={"01": 24, "02": 10},
                             num_nuclei=16, min_separation=0.85, photons=300.0,
                             psf_sigma_px=(1.8, 1.0, 1.0), deform=0.1),
    # Fluo-N3DH-CHO-like at CPU size: 18 x 96 x 96 voxels of 1.0 x 0.4 x 0.4 um (CHO's 1 um slice
    # step, its 0.2 um pixel at half resolution). Calibrated to what real 5x-anisotropic CTC
    # stacks show (measured by axial_profile and voxel_snr; see tests/test_data.py): flat nuclei
    # about 12 um across and 8 um deep (z semi-axis 0.72 of the in-plane radius), lying in two
    # layers that touch along z; from the widest slice outward, in 1 um steps, the signal inside
    # the footprint is 1.00 / 0.83 / 0.49 / 0.21 / 0.07 (real: 1.00 / 0.88 / 0.47 / 0.19 / 0.08)
    # and the reference area 1.00 / 0.95 / 0.78 / 0.44 / 0.00 (real: 1.00 / 0.95 / 0.75 / 0.47 /
    # 0.00), the reference ending where a nucleus's own signal falls below 0.18 of its peak, so
    # its haze one slice beyond is about 0.07 of the peak; SNR (voxel_snr) about 12.4 (real:
    # 11-13). Axial PSF sigma 0.7 um plus 10 % haze (axial sigma 4 um), bleaching of 30 % over
    # the stack and 10 % slice-to-slice flicker.
    "aniso": SyntheticPreset(field_um=(18.0, 38.4, 38.4), scale=0.5, z_scale=1.0,
                             frames={"01": 24, "02": 10},
                             num_nuclei=14, radius_um=6.0, min_separation=0.85, photons=2000.0,
                             read_noise=45.0,
                             psf_sigma_px=(0.7, 1.0, 1.0), deform=0.1,
                             native_voxel_um=(1.0, 0.2, 0.2),
                             haze_fraction=0.1, haze_sigma_um=(4.0, 1.2, 1.2), bleaching=0.3,
                             flicker=0.1,
                             z_axis_ratio=0.72, signal_floor=0.0, axial_brightness_sigma=0.42,
                             reference_min_signal=0.18),
    # Full SIM+ size: 59 x 350 x 650 voxels at 0.2 x 0.125 x 0.125 um, 150 and 80 frames.
    "sim+": SyntheticPreset(field_um=(11.8, 43.75, 81.25), scale=1.0, frames={"01": 150, "02": 80},
                            num_nuclei=20, min_separation=0.9),
}


def _random_rotation(rng: np.random.Generator, in_plane_only: bool = False) -> np.ndarray:
    """A random (3, 3) rotation of ZYX coordinates; with in_plane_only, about the z axis."""
    if in_plane_only:
        angle = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(angle), np.sin(angle)
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


@dataclass
class Nucleus:
    label: int
    centre: np.ndarray  # (3,) um, ZYX
    axes: np.ndarray  # (3,) semi-axes in um
    rotation: np.ndarray  # (3, 3)
    velocity: np.ndarray  # (3,) um per frame
    shape_dirs: np.ndarray  # (K, 3) unit vectors of the radial modulation
    shape_phase: np.ndarray  # (K,)
    texture_k: np.ndarray  # (J, 3) wave vectors (rad / um)
    texture_phase: np.ndarray  # (J,)


class SequenceSimulator:
    """Evolves a population of nuclei over time and renders (raw, labels) volumes."""

    def __init__(self, preset: SyntheticPreset, rng: np.random.Generator):
        self.preset = preset
        self.rng = rng
        self.field = np.array(preset.field_um)
        self.shape_axes = np.array([preset.z_axis_ratio, 1.0, 1.0])  # a nucleus's axes / its radius
        # centres start in [start_low, start_high] and stay in [low, high] (um)
        self.start_low = np.array([preset.centre_z[0], 0.15, 0.15]) * self.field
        self.start_high = np.array([preset.centre_z[1], 0.85, 0.85]) * self.field
        self.low = np.array([preset.centre_z[0] - 0.1, 0.05, 0.05]) * self.field
        self.high = np.array([preset.centre_z[1] + 0.1, 0.95, 0.95]) * self.field
        self.next_label = 1
        self.tracks: dict[int, list[int]] = {}  # label -> [begin, end, parent]
        self.nuclei = [self._new_nucleus(self._random_centre(), preset.radius_um, 0, 0)
                       for _ in range(preset.num_nuclei)]
        self._separate(iterations=50)

    def _random_centre(self) -> np.ndarray:
        return self.rng.uniform(self.start_low, self.start_high)

    def _new_nucleus(self, centre: np.ndarray, radius: float, frame: int, parent: int) -> Nucleus:
        p, rng = self.preset, self.rng
        label = self.next_label
        self.next_label += 1
        self.tracks[label] = [frame, frame, parent]
        return Nucleus(
            label=label,
            centre=np.array(centre, dtype=float),
            axes=radius * (1.0 + p.radius_jitter * rng.uniform(-1, 1, size=3)) * self.shape_axes,
            rotation=_random_rotation(rng, in_plane_only=p.z_axis_ratio != 1.0),
            velocity=rng.normal(0, p.drift_um / 2, size=3),
            shape_dirs=rng.normal(size=(4, 3)) / np.sqrt(3),
            shape_phase=rng.uniform(0, 2 * np.pi, size=4),
            texture_k=rng.normal(size=(6, 3)) * (2 * np.pi / 1.5) / np.sqrt(3),
            texture_phase=rng.uniform(0, 2 * np.pi, size=6),
        )

    def _separate(self, iterations: int = 5) -> None:
        """Push apart nuclei closer than min_separation * (r_i + r_j), distances measured with z
        divided by the preset's z_axis_ratio (so flat nuclei stack closer); keep centres within
        their bounds."""
        for _ in range(iterations):
            if len(self.nuclei) < 2:
                break
            centres = np.stack([n.centre for n in self.nuclei]) / self.shape_axes
            radii = np.array([(n.axes / self.shape_axes).mean() for n in self.nuclei])
            diff = centres[:, None] - centres[None]
            dist = np.linalg.norm(diff, axis=-1) + np.eye(len(centres))
            wanted = self.preset.min_separation * (radii[:, None] + radii[None])
            push = np.clip(wanted - dist, 0, None) * (1 - np.eye(len(centres)))
            if not push.any():
                break
            shift = (diff / dist[..., None] * push[..., None] / 2).sum(axis=1) * self.shape_axes
            for nucleus, s in zip(self.nuclei, shift):
                nucleus.centre = np.clip(nucleus.centre + s, self.low, self.high)

    def step(self, frame: int) -> None:
        """Move, deform and divide the nuclei from frame-1 to frame."""
        p, rng = self.preset, self.rng
        survivors = []
        for n in self.nuclei:
            if rng.random() < p.division_rate:
                self.tracks[n.label][1] = frame - 1
                axis = n.rotation[:, int(np.argmax(n.axes))]
                for sign in (-1, 1):
                    offset = sign * 0.6 * n.axes.max() * axis
                    daughter = self._new_nucleus(n.centre + offset, 0.8 * p.radius_um, frame,
                                                 n.label)
                    survivors.append(daughter)
                continue
            n.velocity = 0.8 * n.velocity + rng.normal(0, p.drift_um / 2, size=3)
            n.centre = n.centre + n.velocity
            bounce = (n.centre < self.low) | (n.centre > self.high)
            n.velocity[bounce] *= -1
            n.centre = np.clip(n.centre, self.low, self.high)
            n.shape_phase = n.shape_phase + rng.normal(0, 0.15, size=n.shape_phase.shape)
            typical = p.radius_um * self.shape_axes
            n.axes = np.clip(n.axes * (1 + rng.normal(0, 0.01, size=3)), 0.6 * typical,
                             1.4 * typical)
            survivors.append(n)
        self.nuclei = survivors
        self._separate()
        for n in self.nuclei:
            self.tracks[n.label][1] = frame

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(raw uint16, labels uint16) volumes of the current frame, shape preset.shape."""
        p = self.preset
        shape = np.array(p.shape)
        voxel = np.array(p.voxel_um)
        labels = np.zeros(p.shape, dtype=np.uint16)
        best = np.full(p.shape, np.inf, dtype=np.float32)
        phantom = np.zeros(p.shape, dtype=np.float32)
        for n in self.nuclei:
            reach = n.axes.max() * (1 + 2 * p.deform) + voxel
            lo = np.maximum(np.floor((n.centre - reach) / voxel).astype(int), 0)
            hi = np.minimum(np.ceil((n.centre + reach) / voxel).astype(int) + 1, shape)
            if np.any(hi <= lo):
                continue
            grids = np.meshgrid(*[(np.arange(a, b) + 0.5) * v for a, b, v in zip(lo, hi, voxel)],
                                indexing="ij")
            rel = np.stack(grids, axis=-1) - n.centre  # (..., 3) um
            local = rel @ n.rotation  # coordinates along the nucleus' own axes
            radial = np.linalg.norm(local / n.axes, axis=-1)
            direction = local / (np.linalg.norm(local, axis=-1, keepdims=True) + 1e-9)
            modulation = 1 + p.deform * np.cos(3 * direction @ n.shape_dirs.T + n.shape_phase).mean(
                -1)
            rho = (radial / modulation).astype(np.float32)
            region = tuple(slice(a, b) for a, b in zip(lo, hi))
            inside = (rho < 1) & (rho < best[region])
            texture = 0.5 + 0.35 * np.cos(local @ n.texture_k.T + n.texture_phase).mean(-1)
            best[region][inside] = rho[inside]
            labels[region][inside] = n.label
            dimming = 1.1 - p.edge_dimming * rho[inside] ** p.edge_power
            if p.axial_brightness_sigma > 0:
                dimming = dimming * np.exp(-0.5
                                           * (local[..., 0][inside]
                                              / (p.axial_brightness_sigma * n.axes[0])) ** 2)
            phantom[region][inside] = np.clip(texture[inside] * dimming, 0, 1)
        signal = np.where(labels > 0, p.photons * (p.signal_floor + phantom), 0.0)
        sigma = np.array(p.psf_sigma_px) * np.array(p.native_voxel_um) / voxel
        haze_sigma = np.array(p.haze_sigma_um) / voxel
        blurred = ndimage.gaussian_filter(signal, sigma=sigma)
        if p.haze_fraction > 0:
            haze = ndimage.gaussian_filter(signal, sigma=haze_sigma)
            blurred = (1 - p.haze_fraction) * blurred + p.haze_fraction * haze
        if p.reference_min_signal > 0:
            labels = self._dim_slices_removed(labels, signal, sigma[0], haze_sigma[0])
        if p.bleaching > 0 or p.flicker > 0:
            depth = blurred.shape[0]
            gain = np.exp(-p.bleaching * np.arange(depth) / depth)
            gain = gain * np.clip(1 + p.flicker * self.rng.normal(size=depth), 0.5, 1.5)
            blurred = blurred * gain[:, None, None]
        counts = self.rng.poisson(np.clip(blurred, 0, None)).astype(np.float64)
        raw = counts + p.offset + self.rng.normal(0, p.read_noise, size=counts.shape)
        return np.clip(np.rint(raw), 0, 65535).astype(np.uint16), labels


    def _dim_slices_removed(self, labels: np.ndarray, signal: np.ndarray, sigma_z: float,
                            haze_sigma_z: float) -> np.ndarray:
        """labels without each nucleus's slices whose own signal, blurred along z as the image is,
        is below preset.reference_min_signal of its brightest slice's."""
        p = self.preset
        depth = labels.shape[0]
        count = int(labels.max()) + 1
        slice_index = np.broadcast_to(np.arange(depth)[:, None, None], labels.shape)
        sums = np.bincount((labels.astype(np.int64) * depth + slice_index).ravel(),
                           weights=signal.ravel(),
                           minlength=count * depth).reshape(count, depth)
        own = (1 - p.haze_fraction) * ndimage.gaussian_filter1d(sums, sigma_z, axis=1,
                                                                mode="constant")
        if p.haze_fraction > 0:
            own += p.haze_fraction * ndimage.gaussian_filter1d(sums, haze_sigma_z, axis=1,
                                                               mode="constant")
        keep = own >= p.reference_min_signal * own.max(axis=1, keepdims=True)
        keep[0] = False
        return np.where(keep[labels, slice_index], labels, 0).astype(labels.dtype)


def voxel_snr(raw: np.ndarray, labels: np.ndarray) -> float:
    """Signal-to-noise ratio per voxel: (mean inside nuclei - mean of the background at least 3
    voxels from any nucleus) / standard deviation of that background. bench: about 2.2, aniso: 12.4
    (real Fluo-N3DH-CHO-like stacks: 11-13)."""
    inside = labels > 0
    background = ~ndimage.binary_dilation(inside, iterations=3)
    raw = np.asarray(raw, dtype=np.float64)
    return float((raw[inside].mean() - raw[background].mean()) / raw[background].std())


def axial_profile(raw: np.ndarray, labels: np.ndarray,
                  max_offset: int = 4) -> tuple[np.ndarray, np.ndarray, int]:
    """How a nucleus ends along z, measured as on real stacks, from its widest reference slice
    outward: ((max_offset + 1,) mean background-subtracted signal inside its footprint (the
    union of its slices) relative to the widest slice, (max_offset + 1,) reference area relative
    to the widest slice, number of nucleus sides measured).

    Only sides that stay inside the stack for max_offset slices and meet no other nucleus's
    footprint there are measured; the background of a slice is its mean at least 3 voxels
    from any nucleus.
    """
    raw = np.asarray(raw, dtype=np.float64)
    far = ~ndimage.binary_dilation(labels > 0, iterations=3)
    background = np.array([raw[z][far[z]].mean() if far[z].any() else raw[far].mean()
                           for z in range(len(raw))])
    signal = raw - background[:, None, None]
    areas = np.stack([np.bincount(labels[z].ravel(), minlength=int(labels.max()) + 1)
                      for z in range(len(labels))])
    signals, area_ratios = [], []
    for label in range(1, areas.shape[1]):
        if not areas[:, label].any():
            continue
        widest = int(np.argmax(areas[:, label]))
        footprint = (labels == label).any(axis=0)
        for step in (-1, 1):
            zs = widest + step * np.arange(max_offset + 1)
            if zs.min() < 0 or zs.max() >= len(raw):
                continue
            others = labels[zs[1:]][:, footprint]
            if ((others > 0) & (others != label)).any():
                continue
            profile = signal[zs][:, footprint].mean(axis=1)
            signals.append(profile / profile[0])
            area_ratios.append(areas[zs, label] / areas[widest, label])
    if not signals:
        return np.full(max_offset + 1, np.nan), np.full(max_offset + 1, np.nan), 0
    return np.mean(signals, axis=0), np.mean(area_ratios, axis=0), len(signals)


def _write_tiff(path: str, data: np.ndarray) -> None:
    atomic_write(path, lambda f: tifffile.imwrite(f, data, photometric="minisblack"))


def sequence_simulator(preset: SyntheticPreset, seed: int, seq: str) -> SequenceSimulator:
    """The simulator of sequence ``seq`` (e.g. "01") of the dataset written with ``seed``."""
    return SequenceSimulator(preset, np.random.default_rng([seed, int(seq)]))


def rendered_frames(sim: SequenceSimulator, num_frames: int):
    """Yield the (raw, labels) volumes of frames 0..num_frames-1, stepping ``sim`` between them."""
    for t in range(num_frames):
        if t > 0:
            sim.step(t)
        yield sim.render()


def write_synthetic_sequence(out_dir: str, seq: str, preset: SyntheticPreset, seed: int,
                             num_frames: int) -> None:
    """Write one CTC sequence (raw, SEG and TRA ground truth, man_track.txt) under out_dir."""
    sim = sequence_simulator(preset, seed, seq)
    raw_dir = os.path.join(out_dir, seq)
    seg_dir = os.path.join(out_dir, f"{seq}_GT", "SEG")
    tra_dir = os.path.join(out_dir, f"{seq}_GT", "TRA")
    for folder in (raw_dir, seg_dir, tra_dir):
        os.makedirs(folder, exist_ok=True)
    frames = tqdm(rendered_frames(sim, num_frames), total=num_frames,
                  desc=f"synthesising {os.path.basename(out_dir)}/{seq}")
    for t, (raw, labels) in enumerate(frames):
        _write_tiff(os.path.join(raw_dir, f"t{t:03d}.tif"), raw)
        _write_tiff(os.path.join(seg_dir, f"man_seg{t:03d}.tif"), labels)
        _write_tiff(os.path.join(tra_dir, f"man_track{t:03d}.tif"), labels)
    write_marker_tracks(tra_dir, {label: track[2] for label, track in sim.tracks.items()})


def write_synthetic_dataset(out_dir: str, preset: str | SyntheticPreset = "demo", seed: int = 0,
                            frames: int | None = None,
                            scale: float | None = None) -> SyntheticPreset:
    """Write a SIM+-like CTC dataset (sequences 01 and 02) to out_dir; returns the preset used.

    frames: frames per sequence (default: the preset's); scale: resolution relative to the
    preset's native voxel (default: the preset's).
    """
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        preset = PRESETS[preset]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"--scale must be positive, got {scale}")
        preset = replace(preset, scale=scale)
    if frames is not None and frames < 1:
        raise ValueError(f"--frames must be at least 1, got {frames}")
    os.makedirs(out_dir, exist_ok=True)
    for seq, default_frames in preset.frames.items():
        write_synthetic_sequence(out_dir, seq, preset, seed, frames or default_frames)
    with open(os.path.join(out_dir, "voxel_size.json"), "w") as f:
        json.dump({"zyx_um": list(preset.voxel_um)}, f)
    return preset
