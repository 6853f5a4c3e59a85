"""The classical peer: smoothing, a global threshold and a distance-transform watershed
(scikit-image and scipy), its parameters chosen on the validation frames by SEG.

    python benchmarks/peers/peer_classical.py TASK.json

Nothing is trained: ``train_time_s`` is the time the parameter search takes. Distances are in
micrometres (the voxel size's), so one setting means the same on isotropic and anisotropic
stacks. Deterministic: one seed is enough.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.filters import threshold_li, threshold_otsu, threshold_triangle
from skimage.measure import label
from skimage.morphology import remove_small_objects
from skimage.segmentation import watershed

from peer_common import choose_on_val, load_task, predict_test, read_pairs, settings_label, write_record

THRESHOLDS = {"otsu": threshold_otsu, "li": threshold_li, "triangle": threshold_triangle}
# What an analyst would try first: Otsu on a lightly smoothed stack, seeds 2.5 um apart.
DEFAULT = {"threshold": "otsu", "smooth_um": 0.4, "seed_distance_um": 2.5}
GRID = {"threshold": list(THRESHOLDS), "smooth_um": [0.4, 0.8],
        "seed_distance_um": [1.5, 2.5, 3.5, 5.0]}


def segment(volume: np.ndarray, voxel_um: tuple[float, float, float], threshold: str, smooth_um: float,
            seed_distance_um: float, min_volume_um3: float) -> np.ndarray:
    """Label one normalised (Z, Y, X) volume.

    Args:
        voxel_um: (z, y, x) voxel size in micrometres.
        threshold: a key of :data:`THRESHOLDS`, applied to the smoothed volume.
        smooth_um: Gaussian sigma in micrometres.
        seed_distance_um: watershed seeds are maxima of the distance transform at least this far
            apart (an ellipsoidal neighbourhood in voxels).
        min_volume_um3: objects smaller than this are removed.
    Returns:
        (Z, Y, X) int32 labels.
    """
    voxel = np.asarray(voxel_um, dtype=float)
    smoothed = ndimage.gaussian_filter(volume, sigma=smooth_um / voxel)
    mask = ndimage.binary_fill_holes(smoothed > THRESHOLDS[threshold](smoothed))
    mask = remove_small_objects(mask, max(int(min_volume_um3 / voxel.prod()), 1))
    distance = ndimage.distance_transform_edt(mask, sampling=voxel)
    radius = np.maximum(np.round(seed_distance_um / voxel).astype(int), 1)
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    footprint = sum((g / r) ** 2 for g, r in zip(grids, radius)) <= 1
    peaks = peak_local_max(distance, footprint=footprint, labels=label(mask), exclude_border=False)
    markers = np.zeros(volume.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def main(task_path: str) -> None:
    task = load_task(task_path)
    voxel = tuple(task["voxel_size"])
    start = time.perf_counter()
    val_raw, val_gt = read_pairs(task["val"])
    sizes = np.concatenate([np.bincount(g.ravel())[1:] for g in val_gt])
    min_volume = 0.05 * float(np.median(sizes[sizes > 0])) * float(np.prod(voxel))

    def segment_val(**settings):
        return [segment(v, voxel, min_volume_um3=min_volume, **settings) for v in val_raw]

    chosen, val_seg = choose_on_val(GRID, segment_val, val_gt)
    train_time = time.perf_counter() - start
    inference = predict_test(task, {"default": DEFAULT, "calibrated": chosen},
                             lambda v, s: segment(v, voxel, min_volume_um3=min_volume, **s))
    write_record(task, train_time, inference, settings_label(DEFAULT), settings_label(chosen),
                 val_SEG=val_seg, min_volume_um3=min_volume)


if __name__ == "__main__":
    main(sys.argv[1])
