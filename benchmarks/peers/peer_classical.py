"""The classical peer: smoothing, a global threshold and a distance-transform watershed
(scikit-image and scipy), its parameters chosen on the validation frames by SEG.

    python benchmarks/peers/peer_classical.py TASK.json

Nothing is trained: ``train_time_s`` is the time the parameter search takes. Distances are in
micrometres (the voxel size's), so one setting means the same on isotropic and anisotropic
stacks; the typical nucleus volume is the median of the validation reference objects.
Deterministic: one seed is enough.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_li, threshold_otsu, threshold_triangle
from skimage.morphology import h_maxima, remove_small_objects
from skimage.segmentation import watershed

from peer_common import (choose_on_val, load_task, predict_test, read_pairs, settings_label,
                         write_record)

THRESHOLDS = {"otsu": threshold_otsu, "li": threshold_li, "triangle": threshold_triangle}
# What an analyst would try first: Otsu on a lightly smoothed stack, seeds at maxima 1 um high.
DEFAULT = {"threshold": "otsu", "smooth_um": 0.4, "h_um": 1.0, "min_fraction": 0.05}
GRID = {"threshold": list(THRESHOLDS), "smooth_um": [0.2, 0.4, 0.8], "h_um": [0.5, 1.0, 2.0, 4.0],
        "min_fraction": [0.05, 0.2]}


def segment(volume: np.ndarray, voxel_um: tuple[float, float, float], threshold: str,
            smooth_um: float,
            h_um: float, min_fraction: float, typical_volume_um3: float) -> np.ndarray:
    """Label one normalised (Z, Y, X) volume.

    Args:
        voxel_um: (z, y, x) voxel size in micrometres.
        threshold: a key of :data:`THRESHOLDS`, applied to the smoothed volume.
        smooth_um: Gaussian sigma in micrometres.
        h_um: watershed seeds are the maxima of the distance to the background (um) that rise at
            least this much above their surroundings (h-maxima: a plateau is one seed, so flat
            nuclei that touch the volume's top and bottom are not cut into pieces).
        min_fraction, typical_volume_um3: objects smaller than this fraction of the typical
            nucleus's volume (um^3) are removed.
    Returns:
        (Z, Y, X) int32 labels.
    """
    voxel = np.asarray(voxel_um, dtype=float)
    smoothed = ndimage.gaussian_filter(volume, sigma=smooth_um / voxel)
    mask = ndimage.binary_fill_holes(smoothed > THRESHOLDS[threshold](smoothed))
    mask = remove_small_objects(mask,
                                max_size=max(int(min_fraction * typical_volume_um3 / voxel.prod()),
                                             1))
    distance = ndimage.distance_transform_edt(mask, sampling=voxel)
    markers, _ = ndimage.label(h_maxima(distance, h_um))
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def main(task_path: str) -> None:
    task = load_task(task_path)
    voxel = tuple(task["voxel_size"])
    start = time.perf_counter()
    val_raw, val_gt = read_pairs(task["val"])
    sizes = np.concatenate([np.bincount(g.ravel())[1:] for g in val_gt])
    typical = float(np.median(sizes[sizes > 0])) * float(np.prod(voxel))

    def segment_val(**settings):
        return [segment(v, voxel, typical_volume_um3=typical, **settings) for v in val_raw]

    chosen, val_seg = choose_on_val(GRID, segment_val, val_gt)
    train_time = time.perf_counter() - start
    inference = predict_test(task, {"default": DEFAULT, "calibrated": chosen},
                             lambda v, s: segment(v, voxel, typical_volume_um3=typical, **s))
    write_record(task, train_time, inference, settings_label(DEFAULT), settings_label(chosen),
                 val_SEG=val_seg, typical_volume_um3=typical)


if __name__ == "__main__":
    main(sys.argv[1])
