"""What a training run checks and records in its OUTPUT_DIR before it writes anything: that it
does not silently replace an earlier run, the pixel size its model will work at, and plain-text
log files."""
from __future__ import annotations

import glob
import logging
import os
import re
import shutil

from detectron2.data import MetadataCatalog

# Files and folders of a finished or interrupted training run (train_net.py, Trainer's hooks).
RUN_MARKERS = ("last_checkpoint", "model_final.pth", "metrics.json")
RUN_OUTPUTS = ("model_*.pth", "last_checkpoint", "metrics.json", "events.out.tfevents.*",
               "linking.json",
               "config.yaml", "log.txt", "inference")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check_training_folder(output_dir: str, resume: bool, overwrite: bool) -> None:
    """Refuse (one line) to train into a folder that holds an earlier run, unless ``resume``
    continues it or ``overwrite`` starts afresh (:func:`clear_training_folder`)."""
    if resume or overwrite or not os.path.isdir(output_dir):
        return
    found = [name for name in RUN_MARKERS if os.path.exists(os.path.join(output_dir, name))]
    if found:
        raise FileExistsError(
            f"{output_dir}: holds a training run ({', '.join(found)}); pass --resume to continue "
            "it, --overwrite to replace it, or choose another OUTPUT_DIR")


def clear_training_folder(output_dir: str) -> None:
    """Delete an earlier run's files from output_dir (other files stay)."""
    for pattern in RUN_OUTPUTS:
        for path in glob.glob(os.path.join(output_dir, pattern)):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def record_training_pixel_size(cfg, logger: logging.Logger) -> None:
    """Set INPUT.PIXEL_SIZE_UM (if 0) to the in-plane pixel size of the training datasets, so that
    the saved config.yaml says what pixel size the model was trained at and prediction rescales
    stacks of another voxel size to it. Training is unchanged (its slices are at that size).
    Where the datasets' pixel sizes are unknown or differ, the model cannot know it: one warning."""
    if cfg.INPUT.PIXEL_SIZE_UM:
        return
    sizes = {name: MetadataCatalog.get(name).get("voxel_size") for name in cfg.DATASETS.TRAIN}
    pixels = {float(size[2]) for size in sizes.values() if size}
    if None in sizes.values() or len(pixels) != 1:
        logger.warning(
            "The model will not know the pixel size it is trained at (training datasets' voxel "
            "sizes: "
            + ", ".join(f"{n} {s or 'unknown'}" for n, s in sizes.items())
            + "): set INPUT.PIXEL_SIZE_UM so that prediction can rescale other data")
        return
    cfg.INPUT.PIXEL_SIZE_UM = pixels.pop()
    logger.info(
        f"Trained at the training data's pixel size: INPUT.PIXEL_SIZE_UM {cfg.INPUT.PIXEL_SIZE_UM}")


class _StripColour(logging.Filter):
    """Remove ANSI colour codes (detectron2 highlights the config it logs) from log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), ()
        return True


def plain_text_logs(*names: str) -> None:
    """Keep colour codes out of these loggers' records (and so out of OUTPUT_DIR/log.txt)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _StripColour) for f in logger.filters):
            logger.addFilter(_StripColour())
