"""Training hooks: fusion-weight logging, validation loss, early stopping, linking calibration."""
from __future__ import annotations

import logging
import os

import torch
from torch.nn.parallel import DistributedDataParallel
from detectron2.engine import HookBase
from detectron2.evaluation.evaluator import inference_context
from detectron2.utils import comm

from ..atomic import atomic_write
from ..calibration import calibrate_linking, set_linking
from ..modeling.fusion import fusion_weights, mean_slice_weights

logger = logging.getLogger(__name__)


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


class FusionWeightLogger(HookBase):
    """Every ``period`` iterations, writes the mean weight of every slice offset dz of every
    fusion module to the EventStorage as ``fusion/<module>/dz<+k>`` (TensorBoard, metrics.json)."""

    def __init__(self, period: int):
        self.period = period

    def after_step(self):
        if self.period <= 0 or (self.trainer.iter + 1) % self.period:
            return
        storage = self.trainer.storage
        for name, weights in fusion_weights(unwrap_ddp(self.trainer.model)).items():
            values = mean_slice_weights(weights)
            centre = len(values) // 2
            for i, value in enumerate(values.tolist()):
                storage.put_scalar(f"fusion/{name}/dz{i - centre:+d}", value, smoothing_hint=False)


class ValidationLoss(HookBase):
    """Every ``period`` iterations, the mean total loss on ``num_batches`` batches of a loader
    of the validation split, written as ``validation_loss``."""

    def __init__(self, period: int, data_loader, num_batches: int):
        self.period = period
        self.data_loader = data_loader
        self.num_batches = num_batches
        self._iterator = None

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if self.period <= 0 or (next_iter % self.period and next_iter != self.trainer.max_iter):
            return
        if self._iterator is None:
            self._iterator = iter(self.data_loader)
        total = 0.0
        with torch.no_grad():
            for _ in range(self.num_batches):
                losses = self.trainer.model(next(self._iterator))
                total += sum(float(v) for v in losses.values())
        loss = comm.all_gather(total / self.num_batches)
        self.trainer.storage.put_scalar("validation_loss", sum(loss) / len(loss),
                                        smoothing_hint=False)


class EarlyStop(Exception):
    """Raised by :class:`EarlyStopping` to end training; Trainer.train catches it."""


class EarlyStopping(HookBase):
    """Stops training when ``metric`` has not improved for ``patience`` evaluations.

    Must come after the EvalHook, which writes the metric to the EventStorage.
    """

    def __init__(self, metric: str, mode: str, patience: int):
        self.metric = metric
        self.sign = 1.0 if mode == "max" else -1.0
        self.patience = patience
        self.best = None
        self.last_seen_iter = -1
        self.stale = 0

    def after_step(self):
        history = self.trainer.storage.latest()
        if self.metric not in history:
            return
        value, iteration = history[self.metric]
        if iteration == self.last_seen_iter:
            return
        self.last_seen_iter = iteration
        if self.best is None or self.sign * value > self.sign * self.best:
            self.best, self.stale = value, 0
            return
        self.stale += 1
        if self.stale >= self.patience:
            logger.info(f"Early stopping at iteration {iteration}: {self.metric} has not improved "
                        f"for {self.patience} evaluations (best {self.best:.4f})")
            raise EarlyStop()


class LinkingCalibration(HookBase):
    """Before every evaluation (every ``eval_period`` iterations and after training), chooses the
    linking on DATASETS.VAL and sets it in the trainer's config, so that the evaluation that
    follows uses it; writes OUTPUT_DIR/linking.json and the config with the choice. Must come
    before the EvalHook."""

    def __init__(self, eval_period: int):
        self.eval_period = eval_period

    def _calibrate(self):
        cfg = self.trainer.cfg
        model = unwrap_ddp(self.trainer.model)
        with inference_context(model), torch.no_grad():
            result = calibrate_linking(cfg, model, cfg.OUTPUT_DIR)
        cfg.defrost()
        set_linking(cfg, result["choice"])
        cfg.freeze()
        self.trainer.storage.put_scalar("linking/val_SEG", result["SEG"], smoothing_hint=False)
        if comm.is_main_process():
            atomic_write(os.path.join(cfg.OUTPUT_DIR, "config.yaml"), lambda f: f.write(cfg.dump()),
                         "w")

    def after_step(self):
        next_iter = self.trainer.iter + 1
        if (
            self.eval_period > 0
            and next_iter % self.eval_period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._calibrate()

    def after_train(self):
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._calibrate()
