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
    """Physical description of a synthetic dataset; ``scale`` is pixels per full-resolution pixel."""

    field_um: tuple[float, float, float]  # (Z, Y, X) extent of the volume
    scale: float  # 1.0: the native SIM+ voxel 0.2 x 0.125 x 0.125 um
    frames: dict[str, int] = field(default_factory=lambda: {"01": 10, "02": 5})
    num_nuclei: int = 8
    radius_um: float = 3.0  # nuclei are about 6 um across
    radius_jitter: float = 0.15  # relative spread of the three semi-axes
    min_separation: float = 1.0  # centre distance / (r_i + r_j) that repulsion restores
    photons: float = 600.0  # signal = photons * (0.2 + phantom)
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

    @property
    def voxel_um(self) -> tuple[float, float, float]:
        return tuple(v / self.scale for v in self.native_voxel_um)

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
    # Fluo-N3DH-CHO-like anisotropy at CPU size: 12 x 96 x 96 voxels of 2.0 x 0.4 x 0.4 um (CHO's
    # published 1.0 x 0.2 x 0.2 um voxel at half resolution: z spacing 5x the pixel). CHO nuclei
    # are about 10-14 um across (radius 6 um +- 15 %), so a nucleus spans 5-7 slices and the
    # 24 um deep field holds two layers that touch along z as well as in the plane. Axial PSF
    # FWHM 2.5 um (sigma 1.06 um, about 0.5 slice) as for a confocal with a 1.0 NA objective at
    # this depth, plus 35 % out-of-focus haze (axial sigma 4 um, lateral 1.2 um), so a nucleus
    # shows dimly and nearly full-size in the slices above and below its poles. Bleaching of
    # 30 % over the stack and 10 % slice-to-slice flicker; fewer photons than bench: voxel_snr
    # about 1.3 against bench's 2.2.
    "aniso": SyntheticPreset(field_um=(24.0, 38.4, 38.4), scale=0.5, frames={"01": 24, "02": 10},
                             num_nuclei=14, radius_um=6.0, min_separation=0.85, photons=220.0,
                             psf_sigma_px=(1.06, 1.0, 1.0), deform=0.1,
                             native_voxel_um=(1.0, 0.2, 0.2), haze_fraction=0.35,
                             haze_sigma_um=(4.0, 1.2, 1.2), bleaching=0.3, flicker=0.1),
    # Full SIM+ size: 59 x 350 x 650 voxels at 0.2 x 0.125 x 0.125 um, 150 and 80 frames.
    "sim+": SyntheticPreset(field_um=(11.8, 43.75, 81.25), scale=1.0, frames={"01": 150, "02": 80},
                            num_nuclei=20, min_separation=0.9),
}


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
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
        self.next_label = 1
        self.tracks: dict[int, list[int]] = {}  # label -> [begin, end, parent]
        self.nuclei = [self._new_nucleus(self._random_centre(), preset.radius_um, 0, 0)
                       for _ in range(preset.num_nuclei)]
        self._separate(iterations=50)

    def _random_centre(self) -> np.ndarray:
        return self.rng.uniform(0.15, 0.85, size=3) * self.field

    def _new_nucleus(self, centre: np.ndarray, radius: float, frame: int, parent: int) -> Nucleus:
        p, rng = self.preset, self.rng
        label = self.next_label
        self.next_label += 1
        self.tracks[label] = [frame, frame, parent]
        return Nucleus(
            label=label,
            centre=np.array(centre, dtype=float),
            axes=radius * (1.0 + p.radius_jitter * rng.uniform(-1, 1, size=3)),
            rotation=_random_rotation(rng),
            velocity=rng.normal(0, p.drift_um / 2, size=3),
            shape_dirs=rng.normal(size=(4, 3)) / np.sqrt(3),
            shape_phase=rng.uniform(0, 2 * np.pi, size=4),
            texture_k=rng.normal(size=(6, 3)) * (2 * np.pi / 1.5) / np.sqrt(3),
            texture_phase=rng.uniform(0, 2 * np.pi, size=6),
        )

    def _separate(self, iterations: int = 5) -> None:
        """Push apart nuclei closer than min_separation * (r_i + r_j); keep centres in the field."""
        for _ in range(iterations):
            if len(self.nuclei) < 2:
                break
            centres = np.stack([n.centre for n in self.nuclei])
            radii = np.array([n.axes.mean() for n in self.nuclei])
            diff = centres[:, None] - centres[None]
            dist = np.linalg.norm(diff, axis=-1) + np.eye(len(centres))
            wanted = self.preset.min_separation * (radii[:, None] + radii[None])
            push = np.clip(wanted - dist, 0, None) * (1 - np.eye(len(centres)))
            if not push.any():
                break
            shift = (diff / dist[..., None] * push[..., None] / 2).sum(axis=1)
            for nucleus, s in zip(self.nuclei, shift):
                nucleus.centre = np.clip(nucleus.centre + s, 0.05 * self.field, 0.95 * self.field)

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
                    daughter = self._new_nucleus(n.centre + offset, 0.8 * p.radius_um, frame, n.label)
                    survivors.append(daughter)
                continue
            n.velocity = 0.8 * n.velocity + rng.normal(0, p.drift_um / 2, size=3)
            n.centre = n.centre + n.velocity
            bounce = (n.centre < 0.05 * self.field) | (n.centre > 0.95 * self.field)
            n.velocity[bounce] *= -1
            n.centre = np.clip(n.centre, 0.05 * self.field, 0.95 * self.field)
            n.shape_phase = n.shape_phase + rng.normal(0, 0.15, size=n.shape_phase.shape)
            n.axes = np.clip(n.axes * (1 + rng.normal(0, 0.01, size=3)), 0.6 * p.radius_um, 1.4 * p.radius_um)
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
            modulation = 1 + p.deform * np.cos(3 * direction @ n.shape_dirs.T + n.shape_phase).mean(-1)
            rho = (radial / modulation).astype(np.float32)
            region = tuple(slice(a, b) for a, b in zip(lo, hi))
            inside = (rho < 1) & (rho < best[region])
            texture = 0.5 + 0.35 * np.cos(local @ n.texture_k.T + n.texture_phase).mean(-1)
            best[region][inside] = rho[inside]
            labels[region][inside] = n.label
            phantom[region][inside] = np.clip(texture[inside] * (1.1 - 0.3 * rho[inside] ** 4), 0, 1)
        signal = np.where(labels > 0, p.photons * (0.2 + phantom), 0.0)
        sigma = np.array(p.psf_sigma_px) * np.array(p.native_voxel_um) / voxel
        blurred = ndimage.gaussian_filter(signal, sigma=sigma)
        if p.haze_fraction > 0:
            haze = ndimage.gaussian_filter(signal, sigma=np.array(p.haze_sigma_um) / voxel)
            blurred = (1 - p.haze_fraction) * blurred + p.haze_fraction * haze
        if p.bleaching > 0 or p.flicker > 0:
            depth = blurred.shape[0]
            gain = np.exp(-p.bleaching * np.arange(depth) / depth)
            gain = gain * np.clip(1 + p.flicker * self.rng.normal(size=depth), 0.5, 1.5)
            blurred = blurred * gain[:, None, None]
        counts = self.rng.poisson(np.clip(blurred, 0, None)).astype(np.float64)
        raw = counts + p.offset + self.rng.normal(0, p.read_noise, size=counts.shape)
        return np.clip(np.rint(raw), 0, 65535).astype(np.uint16), labels


