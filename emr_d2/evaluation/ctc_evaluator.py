"""CTCEvaluator: per-slice predictions -> linked 3D label volumes -> CTC RES files and SEG."""
from __future__ import annotations

import contextlib
import io
import logging
import os
from collections import defaultdict

import numpy as np
import pycocotools.mask as mask_util
from detectron2.config import configurable
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..atomic import write_json
from ..data.catalog import record_voxel_size
from ..data.ctc import output_name, write_label_volume, write_result_tracks
from ..data.slices import read_record_markers, read_record_reference
from ..data.window import z_spacing_um
from ..linking import (LinkOptions, SlicePrediction, link_slices, link_with_reference, paste_volume,
                       slice_prediction)
from .det import DETAccumulator, op_csb
from .z_extent import ZExtentErrors
from .seg import SEGAccumulator

logger = logging.getLogger(__name__)


def volume_objects(gt: np.ndarray, pred: np.ndarray, scores: np.ndarray) -> dict:
    """The 3D objects of one volume for :func:`volume_average_precision`, compact enough to
    gather across processes: each (Z, H, W) volume is stacked into a (Z*H, W) image, whose mask
    IoU equals the 3D IoU, and every object is COCO-RLE encoded there.

    gt, pred: (Z, H, W) labels; scores: (K,) scores of the predicted labels 1..K.
    """
    def encode(mask):
        return mask_util.encode(
            np.asfortranarray(mask.reshape(-1, mask.shape[-1]).astype(np.uint8)))

    predicted = [(encode(pred == label), float(scores[label - 1]))
                 for label in range(1, len(scores) + 1)]
    return {
        "height": gt.shape[0] * gt.shape[1], "width": gt.shape[2],
        "gt": [encode(gt == label) for label in np.unique(gt[gt > 0])],
        "pred": [(rle, score) for rle, score in predicted if mask_util.area(rle) > 0],
    }


def volume_average_precision(volumes: list[dict]) -> dict:
    """COCO-style AP over 3D objects with 3D IoU (as video instance segmentation scores tracks),
    from :func:`volume_objects` of every volume; pycocotools' COCOeval does the matching.
    Returns AP (0.5:0.95), AP50 and AP75 in percent.
    """
    images, gt_anns, dt_anns = [], [], []
    for image_id, volume in enumerate(volumes, start=1):
        images.append({"id": image_id, "height": volume["height"], "width": volume["width"]})
        for rle in volume["gt"]:
            gt_anns.append({"id": len(gt_anns) + 1, "image_id": image_id, "category_id": 1,
                            "segmentation": rle, "area": float(mask_util.area(rle)),
                            "bbox": mask_util.toBbox(rle).tolist(), "iscrowd": 0})
        for rle, score in volume["pred"]:
            dt_anns.append(
                {"image_id": image_id, "category_id": 1, "segmentation": rle, "score": score})
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


