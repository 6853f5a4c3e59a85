"""The StarDist-3D peer (stardist 0.9, TensorFlow on the CPU), trained from scratch.

    python benchmarks/peers/peer_stardist3d.py TASK.json

Set up as StarDist's 3D example does: 96 rays on a golden spiral, anisotropy from the voxel
size (objects are taken to be round in micrometres), and a prediction grid and U-Net pooling of
1 along an axis whose voxels are more than 1.5x coarser, 2 (4 for nuclei over 64 px) otherwise
(:func:`geometry`). After training, the
probability and NMS thresholds are chosen on the validation frames by SEG over
:data:`THRESHOLDS` (StarDist's own ``optimize_thresholds`` predicts with a border of 2 grid
cells that it cannot be told to drop, see :func:`geometry`); the defaults (prob 0.5, nms 0.4)
are the untuned row.

Schedules: ``equal`` trains until the task's time budget is spent; ``own`` trains StarDist's
default 400 epochs x 100 steps, stopped at the budget (the cap) if it does not fit.
"""
from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

from peer_common import (choose_on_val, load_task, predict_test, read_pairs, settings_label,
                         write_record)

PATCH = (48, 128, 128)  # largest training patch (Z, Y, X), cut to the data and the net's divisors
BATCH_SIZE = 2
EQUAL_STEPS_PER_EPOCH = 50  # epochs only set when the learning rate may drop; the budget stops it
# The thresholds tried on the validation frames (StarDist's optimize_thresholds cannot be told the
# border, and with its border of 2 finds no nucleus in a stack of 5 slices). Probabilities down to
# 0.2: a net stopped early is unsure (on aniso at equal time nothing passes 0.5); at 0.1 the 3D NMS
# of the bench preset's validation volumes ran for over 13 minutes without finishing.
THRESHOLDS = {"prob": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "nms": [0.3, 0.5]}


def voxel_anisotropy(voxel_um) -> tuple[float, ...]:
    """Each axis's voxel size over the finest, for a (z, y, x) voxel size in micrometres."""
    return tuple(float(v) / min(voxel_um) for v in voxel_um)


def geometry(
    voxel_um, diameter_px: float
) -> tuple[tuple[float, ...], tuple[int, ...], tuple[tuple[int, int], ...]]:
    """(anisotropy, grid, border) of StarDist for a (z, y, x) voxel size in micrometres and the
    typical nucleus diameter in pixels. An axis more than 1.5x coarser than the finest gets grid
    1 and no border exclusion (StarDist drops candidates within 2 grid cells of the volume's
    edge, which in a stack of a few slices is every nucleus); the others grid 2, or 4 for nuclei
    over 64 px across (each stays about 16-32 grid cells across, and 3D NMS gets 4x fewer
    candidates), and StarDist's default border of 2."""
    anisotropy = voxel_anisotropy(voxel_um)
    grid = tuple(1 if a > 1.5 else 4 if diameter_px > 64 else 2 for a in anisotropy)
    border = tuple((0, 0) if a > 1.5 else (2, 2) for a in anisotropy)
    return anisotropy, grid, border


def typical_diameter_px(labels: list[np.ndarray]) -> float:
    """The median over objects of the diameter (px) of a disc as large as the object's largest
    (Y, X) cross-section."""
    diameters = []
    for label in labels:
        areas = np.stack([np.bincount(plane.ravel(), minlength=label.max() + 1)
                          for plane in label])[:, 1:]
        largest = areas.max(axis=0)
        diameters += list(2 * np.sqrt(largest[largest > 0] / np.pi))
    return float(np.median(diameters))


def patch_size(shapes, divisors, patch_px: int | None) -> tuple[int, ...]:
    """The largest patch within :data:`PATCH` (``patch_px`` in Y and X if given) and every
    training volume, divisible by the net's divisors."""
    largest = PATCH if not patch_px else (PATCH[0], patch_px, patch_px)
    smallest = np.min(np.array(shapes), axis=0)
    return tuple(int(min(p, s) // d * d) for p, s, d in zip(largest, smallest, divisors))


def augment(x: np.ndarray, y: np.ndarray):
    """Random flips and 90-degree rotations in YX, and an intensity scale, of a training patch."""
    k = np.random.randint(4)
    x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
    for axis in (1, 2):
        if np.random.rand() < 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    return x * np.random.uniform(0.6, 2.0) + np.random.uniform(-0.2, 0.2), y


def main(task_path: str) -> None:
    task = load_task(task_path)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from csbdeep.utils.tf import keras_import
    from stardist import Rays_GoldenSpiral, fill_label_holes
    from stardist.models import Config3D, StarDist3D

    Callback = keras_import("callbacks", "Callback")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    tf.config.threading.set_intra_op_parallelism_threads(task["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(task["seed"])
    np.random.seed(task["seed"])
    start = time.perf_counter()

    class StopAtBudget(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if time.perf_counter() - start > task["time_budget_s"]:
                self.model.stop_training = True

    train_raw, train_gt = read_pairs(task["train"])
    val_raw, val_gt = read_pairs(task["val"])
    train_gt = [fill_label_holes(y) for y in train_gt]
    val_gt = [fill_label_holes(y) for y in val_gt]
    anisotropy, grid, border = geometry(task["voxel_size"], typical_diameter_px(train_gt))
    sparse = {"b": border}
    divisors = tuple(g * g**2 for g in grid)  # grid x pooling^depth, with pooling = grid, depth 2
    config = Config3D(rays=Rays_GoldenSpiral(96, anisotropy=anisotropy), grid=grid,
                      anisotropy=anisotropy,
                      n_channel_in=1, unet_pool=grid, use_gpu=False,
                      train_patch_size=patch_size([v.shape for v in train_raw + val_raw], divisors,
                                                   task.get("patch_px")),
                      train_batch_size=BATCH_SIZE)
    logging.info(f"StarDist-3D: anisotropy {anisotropy}, grid {grid}, border {border}, "
                 f"patch {config.train_patch_size}")
    model = StarDist3D(config, name="stardist", basedir=task["out"])
    model.prepare_for_training()
    model.callbacks.append(StopAtBudget())
    if task["schedule"] == "own":
        epochs, steps = config.train_epochs, config.train_steps_per_epoch
    else:
        epochs, steps = 10**6, EQUAL_STEPS_PER_EPOCH
    history = model.train(train_raw, train_gt, validation_data=(val_raw, val_gt), augmenter=augment,
                          epochs=epochs, steps_per_epoch=steps, seed=task["seed"])
    default = {"prob": float(model.thresholds.prob), "nms": float(model.thresholds.nms)}

    def segment(volume, settings):
        return model.predict_instances(volume, prob_thresh=settings["prob"],
                                       nms_thresh=settings["nms"],
                                       show_tile_progress=False, verbose=False,
                                       predict_kwargs=sparse)[0].astype(np.int32)

    chosen, val_seg = choose_on_val(THRESHOLDS, lambda **t: [segment(v, t) for v in val_raw],
                                    val_gt, logging.info)
    train_time = time.perf_counter() - start

    inference = predict_test(task, {"default": default, "calibrated": chosen}, segment)
    write_record(task, train_time, inference, settings_label(default), settings_label(chosen),
                 val_SEG=val_seg, epochs=len(history.history["loss"]), steps_per_epoch=steps,
                 loss_first_epoch=history.history["loss"][0],
                 loss_last_epoch=history.history["loss"][-1])


if __name__ == "__main__":
    main(sys.argv[1])
