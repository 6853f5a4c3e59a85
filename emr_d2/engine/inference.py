"""Whole-volume inference over a registered slice dataset, feeding DatasetEvaluators."""
from __future__ import annotations

import logging
import time
from collections import OrderedDict

import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.evaluator import inference_context
from detectron2.utils import comm
from tqdm import tqdm

from ..data.catalog import record_voxel_size
from ..data.ctc import read_raw_volume
from ..predictor import VolumePredictor
from .hooks import unwrap_ddp

logger = logging.getLogger(__name__)


def inference_on_volumes(model: torch.nn.Module, cfg, dataset_name: str,
                         evaluator: DatasetEvaluator) -> dict:
    """Predict every volume of a slice dataset and evaluate.

    Volumes are split across processes (DDP), each predicted whole by :class:`VolumePredictor`
    (with the per-slice feature cache where the model allows it); every slice's record, instances
    and window offsets (``slice_offsets``) go to ``evaluator.process``. The main process returns
    the evaluator's results plus ``ctc/seconds_per_volume``; other processes return {}.
    """
    model = unwrap_ddp(model)
    volumes: OrderedDict[str, list[dict]] = OrderedDict()
    for record in DatasetCatalog.get(dataset_name):
        volumes.setdefault(record["volume_id"], []).append(record)
    mine = list(volumes.values())[comm.get_rank()::comm.get_world_size()]
    predictor = VolumePredictor(cfg, model)
    augmentation = ", ".join(t.name for t in predictor.transforms)
    logger.info(f"Inference on {len(volumes)} volumes of {dataset_name} "
                f"({'cached' if predictor.use_cache else 'per-window'} slice features"
                f"{'; test-time augmentation: ' + augmentation if augmentation else ''})")
    evaluator.reset()
    start = time.perf_counter()
    with inference_context(model), torch.no_grad():
        for records in tqdm(mine, desc=f"predicting {dataset_name}", unit="volume",
                            disable=not comm.is_main_process()):
            by_z = {r["z"]: r for r in records}
            volume = read_raw_volume(records[0]["file_name"])
            geometry = predictor.geometry(record_voxel_size(records[0]))
            for z, instances in predictor.slice_instances(volume, geometry=geometry):
                evaluator.process([by_z[z]], [{"instances": instances,
                                               "slice_offsets": geometry.offsets}])
    seconds = (time.perf_counter() - start) / max(len(mine), 1)
    results = evaluator.evaluate()
    if not comm.is_main_process():
        return {}
    results = results or {}
    results.setdefault("ctc", {})["seconds_per_volume"] = seconds
    return results
