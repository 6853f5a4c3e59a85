"""Trainer(DefaultTrainer) for slice-stack models on CTC datasets."""
from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.data import (MetadataCatalog, build_detection_test_loader,
                             build_detection_train_loader,
                             get_detection_dataset_dicts)
from detectron2.engine import DefaultTrainer, SimpleTrainer, TrainerBase, create_ddp_model, hooks
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators, print_csv_format
from detectron2.solver import get_default_optimizer_params
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table, setup_logger

from ..data.augment import build_slice_augmentations
from ..data.mapper import SliceStackMapper
from ..atomic import write_json
from ..evaluation.ctc_evaluator import AnnotatedSlicesOnly, CTCEvaluator
from ..modeling.checkpoint import SliceStackCheckpointer
from ..modeling.fusion import SliceFusion
from ..modeling.roi_heads import predicts_neighbor_masks
from .amp import MixedPrecisionTrainer, resolve_precision
from .hooks import EarlyStop, EarlyStopping, FusionWeightLogger, LinkingCalibration, ValidationLoss
from .inference import inference_on_volumes

logger = logging.getLogger(__name__)


class Trainer(DefaultTrainer):
    """DefaultTrainer with SliceStackMapper loaders, CTC + COCO evaluation on whole volumes,
    fusion-weight logging, best checkpoint, validation loss, early stopping and linking
    calibration on the validation data."""

    def __init__(self, cfg):
        # DefaultTrainer.__init__, with DDP that also works on the CPU (gloo: no device_ids) and
        # the SliceStackCheckpointer (stem adaptation, atomic writes).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        on_gpu = cfg.MODEL.DEVICE.startswith("cuda")
        model = create_ddp_model(model, broadcast_buffers=False,
                                 device_ids=[comm.get_local_rank()] if on_gpu else None)
        self._trainer = self.build_step_trainer(cfg, model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = SliceStackCheckpointer(model, cfg.OUTPUT_DIR,
                                                   trainer=weakref.proxy(self))
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @staticmethod
    def build_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
        """SimpleTrainer, or with SOLVER.AMP.ENABLED the MixedPrecisionTrainer (autocast in
        SOLVER.AMP.PRECISION on the model's device type)."""
        if not cfg.SOLVER.AMP.ENABLED:
            return SimpleTrainer(model, data_loader, optimizer)
        device_type = torch.device(cfg.MODEL.DEVICE).type
        precision = resolve_precision(cfg.SOLVER.AMP.PRECISION, device_type)
        return MixedPrecisionTrainer(model, data_loader, optimizer, precision, device_type)

    def build_hooks(self):
        cfg = self.cfg
        hook_list = super().build_hooks()
        if cfg.TEST.CTC.CALIBRATE_LINKING:
            eval_index = next(i for i, h in enumerate(hook_list) if isinstance(h, hooks.EvalHook))
            hook_list.insert(eval_index, LinkingCalibration(cfg.TEST.EVAL_PERIOD))
        extra = [FusionWeightLogger(cfg.MODEL.FUSION.LOG_PERIOD)]
        if cfg.TEST.VAL_LOSS_PERIOD > 0 and cfg.DATASETS.VAL:
            extra.append(ValidationLoss(cfg.TEST.VAL_LOSS_PERIOD, self.build_validation_loader(cfg),
                                        cfg.TEST.VAL_LOSS_BATCHES))
        if cfg.TEST.BEST_METRIC and cfg.DATASETS.TEST and comm.is_main_process():
            extra.append(hooks.BestCheckpointer(cfg.TEST.EVAL_PERIOD, self.checkpointer,
                                                cfg.TEST.BEST_METRIC, cfg.TEST.BEST_METRIC_MODE))
        if cfg.TEST.EARLY_STOP_PATIENCE > 0:
            extra.append(EarlyStopping(cfg.TEST.BEST_METRIC, cfg.TEST.BEST_METRIC_MODE,
                                       cfg.TEST.EARLY_STOP_PATIENCE))
        # After the EvalHook (which writes the metrics) and before the PeriodicWriter.
        writer_index = next((i for i, h in enumerate(hook_list)
                             if isinstance(h, hooks.PeriodicWriter)),
                            len(hook_list))
        return hook_list[:writer_index] + extra + hook_list[writer_index:]

    def train(self):
        try:
            return super().train()
        except EarlyStop:
            self.checkpointer.save("model_final")
            return OrderedDict()

    @classmethod
    def build_train_loader(cls, cfg):
        """Slices with a reference (slice-wise GT: only the annotated ones); empty slices stay
        unless DATALOADER.FILTER_EMPTY_ANNOTATIONS."""
        records = _annotated_records(cfg.DATASETS.TRAIN, cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
        return build_detection_train_loader(cfg, mapper=build_mapper(cfg, is_train=True),
                                            dataset=records)

    @classmethod
    def build_validation_loader(cls, cfg):
        """Training-mode batches of DATASETS.VAL without augmentation, for the validation loss."""
        records = _annotated_records(cfg.DATASETS.VAL, filter_empty=False)
        mapper = build_mapper(cfg, is_train=True,
                              augmentations=build_slice_augmentations(cfg, False),
                              intensity_augmentation=None)
        return build_detection_train_loader(cfg, mapper=mapper, dataset=records)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name,
                                           mapper=build_mapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        metadata = MetadataCatalog.get(dataset_name)
        if getattr(metadata, "evaluator_type", None) != "ctc":
            return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)
        evaluators = [CTCEvaluator(cfg, dataset_name, output_folder)]
        if cfg.TEST.CTC.COCO_AP:
            evaluators.append(
                AnnotatedSlicesOnly(
                COCOEvaluator(
                dataset_name,
                tasks=("bbox", "segm"),
                output_dir=output_folder,
                use_fast_impl=False,
                max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                )
                )
            )
        return DatasetEvaluators(evaluators)

    @classmethod
    def build_optimizer(cls, cfg, model):
        """SGD or AdamW (SOLVER.OPTIMIZER) over detectron2's parameter groups; parameters of
        fusion modules get no weight decay."""
        groups = get_default_optimizer_params(
            model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR,
            weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
        fusion_ids = {id(p) for m in model.modules() if isinstance(m, SliceFusion)
                      for p in m.parameters()}
        split = []
        for group in groups:
            rest = [p for p in group["params"] if id(p) not in fusion_ids]
            fused = [p for p in group["params"] if id(p) in fusion_ids]
            if rest:
                split.append({**group, "params": rest})
            if fused:
                split.append({**group, "params": fused, "weight_decay": 0.0})
        name = cfg.SOLVER.OPTIMIZER.upper()
        if name == "SGD":
            optimizer = torch.optim.SGD(split, lr=cfg.SOLVER.BASE_LR, momentum=cfg.SOLVER.MOMENTUM,
                                        nesterov=cfg.SOLVER.NESTEROV,
                                        weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        elif name == "ADAMW":
            optimizer = torch.optim.AdamW(split, lr=cfg.SOLVER.BASE_LR,
                                          weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        else:
            raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAMW, got {cfg.SOLVER.OPTIMIZER!r}")
        return maybe_add_gradient_clipping(cfg, optimizer)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Evaluate on every DATASETS.TEST dataset, whole volume by whole volume."""
        results = OrderedDict()
        for index, dataset_name in enumerate(cfg.DATASETS.TEST):
            evaluator = (
                evaluators[index]
                if evaluators is not None
                else cls.build_evaluator(cfg, dataset_name)
            )
            results[dataset_name] = inference_on_volumes(model, cfg, dataset_name, evaluator)
            if comm.is_main_process():
                write_json(os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name, "results.json"),
                           results[dataset_name])
                ctc = results[dataset_name].get("ctc", {})
                if ctc:
                    table = {k: v for k, v in ctc.items() if k in CTC_TABLE_KEYS}
                    if "DET" not in table:  # the dataset has no <seq>_GT/TRA markers
                        table["DET"] = table["OP_CSB"] = "no TRA markers"
                    logger.info(f"CTC metrics on {dataset_name}:\n" + create_small_table(table))
                print_csv_format(results[dataset_name])
        if len(results) == 1:
            results = list(results.values())[0]
        return results


def build_mapper(cfg, is_train: bool, **overrides) -> SliceStackMapper:
    """The SliceStackMapper of a config's model: with neighbour-slice targets where its mask head
    predicts them; ``overrides`` replace keyword arguments of its ``from_config``."""
    return SliceStackMapper(cfg, is_train=is_train, neighbor_masks=predicts_neighbor_masks(cfg),
                            **overrides)


def _annotated_records(names, filter_empty: bool) -> list[dict]:
    """Slice records of the datasets that have a reference (slice-wise references: only the
    annotated slices)."""
    return [r for r in get_detection_dataset_dicts(names, filter_empty=filter_empty)
            if r.get("annotated", True)]


CTC_TABLE_KEYS = ("SEG", "DET", "OP_CSB", "SEG_2D", "SEG_poles", "SEG_core", "SEG_oracle_link",
                  "splits", "merges", "volume_AP", "precision", "recall", "count_error")