def voxel_snr(raw: np.ndarray, labels: np.ndarray) -> float:
    """Signal-to-noise ratio per voxel: (mean inside nuclei - mean of the background at least 3
    voxels from any nucleus) / standard deviation of that background. bench: about 2.2, aniso: 1.3."""
    inside = labels > 0
    background = ~ndimage.binary_dilation(inside, iterations=3)
    raw = np.asarray(raw, dtype=np.float64)
    return float((raw[inside].mean() - raw[background].mean()) / raw[background].std())


def _write_tiff(path: str, data: np.ndarray) -> None:
    atomic_write(path, lambda f: tifffile.imwrite(f, data, photometric="minisblack"))


def write_synthetic_sequence(out_dir: str, seq: str, preset: SyntheticPreset, seed: int,
                             num_frames: int) -> None:
    """Write one CTC sequence (raw, SEG and TRA ground truth, man_track.txt) under out_dir."""
    rng = np.random.default_rng([seed, int(seq)])
    sim = SequenceSimulator(preset, rng)
    raw_dir = os.path.join(out_dir, seq)
    seg_dir = os.path.join(out_dir, f"{seq}_GT", "SEG")
    tra_dir = os.path.join(out_dir, f"{seq}_GT", "TRA")
    for folder in (raw_dir, seg_dir, tra_dir):
        os.makedirs(folder, exist_ok=True)
    for t in tqdm(range(num_frames), desc=f"synthesising {os.path.basename(out_dir)}/{seq}"):
        if t > 0:
            sim.step(t)
        raw, labels = sim.render()
        _write_tiff(os.path.join(raw_dir, f"t{t:03d}.tif"), raw)
        _write_tiff(os.path.join(seg_dir, f"man_seg{t:03d}.tif"), labels)
        _write_tiff(os.path.join(tra_dir, f"man_track{t:03d}.tif"), labels)
    write_marker_tracks(tra_dir, {label: track[2] for label, track in sim.tracks.items()})


def write_synthetic_dataset(out_dir: str, preset: str | SyntheticPreset = "demo", seed: int = 0,
                            frames: int | None = None, scale: float | None = None) -> SyntheticPreset:
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
