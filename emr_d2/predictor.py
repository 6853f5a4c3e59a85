"""VolumePredictor: one 3D stack -> per-slice instances -> one 3D label volume."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import ImageList, Instances
from tqdm import tqdm

from .data.ctc import CTCFormatError, list_frames, read_raw_volume, write_label_volume
from .data.window import normalised_slices, percentile_range, warn_if_deeper_than, window_indices
from .evaluation.ctc_evaluator import instances_to_numpy
from .evaluation.linking import LinkedVolume, link_options_from_config, link_volume
from .modeling.backbone import SharedSliceBackbone
from .modeling.checkpoint import SliceStackCheckpointer

logger = logging.getLogger(__name__)


def supports_feature_cache(model: torch.nn.Module) -> bool:
    """Whether per-slice features can be shared between windows: the backbone runs on each
    slice alone (early / late fusion, attention) and every slice is normalised alike. Channel
    fusion mixes the slices in its first convolution and cannot share."""
    return (
        isinstance(model.backbone, SharedSliceBackbone)
        and bool((model.pixel_mean == model.pixel_mean.flatten()[0]).all())
        and bool((model.pixel_std == model.pixel_std.flatten()[0]).all())
    )


class VolumePredictor:
    """Segments whole (Z, H, W) volumes with a slice-stack model.

    Every slice z is predicted from its N-slice window (batched, ``TEST.CTC.BATCH_SLICES``
    windows per forward pass). With TEST.CTC.CACHE_FEATURES and a shared-backbone model, each
    slice's backbone features are computed once and kept in a rolling cache of the slices the
    current windows need; only the fusion and the heads run per window. Instances come back at
    the volume's native size; :meth:`__call__` links them into a 3D label volume.
    """

    def __init__(self, cfg, model: torch.nn.Module | None = None):
        if model is None:
            model = build_model(cfg)
            SliceStackCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
        self.model = model
        self.num_slices = cfg.INPUT.NUM_SLICES
        self.padding = cfg.INPUT.SLICE_PADDING
        self.percentiles = tuple(cfg.INPUT.NORM_PERCENTILES)
        self.resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        self.batch_size = max(int(cfg.TEST.CTC.BATCH_SLICES), 1)
        self.use_cache = bool(cfg.TEST.CTC.CACHE_FEATURES) and supports_feature_cache(model)
        self.link_options = link_options_from_config(cfg)
        self.score_threshold = cfg.TEST.CTC.SCORE_THRESHOLD

    # ------------------------------------------------------------------ per-slice prediction
    def slice_instances(self, volume: np.ndarray, progress: bool = False) -> Iterator[tuple[int, Instances]]:
        """Yield (z, Instances at native size) for every slice of a (Z, H, W) raw volume."""
        if volume.ndim != 3:
            raise ValueError(f"expected a (Z, H, W) volume, got shape {volume.shape}")
        low, high = percentile_range(volume, self.percentiles)
        depth = volume.shape[0]
        warn_if_deeper_than(depth, self.num_slices, "volume")
        batches = [list(range(s, min(s + self.batch_size, depth))) for s in range(0, depth, self.batch_size)]
        predict = self._predict_cached if self.use_cache else self._predict_windows
        state: dict = {}
        self.model.eval()
        with torch.no_grad():
            for zs in tqdm(batches, desc="slices", unit="batch", disable=not progress):
                yield from zip(zs, predict(volume, low, high, zs, state))

    def _slices(self, volume: np.ndarray, low: float, high: float, indices) -> np.ndarray:
        """Normalised, test-resized slices (S, H', W'); index -1 gives a zero slice."""
        out = normalised_slices(volume, indices, low, high)
        transform = self.resize.get_transform(out[0])
        return np.ascontiguousarray(transform.apply_image(out.transpose(1, 2, 0)).transpose(2, 0, 1))

    def _inputs(self, volume: np.ndarray, zs: list[int]) -> list[dict]:
        return [{"height": volume.shape[1], "width": volume.shape[2], "z": z} for z in zs]

    def _predict_windows(self, volume, low, high, zs, state) -> list[Instances]:
        """Every window on its own: the backbone sees each slice N times."""
        inputs = self._inputs(volume, zs)
        for item in inputs:
            idx = window_indices(item["z"], volume.shape[0], self.num_slices, self.padding)
            item["image"] = torch.from_numpy(self._slices(volume, low, high, idx))
        return [out["instances"].to("cpu") for out in self.model(inputs)]

    def _predict_cached(self, volume, low, high, zs, state) -> list[Instances]:
        """Backbone features of each slice once, from a rolling cache; fusion + heads per window."""
        model = self.model
        cache: dict[int, dict[str, torch.Tensor]] = state.setdefault("cache", {})
        windows = [window_indices(z, volume.shape[0], self.num_slices, self.padding) for z in zs]
        needed = sorted(set(np.concatenate(windows).tolist()))
        for index in [i for i in cache if i not in needed]:
            del cache[index]
        missing = [i for i in needed if i not in cache]
        if missing:
            images = model.preprocess_slices(torch.from_numpy(self._slices(volume, low, high, missing)))
            features = model.backbone.forward_slices(images.tensor)  # {level: (S, 1, C, h, w)}
            for k, index in enumerate(missing):
                cache[index] = {level: f[k, 0] for level, f in features.items()}
            state["image_size"] = images.image_sizes[0]
            state["padded"] = images.tensor.shape[-2:]
        levels = cache[needed[0]].keys()
        stacked = {level: torch.stack([torch.stack([cache[i][level] for i in w]) for w in windows])
                   for level in levels}
        features = model.backbone.combine(stacked)
        device = next(iter(stacked.values())).device
        images = ImageList(torch.zeros((len(zs), 1, *state["padded"]), device=device),
                           [state["image_size"]] * len(zs))
        proposals, _ = model.proposal_generator(images, features, None)
        results, _ = model.roi_heads(images, features, proposals, None)
        processed = model._postprocess(results, self._inputs(volume, zs), images.image_sizes)
        return [out["instances"].to("cpu") for out in processed]

    # ------------------------------------------------------------------ whole volume
    def __call__(self, volume: np.ndarray, progress: bool = False) -> LinkedVolume:
        """Segment a (Z, H, W) raw volume into a uint16 label volume of the same shape."""
        predictions = (
            (z, *instances_to_numpy(instances, self.score_threshold))
            for z, instances in self.slice_instances(volume, progress)
        )
        return link_volume(predictions, volume.shape, **self.link_options)


def plan_outputs(input_path: str, output_dir: str) -> list[tuple[str, str]]:
    """(input volume, output label file) pairs for ``tools/predict.py``.

    A CTC sequence folder (tTTT.tif frames) gives ``maskTTT.tif``; a single TIFF or a folder of
    TIFFs gives ``<name>_labels.tif`` for each.
    """
    if os.path.isfile(input_path):
        files = [input_path]
    elif os.path.isdir(input_path):
        frames = list_frames(input_path)
        if frames:
            return [(path, os.path.join(output_dir, "mask" + os.path.basename(path)[1:]))
                    for _, path in sorted(frames.items())]
        files = sorted(os.path.join(input_path, f) for f in os.listdir(input_path)
                       if f.lower().endswith((".tif", ".tiff")))
        if not files:
            raise CTCFormatError(f"{input_path}: no .tif files found")
    else:
        raise CTCFormatError(f"{input_path}: no such file or folder")
    return [(f, os.path.join(output_dir, os.path.splitext(os.path.basename(f))[0] + "_labels.tif"))
            for f in files]


def predict_files(predictor: VolumePredictor, pairs: list[tuple[str, str]]) -> None:
    """Segment every input volume and write its uint16 label volume (atomically)."""
    for source, target in tqdm(pairs, desc="volumes", unit="volume", disable=len(pairs) < 2):
        volume = read_raw_volume(source)
        linked = predictor(volume, progress=True)
        write_label_volume(target, linked.labels)
        logger.info(f"{source} -> {target}: {int(linked.labels.max())} objects")
