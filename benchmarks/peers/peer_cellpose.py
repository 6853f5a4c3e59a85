"""The Cellpose peer (3.x, CPnet trained from scratch on the training volumes' z slices).

    python benchmarks/peers/peer_cellpose.py TASK.json

Cellpose 3 builds its network without weights (``pretrained_model=False``), so it trains here
with nothing downloaded; Cellpose 4 starts from SAM weights fetched at run time and cannot.
A volume is segmented slice by slice and the slices stitched by mask overlap
(``stitch_threshold``), or in Cellpose's 3D mode (the 2D network on YX, ZY and ZX planes, z
stretched by the anisotropy); the mode and the flow-error, cell-probability and stitch thresholds
are chosen on the validation frames by SEG, at both schedules (the mode matters most where z is
finely sampled: on the bench preset, the same network scored val SEG 0.74 stitched and 0.91 in 3D).
That choice is not part of the training budget; on the CPU the 3D mode's part of it (the network
over every ZY and ZX plane of the validation volumes, per setting) can take longer than the
training itself.

Schedules: ``equal`` trains for the task's time budget; ``own`` trains Cellpose's recommended
500 epochs (its command line's default) at its default learning rate, or as many as fit the
budget (the cap). One epoch (learning rate 0, Cellpose's warm-up starts there) measures the
time an epoch takes, and counts towards the budget.
"""
from __future__ import annotations

import logging
import sys
import time

import numpy as np
import torch
from cellpose import models, train

from peer_common import (choose_on_val, load_task, predict_test, read_pairs, settings_label,
                         write_record)

OWN_EPOCHS = 500
CELLPOSE_PATCH = 224  # train_seg's default patch (bsize)
# Cellpose's own defaults: 2D slices stitched at overlap 0.5 (0 would leave the slices unlinked).
DEFAULT = {"mode": "stitch", "flow": 0.4, "cellprob": 0.0, "stitch": 0.5}
# flow 0 turns off Cellpose's flow-error check, which drops every mask of a network whose flows
# are still rough (measured on CHO after 11 epochs: 0 masks at 0.4, val SEG 0.20 without it).
GRID_STITCH = {"mode": ["stitch"], "flow": [0.4, 0.0], "cellprob": [-1.0, 0.0, 1.0],
               "stitch": [0.1, 0.3, 0.5]}
GRID_3D = {"mode": ["3d"], "flow": [0.4], "cellprob": [-1.0, 0.0, 1.0], "stitch": [0.0]}


def slices_with_objects(volumes: list[np.ndarray], labels: list[np.ndarray]):
    """The (Y, X) slices of the volumes that hold at least one object, and their labels."""
    images, masks = [], []
    for volume, label in zip(volumes, labels):
        for z in range(volume.shape[0]):
            if label[z].any():
                images.append(volume[z])
                masks.append(label[z])
    return images, masks


def train_for(model: models.CellposeModel, images, masks, out: str, budget_s: float,
              max_epochs: int | None,
              seed: int, patch_px: int) -> tuple[int, np.ndarray]:
    """Train within ``budget_s`` seconds (and at most ``max_epochs``, at least 2 after the timing
    epoch: the first is at learning rate 0) on ``patch_px``-square patches; returns the epochs
    trained and the mean training loss of each epoch after the timing one."""
    torch.manual_seed(seed)
    common = dict(train_data=images, train_labels=masks, channels=[0, 0], normalize=False,
                  save_path=out,
                  min_train_masks=1, model_name="cellpose_peer", save_every=10**6, bsize=patch_px)
    start = time.perf_counter()
    train.train_seg(model.net, n_epochs=1, **common)
    epoch_s = time.perf_counter() - start
    epochs = max(int((budget_s - epoch_s) // epoch_s), 2)
    if max_epochs is not None:
        epochs = min(epochs, max_epochs)
    logging.info(f"one epoch {epoch_s:.1f} s: training {epochs} epochs")
    losses = train.train_seg(model.net, n_epochs=epochs, **common)[1]
    return epochs + 1, losses


def segment(model: models.CellposeModel, volume: np.ndarray, anisotropy: float, patch_px: int,
            mode: str,
            flow: float, cellprob: float, stitch: float) -> np.ndarray:
    """Label one normalised (Z, Y, X) volume, in tiles of ``patch_px``; returns (Z, Y, X) int32
    labels."""
    masks = model.eval(volume, channels=[0, 0], z_axis=0, normalize=False, bsize=patch_px,
                       diameter=float(model.net.diam_labels.item()), flow_threshold=flow,
                       cellprob_threshold=cellprob, do_3D=mode == "3d",
                       anisotropy=anisotropy if mode == "3d" else None,
                       stitch_threshold=stitch if mode == "stitch" else 0.0)[0]
    return np.asarray(masks, dtype=np.int32).reshape(volume.shape)


def main(task_path: str) -> None:
    task = load_task(task_path)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(task["threads"])
    np.random.seed(task["seed"])
    z, y, _ = task["voxel_size"]
    start = time.perf_counter()
    train_raw, train_gt = read_pairs(task["train"])
    images, masks = slices_with_objects(train_raw, train_gt)
    model = models.CellposeModel(gpu=False, pretrained_model=False)
    model.net_ortho = None  # Cellpose 3.1 sets it only when it loads weights, and eval reads it
    patch = task.get("patch_px") or CELLPOSE_PATCH
    epochs, losses = train_for(model, images, masks, task["out"], task["time_budget_s"],
                               OWN_EPOCHS if task["schedule"] == "own" else None, task["seed"],
                               patch)
    val_raw, val_gt = read_pairs(task["val"])

    def segment_val(**settings):
        return [segment(model, v, z / y, patch, **settings) for v in val_raw]

    chosen_stitch, val_seg_stitch = choose_on_val(GRID_STITCH, segment_val, val_gt, logging.info)
    chosen_3d, val_seg_3d = choose_on_val(GRID_3D, segment_val, val_gt, logging.info)
    chosen, val_seg = ((chosen_3d, val_seg_3d) if val_seg_3d > val_seg_stitch
                       else (chosen_stitch, val_seg_stitch))
    train_time = time.perf_counter() - start
    inference = predict_test(task, {"default": DEFAULT, "calibrated": chosen},
                             lambda v, s: segment(model, v, z / y, patch, **s))
    write_record(task, train_time, inference, settings_label(DEFAULT), settings_label(chosen),
                 val_SEG=val_seg, val_SEG_stitch=val_seg_stitch, val_SEG_3d=val_seg_3d,
                 epochs=epochs, training_slices=len(images),
                 loss_first_epoch=float(losses[0]), loss_last_epoch=float(losses[-1]))


if __name__ == "__main__":
    main(sys.argv[1])
