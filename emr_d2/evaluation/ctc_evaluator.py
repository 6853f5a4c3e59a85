"""CTCEvaluator: per-slice predictions -> linked 3D label volumes -> CTC RES files and SEG."""
from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import Instances
from detectron2.utils import comm
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..atomic import atomic_write
from ..data.ctc import gt_folder, list_gt, read_gt_frame, write_label_volume
from .linking import link_options_from_config, link_slices, link_with_reference, paste_volume
from .seg import SEGAccumulator

logger = logging.getLogger(__name__)


def res_file_name(raw_file: str) -> str:
    """CTC result name of a raw frame: tTTT.tif -> maskTTT.tif (same digits)."""
    return "mask" + os.path.basename(raw_file)[1:]


def volume_average_precision(volumes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict:
    """COCO-style AP over 3D objects with 3D IoU (as video instance segmentation scores tracks).

    volumes: (reference labels, predicted labels, (K,) scores of predicted labels 1..K) per
    volume. Each (Z, H, W) volume is stacked into a (Z*H, W) image, whose mask IoU equals the
    3D IoU, so pycocotools' COCOeval does the matching. Returns AP (0.5:0.95), AP50 and AP75
    in percent.
    """
    images, gt_anns, dt_anns = [], [], []

    def encode(mask):
        return mask_util.encode(np.asfortranarray(mask.reshape(-1, mask.shape[-1]).astype(np.uint8)))

    for image_id, (gt, pred, scores) in enumerate(volumes, start=1):
        images.append({"id": image_id, "height": gt.shape[0] * gt.shape[1], "width": gt.shape[2]})
        for label in np.unique(gt[gt > 0]):
            rle = encode(gt == label)
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": 1,
                            "segmentation": rle, "area": float(mask_util.area(rle)),
                            "bbox": mask_util.toBbox(rle).tolist(), "iscrowd": 0})
        for label in range(1, len(scores) + 1):
            mask = pred == label
            if mask.any():
                dt_anns.append({"image_id": image_id, "category_id": 1, "segmentation": encode(mask),
                                "score": float(scores[label - 1])})
    if not gt_anns:
        return {"AP": float("nan"), "AP50": float("nan"), "AP75": float("nan")}
    if not dt_anns:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns,
                           "categories": [{"id": 1, "name": "nucleus"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt_anns)
        evaluation = COCOeval(coco_gt, coco_dt, "segm")
        evaluation.params.maxDets = [max(len(dt_anns), 100)]
        evaluation.params.areaRng = [[0, 1e12]]
        evaluation.params.areaRngLbl = ["all"]
        evaluation.evaluate()
        evaluation.accumulate()
    precision = evaluation.eval["precision"][:, :, 0, 0, 0]  # (T IoU thresholds, R recall)

    def mean_ap(p):
        p = p[p > -1]
        return float(p.mean() * 100) if p.size else float("nan")

    return {"AP": mean_ap(precision), "AP50": mean_ap(precision[0]), "AP75": mean_ap(precision[5])}


def instances_to_numpy(instances: Instances, score_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) bool masks and (K,) scores of the instances scoring at least the threshold."""
    keep = instances.scores >= score_threshold
    masks = instances.pred_masks[keep].cpu().numpy().astype(bool)
    return masks, instances.scores[keep].cpu().numpy()


class CTCEvaluator(DatasetEvaluator):
    """Restacks per-slice predictions into volumes, links them across z, writes
    ``<output_dir>/<seq>_RES/maskTTT.tif`` and scores them with the CTC SEG measure.

    Inputs to :meth:`process` are slice records (volume_id, z, ...); outputs carry ``instances``
    at the record's native size. Works under DDP: predictions are gathered on the main process.
    :meth:`evaluate` returns ``{"ctc": {SEG, SEG_2D, SEG_poles, SEG_core, splits, merges,
    SEG_oracle_link, volume_AP, precision, recall, count_error, ...}}`` and writes the same to
    ``<output_dir>/ctc_metrics.json``. ``SEG_oracle_link`` is the SEG of the same per-slice masks
    linked with the reference identities (:func:`link_with_reference`): ``SEG_oracle_link - SEG``
    is what linking loses, ``1 - SEG_oracle_link`` what the masks lose.
    """

    def __init__(self, dataset_name: str, cfg, output_dir: str | None = None, distributed: bool = True):
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self.score_threshold = cfg.TEST.CTC.SCORE_THRESHOLD
        self.write_res = cfg.TEST.CTC.WRITE_RES
        self.link_options = link_options_from_config(cfg)
        self._predictions: list[tuple[str, int, list, np.ndarray]] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for record, output in zip(inputs, outputs):
            masks, scores = instances_to_numpy(output["instances"], self.score_threshold)
            rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))) \
                if len(masks) else []
            self._predictions.append((record["volume_id"], int(record["z"]), rles, scores))

    def _gathered(self) -> list:
        if not self.distributed:
            return self._predictions
        comm.synchronize()
        gathered = comm.gather(self._predictions, dst=0)
        return list(itertools.chain(*gathered)) if comm.is_main_process() else []

    def evaluate(self) -> dict | None:
        predictions = self._gathered()
        if self.distributed and not comm.is_main_process():
            return None
        by_volume: dict[str, dict[int, tuple]] = defaultdict(dict)
        for volume_id, z, rles, scores in predictions:
            if z in by_volume[volume_id]:
                raise RuntimeError(f"slice {z} of {volume_id} was predicted twice")
            by_volume[volume_id][z] = (rles, scores)
        records = defaultdict(dict)
        for record in DatasetCatalog.get(self.dataset_name):
            records[record["volume_id"]][record["z"]] = record
        metadata = MetadataCatalog.get(self.dataset_name)
        gt_frames = list_gt(gt_folder(metadata.dataset_root, metadata.sequence))
        accumulator, oracle, ap_inputs = SEGAccumulator(), SEGAccumulator(), []
        res_dir = os.path.join(self.output_dir or ".", f"{metadata.sequence}_RES")
        for volume_id, slices in records.items():
            if volume_id not in by_volume:
                continue
            first = slices[0]
            if len(by_volume[volume_id]) != first["depth"]:
                raise RuntimeError(f"{volume_id}: {len(by_volume[volume_id])} of {first['depth']} "
                                   "slices were predicted")
            slice_maps, slice_scores = self._paste(by_volume[volume_id],
                                                   (first["depth"], first["height"], first["width"]))
            linked = link_slices(slice_maps, slice_scores, **self.link_options)
            if self.write_res and self.output_dir:
                write_label_volume(os.path.join(res_dir, res_file_name(first["file_name"])), linked.labels)
            gt, annotated = read_gt_frame(gt_frames[first["frame"]], linked.labels.shape)
            accumulator.add(volume_id, gt, linked.labels, annotated)
            oracle.add(volume_id, gt, link_with_reference(slice_maps, gt), annotated)
            ap_inputs.append((gt, linked.labels, linked.scores))
        if not ap_inputs:
            logger.warning(f"CTCEvaluator on {self.dataset_name}: no volume was predicted")
            return {"ctc": {}}
        summary = accumulator.summary()
        volume_ap = volume_average_precision(ap_inputs)
        results = dict(summary, SEG_oracle_link=oracle.summary()["SEG"],
                       volume_AP=volume_ap["AP"], volume_AP50=volume_ap["AP50"],
                       volume_AP75=volume_ap["AP75"], num_volumes=len(ap_inputs))
        if self.output_dir:
            write_json(os.path.join(self.output_dir, "ctc_metrics.json"), results)
        return {"ctc": results}

    @staticmethod
    def _paste(slices: dict[int, tuple], shape: tuple[int, int, int]):
        decoded = (
            (z, mask_util.decode(rles).transpose(2, 0, 1).astype(bool) if len(rles) else [], scores)
            for z, (rles, scores) in slices.items()
        )
        return paste_volume(decoded, shape)


def write_json(path: str, data: dict) -> None:
    """Write JSON atomically (temporary name, then rename)."""
    atomic_write(path, lambda f: json.dump(data, f, indent=2), "w")


class AnnotatedSlicesOnly(DatasetEvaluator):
    """Passes only slices with a reference (record["annotated"]) on to another evaluator, so that
    per-slice COCO AP ignores slices that a slice-wise CTC reference leaves unannotated."""

    def __init__(self, evaluator: DatasetEvaluator):
        self.evaluator = evaluator

    def reset(self):
        self.evaluator.reset()

    def process(self, inputs, outputs):
        kept = [(i, o) for i, o in zip(inputs, outputs) if i.get("annotated", True)]
        if kept:
            self.evaluator.process([i for i, _ in kept], [o for _, o in kept])

    def evaluate(self):
        return self.evaluator.evaluate()
