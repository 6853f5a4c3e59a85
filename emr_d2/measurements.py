"""Measuring segmented nuclei: one row per nucleus of a label volume, in micrometres.

scikit-image's ``regionprops`` with the voxel size as its spacing does the measuring; this
module names the columns and writes the CSV. Torch-free.
"""
from __future__ import annotations

import csv
import os

import numpy as np
from skimage.measure import regionprops

from .atomic import atomic_write

COLUMNS = ("label", "centroid_z_um", "centroid_y_um", "centroid_x_um",
           "bbox_z0_um", "bbox_y0_um", "bbox_x0_um", "bbox_z1_um", "bbox_y1_um", "bbox_x1_um",
           "volume_um3", "voxels", "z_extent_um", "z_slices", "mean_intensity", "total_intensity")


def measure_nuclei(labels: np.ndarray, raw: np.ndarray, voxel_um: tuple) -> list[dict]:
    """One row per object of a label volume.

    Args:
        labels: (Z, Y, X) integer labels, 0 = background.
        raw: (Z, Y, X) raw intensities of the same shape.
        voxel_um: (Z, Y, X) voxel size in micrometres.

    Returns:
        dicts with :data:`COLUMNS`, by label: centroid and bounding box (first corner inclusive,
        second exclusive) in micrometres from the volume's corner, volume in cubic micrometres,
        z extent (slices spanned times the z voxel size), mean and total raw intensity.
    """
    if labels.shape != raw.shape:
        raise ValueError(f"labels of shape {labels.shape} and raw of shape {raw.shape} differ")
    spacing = np.asarray(voxel_um, dtype=float)
    rows = []
    for region in regionprops(np.asarray(labels), intensity_image=np.asarray(raw, np.float64),
                              spacing=tuple(spacing)):
        box = np.asarray(region.bbox, dtype=float).reshape(2, 3) * spacing
        slices = region.bbox[3] - region.bbox[0]
        rows.append({
            "label": int(region.label),
            **{f"centroid_{a}_um": float(c) for a, c in zip("zyx", region.centroid)},
            **{f"bbox_{a}0_um": float(c) for a, c in zip("zyx", box[0])},
            **{f"bbox_{a}1_um": float(c) for a, c in zip("zyx", box[1])},
            "volume_um3": float(region.area),  # regionprops scales the voxel count by the spacing
            "voxels": int(region.num_pixels),
            "z_extent_um": float(slices * spacing[0]),
            "z_slices": int(slices),
            "mean_intensity": float(region.intensity_mean),
            "total_intensity": float(region.intensity_mean * region.num_pixels),
        })
    return rows


def measurements_path(label_file: str) -> str:
    """The CSV written beside a label TIFF: ``maskTTT.tif`` -> ``maskTTT.csv``."""
    return os.path.splitext(label_file)[0] + ".csv"


def write_measurements(path: str, rows: list[dict]) -> None:
    """Write rows of :func:`measure_nuclei` as a CSV with a header line (atomically)."""
    def write(f):
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})

    atomic_write(path, write, "w")
