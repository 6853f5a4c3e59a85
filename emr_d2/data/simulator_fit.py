"""A synthetic generator fitted to real data: measure annotated stacks, then search the preset
whose generated stacks measure the same (``tools/make_synthetic.py --like``).

The statistics (:func:`measure`) are those that calibrated the ``aniso`` preset by hand: nucleus
size in the plane and depth along z, nuclei per stack, voxel SNR (:func:`voxel_snr`), how signal
and reference area fall from a nucleus's widest slice outward (:func:`axial_profile`), and
bleaching along z. The voxel size and stack shape are copied; the number of nuclei and the
brightness are set by one proportional correction each; the rest of the image formation (nucleus
radius and flatness, axial PSF, haze, axial dimming inside a nucleus, where the reference ends,
bleaching) is searched by Nelder-Mead, each candidate measured on the whole dataset it would
write (the same random numbers for every candidate, so the objective is deterministic and the
fitted statistics are those of the dataset written).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage, optimize
from tqdm import tqdm

from .ctc import (CTCFormatError, GTFrame, annotated_frames, find_sequences, list_frames,
                  read_gt_frame, read_raw_volume)
from .synthetic import (PRESETS, SyntheticPreset, axial_profile, rendered_frames,
                        sequence_simulator, voxel_snr)

logger = logging.getLogger(__name__)

PROFILE_STEPS = 4  # slices from the widest outward in the axial profiles
# Each statistic and how far the generated data may be from the measured data for the fit to
# count as reproducing it (absolute; "nuclei" and "snr" relative).
TOLERANCE = {
    "radius_um": 0.5, "depth_um": 0.6, "widest_z": 0.1, "nuclei": 0.25, "snr": 0.2,
    "bleaching": 0.15,
    **{f"signal_{k}": 0.08 for k in range(1, PROFILE_STEPS + 1)},
    **{f"area_{k}": 0.1 for k in range(1, PROFILE_STEPS + 1)},
}
RELATIVE = ("nuclei", "snr")
# The searched preset fields and their bounds; psf_z is the axial PSF sigma in native slices,
# centre_z the middle of the preset's centre_z range (a fraction of the depth, 0.1 wide).
SEARCH = {
    "centre_z": (-0.5, 1.5), "radius_um": (1.0, 20.0), "z_axis_ratio": (0.3, 1.5),
    "psf_z": (0.2, 3.0), "haze_fraction": (0.0, 0.4), "axial_brightness_sigma": (0.0, 1.5),
    "reference_min_signal": (0.0, 0.5), "bleaching": (0.0, 0.8),
}


@dataclass
class AnnotatedStacks:
    """Raw stacks with full-volume reference labels, and their (Z, Y, X) voxel size in um."""

    pairs: list[tuple[np.ndarray, np.ndarray]]
    voxel_um: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.pairs[0][0].shape


def read_annotated(folder: str, voxel_um: tuple | None = None) -> AnnotatedStacks:
    """Every raw frame with a full-volume reference in a CTC dataset folder (``<seq>/tTTT.tif``
    with ``<seq>_GT/SEG/man_segTTT.tif``) or in one of its sequence folders (``<dataset>/01``:
    only that sequence, e.g. to leave the test sequence out), or every stack of
    ``folder/images`` with the labels of the same name in ``folder/masks``. The voxel size:
    voxel_um, else the dataset's voxel_size.json or known CTC name. Raises CTCFormatError with
    one line naming what is missing."""
    from .catalog import resolve_voxel_size  # here: it imports detectron2, the generator does not

    if not os.path.isdir(folder):
        raise CTCFormatError(f"{folder}: no such folder")
    frames = []  # (raw path, reference)
    if os.path.isdir(os.path.join(folder, "images")):
        for name in sorted(os.listdir(os.path.join(folder, "images"))):
            if name.lower().endswith((".tif", ".tiff")):
                mask = os.path.join(folder, "masks", name)
                if not os.path.isfile(mask):
                    raise CTCFormatError(f"{mask}: not found; every stack in images/ needs its "
                                         "labels of the same name in masks/")
                frames.append((os.path.join(folder, "images", name), GTFrame(0, mask)))
    else:
        if list_frames(folder):  # one sequence folder: <dataset>/<seq>, beside <seq>_GT
            root, sequences = os.path.dirname(os.path.abspath(folder)), [os.path.basename(
                os.path.normpath(folder))]
        else:
            root, sequences = folder, find_sequences(folder)
        frames = [pair for seq in sequences for pair in annotated_frames(root, seq).values()]
    if not frames:
        raise CTCFormatError(f"{folder}: no raw stack with a full-volume reference (a CTC dataset "
                             "with <seq>_GT/SEG/man_segTTT.tif, or images/ and masks/)")
    voxel = resolve_voxel_size(folder, tuple(voxel_um) if voxel_um else None)[0]
    if voxel is None:
        raise CTCFormatError(f"{folder}: unknown voxel size; give --voxel-size Z Y X or write "
                             'voxel_size.json {"zyx_um": [z, y, x]}')
    pairs = []
    for raw_path, gt in frames:
        raw = read_raw_volume(raw_path, memmap=False)
        pairs.append((raw, read_gt_frame(gt, raw.shape, shape_file=raw_path)[0]))
    if len({raw.shape for raw, _ in pairs}) > 1:
        raise CTCFormatError(f"{folder}: stacks of different shapes; fit one shape at a time")
    return AnnotatedStacks(pairs, voxel)


def bleaching_of(raw: np.ndarray, labels: np.ndarray) -> float:
    """Relative loss of signal from the first slice to the last: 1 - exp(slope) of a line
    through log(mean signal inside the reference - background) over z / (Z - 1); NaN with fewer
    than two slices holding nuclei."""
    far = ~ndimage.binary_dilation(labels > 0, iterations=3)
    zs, logs = [], []
    for z in range(len(raw)):
        inside = labels[z] > 0
        if inside.sum() >= 20 and far[z].any():
            signal = raw[z][inside].mean() - raw[z][far[z]].mean()
            if signal > 0:
                zs.append(z / max(len(raw) - 1, 1))
                logs.append(np.log(signal))
    if len(zs) < 2:
        return float("nan")
    return float(1.0 - np.exp(np.polyfit(zs, logs, 1)[0]))


def measure(stacks: AnnotatedStacks) -> dict[str, float]:
    """The statistics of :data:`TOLERANCE`, pooled over the stacks: median in-plane radius
    (equivalent circle of each nucleus's widest reference slice) and mean depth (reference slices x
    slice spacing) in um, mean position of the widest slice (0: the first slice, 1: the last),
    mean nuclei per stack, mean voxel SNR, mean bleaching, and the axial
    signal and reference-area profiles (``signal_k``, ``area_k``: k slices from the widest,
    relative to it, averaged over every measurable side)."""
    pixel_area = stacks.voxel_um[1] * stacks.voxel_um[2]
    radii, depths, widest, counts, snrs, bleaching = [], [], [], [], [], []
    signal, area, sides = np.zeros(PROFILE_STEPS + 1), np.zeros(PROFILE_STEPS + 1), 0
    for raw, labels in stacks.pairs:
        ids = np.unique(labels)[1:]
        counts.append(len(ids))
        if not len(ids):
            continue
        areas = np.stack([np.bincount(labels[z].ravel(), minlength=int(ids.max()) + 1)[ids]
                          for z in range(len(labels))])  # (Z, K)
        radii += list(np.sqrt(areas.max(axis=0) * pixel_area / np.pi))
        depths += list((areas > 0).sum(axis=0) * stacks.voxel_um[0])
        widest += list(areas.argmax(axis=0) / max(len(labels) - 1, 1))
        snrs.append(voxel_snr(raw, labels))
        bleaching.append(bleaching_of(raw, labels))
        s, a, n = axial_profile(raw, labels, PROFILE_STEPS)
        if n:
            signal, area, sides = signal + s * n, area + a * n, sides + n
    stats = {"radius_um": np.median(radii) if radii else np.nan,
             "depth_um": np.mean(depths) if depths else np.nan,
             "widest_z": np.mean(widest) if widest else np.nan,
             "nuclei": float(np.mean(counts)),
             "snr": float(np.mean(snrs)) if snrs else np.nan,
             "bleaching": float(np.nanmean(bleaching)) if np.isfinite(bleaching).any() else np.nan}
    for k in range(1, PROFILE_STEPS + 1):
        stats[f"signal_{k}"] = signal[k] / sides if sides else np.nan
        stats[f"area_{k}"] = area[k] / sides if sides else np.nan
    return {k: float(v) for k, v in stats.items()}


def render(preset: SyntheticPreset, seed: int = 0) -> AnnotatedStacks:
    """Every frame of the dataset the preset writes with ``seed``
    (:func:`~emr_d2.data.synthetic.write_synthetic_dataset`: the same sequences, the same random
    numbers). All of them: nuclei divide and move along a sequence, so its first frames alone
    measure larger, fewer nuclei than the dataset holds, and a frame cannot be skipped (its
    rendering draws from the sequence's random numbers)."""
    pairs = [pair for seq, length in preset.frames.items()
             for pair in rendered_frames(sequence_simulator(preset, seed, seq), length)]
    return AnnotatedStacks(pairs, preset.voxel_um)


def misfit(measured: dict[str, float], target: dict[str, float]) -> dict[str, float]:
    """Per statistic, |measured - target| in units of its :data:`TOLERANCE` (relative for
    :data:`RELATIVE`); a statistic the target lacks (NaN) is left out, one the generated data
    lacks counts 10."""
    out = {}
    for key, tolerance in TOLERANCE.items():
        if not np.isfinite(target[key]):
            continue
        if not np.isfinite(measured[key]):
            out[key] = 10.0
            continue
        error = abs(measured[key] - target[key])
        out[key] = error / (tolerance * abs(target[key]) if key in RELATIVE else tolerance)
    return out


def with_parameters(preset: SyntheticPreset, values: dict[str, float]) -> SyntheticPreset:
    """The preset with the :data:`SEARCH` fields set (clipped to their bounds)."""
    values = {k: float(np.clip(v, *SEARCH[k])) for k, v in values.items()}
    psf = (values.pop("psf_z"), *preset.psf_sigma_px[1:])
    centre = values.pop("centre_z")
    return replace(preset, psf_sigma_px=psf, centre_z=(centre - 0.05, centre + 0.05), **values)


def fit_preset(stacks: AnnotatedStacks, scale: float = 1.0, max_evaluations: int = 200,
               seed: int = 0, frames: int | None = None) -> tuple[SyntheticPreset, dict]:
    """Search the preset whose dataset (as written with ``seed``, :func:`render`) measures like
    ``stacks``.

    Args:
        stacks: the real annotated stacks (:func:`read_annotated`).
        scale: in-plane resolution of the generated stacks relative to the real ones (0.5: half).
        max_evaluations: candidate presets tried by Nelder-Mead.
        seed: the random numbers of the dataset.
        frames: frames per sequence of the dataset (default: the start preset's, 24 and 10);
            fewer make each candidate faster to measure.

    Returns:
        (the fitted preset, the statistics of ``stacks``)
    """
    target = measure(stacks)
    depth, height, width = stacks.shape
    voxel = stacks.voxel_um
    start = PRESETS["aniso"]
    preset = replace(
        start, field_um=(depth * voxel[0], height * voxel[1], width * voxel[2]), scale=scale,
        z_scale=1.0, native_voxel_um=voxel,
        radius_um=target["radius_um"], num_nuclei=max(int(round(target["nuclei"])), 1),
        # the axial PSF in native slices: the start preset's 0.7 um
        psf_sigma_px=(0.7 / voxel[0], *start.psf_sigma_px[1:]),
        frames={seq: frames or count for seq, count in start.frames.items()})
    for _ in range(2):  # nuclei per stack follow the count, SNR the root of the photons
        generated = measure(render(preset, seed))
        nuclei = max(int(round(preset.num_nuclei * target["nuclei"]
                               / max(generated["nuclei"], 0.5))), 1)
        photons = preset.photons * (target["snr"] / generated["snr"]) ** 2 \
            if np.isfinite(target["snr"]) and generated["snr"] > 0 else preset.photons
        preset = replace(preset, num_nuclei=nuclei, photons=float(photons))
    names = list(SEARCH)
    low, high = np.array([SEARCH[n][0] for n in names]), np.array([SEARCH[n][1] for n in names])
    current = {n: getattr(preset, n) for n in names if n not in ("psf_z", "centre_z")} | {
        "psf_z": preset.psf_sigma_px[0], "centre_z": target["widest_z"]}
    x0 = np.clip((np.array([current[n] for n in names]) - low) / (high - low), 0, 1)
    # the first simplex steps 0.15 of each bound's range (inwards at a bound)
    steps = np.where(x0 > 0.85, -0.15, 0.15)
    simplex = np.vstack([x0, x0 + np.diag(steps)])

    def objective(x):
        candidate = with_parameters(preset, dict(zip(names, low + np.clip(x, 0, 1) * (high - low))))
        progress.update()
        return float(sum(v ** 2 for v in misfit(measure(render(candidate, seed)),
                                                target).values()))

    with tqdm(total=max_evaluations, desc="fitting the generator", unit="candidate") as progress:
        result = optimize.minimize(objective, x0, method="Nelder-Mead",
                                   options={"maxfev": max_evaluations, "xatol": 1e-3,
                                            "fatol": 1e-3, "initial_simplex": simplex})
    fitted = with_parameters(preset, dict(zip(names, low + np.clip(result.x, 0, 1) * (high - low))))
    logger.info(f"fitted in {result.nfev} evaluations: misfit {result.fun:.2f}")
    return fitted, target


def statistics_table(target: dict[str, float], generated: dict[str, float]) -> str:
    """A markdown table: each statistic measured on the real data and on the generated data,
    the tolerance and whether the generated data is within it."""
    within = misfit(generated, target)
    lines = ["| statistic | real | generated | tolerance | within |", "|---|---|---|---|---|"]
    for key, tolerance in TOLERANCE.items():
        tol = f"{tolerance:.0%}" if key in RELATIVE else f"{tolerance:g}"
        ok = "–" if key not in within else ("yes" if within[key] <= 1 else "no")
        lines.append(f"| {key} | {target[key]:.3f} | {generated[key]:.3f} | {tol} | {ok} |")
    return "\n".join(lines)