class CTCEvaluator(DatasetEvaluator):
    """Restacks per-slice predictions into volumes, links them across z, writes
    ``<output_dir>/<seq>_RES/maskTTT.tif`` (and, once all are in, ``res_track.txt``, which makes
    the folder a CTC result that the CTC's tools accept) and scores them with the CTC SEG measure,
    and with DET and OP_CSB where the frames have tracking markers (``<seq>_GT/TRA``).

    Inputs to :meth:`process` are slice records (volume_id, z, depth, ...); outputs carry
    ``instances`` at the record's native size and, for neighbour-mask models, ``slice_offsets``
    (the window's offsets). A volume is linked, written and scored on the process that predicted
    its last slice, as soon as all its slices are in; only per-volume scores are gathered (DDP).
    :meth:`evaluate` returns ``{"ctc": {SEG, SEG_2D, SEG_poles, SEG_core, splits, merges,
    SEG_oracle_link, DET, OP_CSB, volume_AP, precision, recall, count_error, ...}}`` and writes
    the same to ``<output_dir>/ctc_metrics.json``. ``SEG_oracle_link`` is the SEG of the same
    per-slice masks linked with the reference identities (:func:`link_with_reference`):
    ``SEG_oracle_link - SEG`` is what linking loses, ``1 - SEG_oracle_link`` what the masks lose.
    """

    @configurable
    def __init__(
        self,
        dataset_name: str,
        *,
        link_options: LinkOptions,
        score_threshold: float,
        write_res: bool,
        output_dir: str | None = None,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: the registered CTC dataset whose slice records are evaluated.
            link_options: how the slices' instances are linked into 3D objects.
            score_threshold: instances below this score are dropped before linking.
            write_res: write ``<output_dir>/<seq>_RES`` (with an output_dir).
            output_dir: where the results and ``ctc_metrics.json`` go; None writes nothing.
            distributed: gather the per-volume scores of every process.
        """
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.distributed = distributed
        self.score_threshold = score_threshold
        self.write_res = write_res
        self.link_options = link_options
        self.reset()

    @classmethod
    def from_config(cls, cfg, dataset_name: str, output_dir: str | None = None,
                    distributed: bool = True):
        return {
            "dataset_name": dataset_name,
            "link_options": LinkOptions.from_config(cfg),
            "score_threshold": cfg.TEST.CTC.SCORE_THRESHOLD,
            "write_res": cfg.TEST.CTC.WRITE_RES,
            "output_dir": output_dir,
            "distributed": distributed,
        }

    def reset(self) -> None:
        self._open: dict[str, dict[int, SlicePrediction]] = defaultdict(
            dict)  # volume -> z -> slice
        self._seg, self._oracle, self._det = SEGAccumulator(), SEGAccumulator(), DETAccumulator()
        self._extents = ZExtentErrors()
        self._objects: list[tuple[str, dict]] = []  # (volume id, volume_objects)
        self._res_dirs: set[str] = set()

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        for record, output in zip(inputs, outputs):
            slices = self._open[record["volume_id"]]
            if record["z"] in slices:
                raise RuntimeError(
                    f"slice {record['z']} of {record['volume_id']} was predicted twice")
            slices[record["z"]] = slice_prediction(output["instances"], self.score_threshold)
            if len(slices) == record["depth"]:
                self._finish_volume(record, self._open.pop(record["volume_id"]),
                                    output.get("slice_offsets", ()))

    def _finish_volume(self, record: dict, slices: dict[int, SlicePrediction],
                       window_offsets) -> None:
        shape = (record["depth"], record["height"], record["width"])
        regions = paste_volume(((z, slices[z]) for z in sorted(slices)), shape, window_offsets,
                               z_spacing_um(record_voxel_size(record)))
        linked = link_slices(regions, self.link_options)
        if self.write_res and self.output_dir:
            res_dir = os.path.join(self.output_dir, f"{record['sequence']}_RES")
            write_label_volume(os.path.join(res_dir, output_name(record["file_name"])),
                               linked.labels)
            self._res_dirs.add(res_dir)
        gt, annotated = read_record_reference(record)
        volume_id = record["volume_id"]
        self._seg.add(volume_id, gt, linked.labels, annotated)
        markers = read_record_markers(record)
        if markers is not None:
            self._det.add(volume_id, markers, linked.labels)
        self._oracle.add(volume_id, gt, link_with_reference(regions.maps, gt), annotated)
        if annotated is None:  # a whole 3D reference: objects' z ranges are known
            self._extents.add(regions, gt)
        self._objects.append((volume_id, volume_objects(gt, linked.labels, linked.scores)))

    def evaluate(self) -> dict | None:
        if self._open:
            volume_id, slices = next(iter(self._open.items()))
            raise RuntimeError(f"{volume_id}: only {len(slices)} slices were predicted")
        parts = [(self._seg, self._oracle, self._det, self._extents, self._objects, self._res_dirs)]
        if self.distributed:
            comm.synchronize()
            parts = comm.gather(parts[0], dst=0)
            if not comm.is_main_process():
                return None
        seg, oracle, det, extents = (
            SEGAccumulator(),
            SEGAccumulator(),
            DETAccumulator(),
            ZExtentErrors(),
        )
        objects, res_dirs = [], set()
        for part_seg, part_oracle, part_det, part_extents, part_objects, part_res_dirs in parts:
            seg.merge(part_seg)
            oracle.merge(part_oracle)
            det.merge(part_det)
            extents.merge(part_extents)
            objects += part_objects
            res_dirs |= part_res_dirs
        if not objects:
            logger.warning(f"CTCEvaluator on {self.dataset_name}: no volume was predicted")
            return {"ctc": {}}
        for res_dir in sorted(res_dirs):  # every rank has written its frames (synchronize above)
            write_result_tracks(res_dir)
        seg.warn_empty_references(self.dataset_name)
        volume_ap = volume_average_precision(
            [o for _, o in sorted(objects, key=lambda item: item[0])])
        results = dict(seg.summary(), SEG_oracle_link=oracle.summary()["SEG"],
                       volume_AP=volume_ap["AP"], volume_AP50=volume_ap["AP50"],
                       volume_AP75=volume_ap["AP75"], num_volumes=len(objects))
        if extents.errors:
            results.update(extents.summary())
        if det.markers:
            results.update(det.summary())
            results["OP_CSB"] = op_csb(results["SEG"], results["DET"])
        if self.output_dir:
            write_json(os.path.join(self.output_dir, "ctc_metrics.json"), results)
        return {"ctc": results}


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
