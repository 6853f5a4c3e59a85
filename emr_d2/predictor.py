"""VolumePredictor: one 3D stack -> per-slice instances -> one 3D label volume."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import Instances
from tqdm import tqdm

from .data.catalog import resolve_voxel_size
from .data.ctc import RawStack, write_label_planes
from .data.window import (SliceWindow, normalised_slices, percentile_range, pixel_scale,
                          scaled_size, warn_if_deeper_than, z_spacing_um)
from .linking import (LinkedVolume, LinkOptions, SliceRegions, link_slices, open_linker,
                      paste_volume, slice_prediction)
from .modeling.checkpoint import SliceStackCheckpointer
from .modeling.tta import PlaneSymmetry, plane_symmetries

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackGeometry:
    """A stack's voxel size, resolved once into what predicting it needs
    (:meth:`VolumePredictor.geometry`).

    Attributes:
        offsets: (N,) int, the window's slice offsets (INPUT.SLICE_OFFSETS, or neighbours
            INPUT.SLICE_SPACING_UM apart in slices of this stack).
        scale: the factor that resizes its slices to the model's pixel size (1: as they are).
        z_spacing_um: the length of a slice step in micrometres, the unit of z extents (1.0, so
            that extents count slices, where the voxel size is unknown).
    """

    offsets: np.ndarray
    scale: float
    z_spacing_um: float


class SliceFeatureCache:
    """The backbone features of the slices that the current windows of a volume need, each slice
    computed once under each transform of test-time augmentation (a rolling cache).

    Attributes:
        features: slice index -> {transform (None: the slice as it is): {level: (C, h, w)}}.
        image_size: transform -> the (H, W) the heads see.
    """

    def __init__(self, model: torch.nn.Module, transforms: list[PlaneSymmetry], chunk: int):
        """
        Args:
            model: a model that shares slice features (``model.slice_features``).
            transforms: test-time augmentation's symmetries; none: the slices as they are.
            chunk: at most this many slices through the backbone per pass.
        """
        self.model, self.transforms, self.chunk = model, list(transforms) or [None], chunk
        self.features: dict[int, dict] = {}
        self.image_size: dict = {}

    def update(self, slices, windows: list[np.ndarray]) -> None:
        """Drop the slices no window of ``windows`` needs and compute the missing ones;
        ``slices(indices)`` gives normalised slices (S, H, W) at the model's pixel size."""
        needed = set(np.concatenate(windows).tolist())
        for index in [i for i in self.features if i not in needed]:
            del self.features[index]
        missing = sorted(needed - set(self.features))
        # even passes of at most chunk slices (GroupNorm needs more than one value per group: a
        # pass of one slice whose deepest level is 1 x 1 would fail)
        for part in np.array_split(np.array(missing, dtype=int),
                                   -(-len(missing) // self.chunk)) if missing else []:
            stack = slices(part.tolist())
            for transform in self.transforms:
                computed, self.image_size[transform] = self.model.slice_features(
                    stack if transform is None else transform.apply_image(stack))
                for index, levels in zip(part.tolist(), computed):
                    self.features.setdefault(index, {})[transform] = levels

    def windows(self, windows: list[np.ndarray], transform) -> list[list[dict]]:
        """Per window, its slices' features under ``transform`` (None: as they are)."""
        return [[self.features[i][transform] for i in window] for window in windows]


# Whole-volume inference batches at most this many pixels of centre slices per forward pass:
# activations grow with the pixels of a pass, so large slices go one window at a time.
MAX_BATCH_PIXELS = 1 << 21


class VolumePredictor:
    """Segments whole (Z, H, W) volumes with a slice-stack model.

    It schedules the work; the model does the inference. Every slice z is predicted from its
    window (INPUT.NUM_SLICES slices at INPUT.SLICE_OFFSETS / SLICE_SPACING_UM, padded at the
    edges, resized to INPUT.PIXEL_SIZE_UM if set), ``TEST.CTC.BATCH_WINDOWS`` windows per
    forward pass (fewer for large slices: at most MAX_BATCH_PIXELS pixels per pass). With
    TEST.CTC.CACHE_FEATURES and a model that shares slice features, each slice's backbone features
    are computed once (``model.slice_features``) and kept in a rolling cache of the slices the
    current windows need; only fusion and heads run per window
    (``model.inference_from_slice_features``). With TEST.AUG.ENABLED every window is predicted
    under each of TEST.AUG.TRANSFORMS and merged (the cache holds each slice's features under every
    transform).
    Instances come back at the volume's native size;
    :meth:`__call__` links them into a 3D label volume.
    """

    @configurable
    def __init__(
        self,
        *,
        model: torch.nn.Module,
        window: SliceWindow,
        percentiles: tuple[float, float],
        pixel_size_um: float,
        resize: T.Augmentation,
        batch_windows: int,
        cache_features: bool,
        link_options: LinkOptions,
        score_threshold: float,
        transforms: list[PlaneSymmetry],
        assume_model_pixel_size: bool = False,
    ):
        """
        Args:
            model: a slice-stack model (``SliceStackRCNN``) with its weights.
            window: which slices around each slice the model sees, and their padding.
            percentiles: the volume's intensity percentiles that map to 0 and 1.
            pixel_size_um: the in-plane pixel size the model works at (0: native pixels).
            resize: the test-time resize of every slice stack (detectron2's ResizeShortestEdge).
            batch_windows: windows per forward pass (at most, see MAX_BATCH_PIXELS).
            cache_features: compute each slice's backbone features once where the model can.
            link_options: how the slices' instances are linked into 3D objects.
            score_threshold: instances below this score are dropped before linking.
            transforms: test-time augmentation: every window is predicted under each of these
                symmetries of the slice plane and the predictions merged
                (:meth:`SliceStackRCNN.heads_with_tta`); none: plain prediction.
            assume_model_pixel_size: where a stack's voxel size is unknown, take its pixels to be
                ``pixel_size_um`` (an explicit guess; otherwise such a stack is refused).
        """
        self.model = model
        self.window = window
        self.percentiles = tuple(percentiles)
        self.pixel_size_um = pixel_size_um
        self.resize = resize
        self.batch_size = max(int(batch_windows), 1)
        self.use_cache = bool(cache_features) and getattr(model, "shares_slice_features", False)
        self.link_options = link_options
        self.score_threshold = score_threshold
        self.transforms = list(transforms)
        self.assume_model_pixel_size = assume_model_pixel_size

    @classmethod
    def from_config(cls, cfg, model: torch.nn.Module | None = None,
                    assume_model_pixel_size: bool = False) -> dict:
        """The predictor of ``cfg``; without a model, cfg's model with MODEL.WEIGHTS."""
        if model is None:
            model = build_model(cfg)
            SliceStackCheckpointer(model, strict=True).load(cfg.MODEL.WEIGHTS)
        return {
            "model": model,
            "window": SliceWindow.from_config(cfg),
            "percentiles": tuple(cfg.INPUT.NORM_PERCENTILES),
            "pixel_size_um": cfg.INPUT.PIXEL_SIZE_UM,
            "resize": T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST),
            "batch_windows": cfg.TEST.CTC.BATCH_WINDOWS,
            "cache_features": cfg.TEST.CTC.CACHE_FEATURES,
            "link_options": LinkOptions.from_config(cfg),
            "score_threshold": cfg.TEST.CTC.SCORE_THRESHOLD,
            "transforms": plane_symmetries(cfg.TEST.AUG.TRANSFORMS) if cfg.TEST.AUG.ENABLED else [],
            "assume_model_pixel_size": assume_model_pixel_size,
        }

    # ------------------------------------------------------------------ per-slice prediction
    def geometry(self, voxel_um: tuple | None = None) -> StackGeometry:
        """What a stack of (Z, Y, X) voxel size voxel_um (micrometres; None: unknown) means for
        this model: window offsets, the resize to INPUT.PIXEL_SIZE_UM, the z unit. An unknown
        voxel size is refused with one line saying how to give it where the model needs it
        (INPUT.SLICE_SPACING_UM; INPUT.PIXEL_SIZE_UM unless ``assume_model_pixel_size``)."""
        offsets = self.window.offsets_for(voxel_um)
        if self.pixel_size_um and voxel_um is None and not self.assume_model_pixel_size:
            raise ValueError(
                "the voxel size of the input is unknown (no --voxel-size, voxel_size.json, TIFF "
                f"tags or known CTC dataset) and the model works at {self.pixel_size_um:g} um "
                "pixels: give it with --voxel-size Z Y X (micrometres), or pass "
                f"--assume-model-pixel-size to take the pixels to be {self.pixel_size_um:g} um")
        scale = 1.0 if voxel_um is None else pixel_scale(self.pixel_size_um, voxel_um)
        return StackGeometry(offsets, scale, z_spacing_um(voxel_um))

    def slice_instances(self, volume: np.ndarray, progress: bool = False,
                        voxel_um: tuple | None = None, *, geometry: StackGeometry | None = None
                        ) -> Iterator[tuple[int, Instances]]:
        """Yield (z, Instances at native size) for every slice of a (Z, H, W) raw volume of
        (Z, Y, X) voxel size voxel_um (micrometres; needed with INPUT.SLICE_SPACING_UM or
        INPUT.PIXEL_SIZE_UM, which resizes the slices before the model), or of the ``geometry``
        already resolved from it (:meth:`geometry`)."""
        if volume.ndim != 3:
            raise ValueError(f"expected a (Z, H, W) volume, got shape {volume.shape}")
        geometry = geometry or self.geometry(voxel_um)
        offsets, scale = geometry.offsets, geometry.scale
        intensity_range = percentile_range(volume, self.percentiles)
        depth = volume.shape[0]
        warn_if_deeper_than(depth, offsets, "volume")

        def slices(indices) -> torch.Tensor:
            """Normalised slices (S, H', W') at the model's pixel size; index -1: zeros."""
            out = normalised_slices(volume, indices, *intensity_range).transpose(1, 2, 0)
            if scale != 1.0:
                out = T.ResizeTransform(*out.shape[:2],
                                        *scaled_size(*out.shape[:2], scale)).apply_image(out)
            out = self.resize.get_transform(out).apply_image(out)
            return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))

        windows = {z: self.window.indices(z, depth, offsets) for z in range(depth)}
        height, width = scaled_size(*volume.shape[1:], scale)
        views = max(len(self.transforms), 1)  # test-time augmentation keeps one set per transform
        batch = min(self.batch_size, max(1, MAX_BATCH_PIXELS // (height * width * views)))
        batches = [list(range(s, min(s + batch, depth))) for s in range(0, depth, batch)]
        cache = SliceFeatureCache(self.model, self.transforms, batch) if self.use_cache else None
        predict = self._predict_cached if self.use_cache else self._predict_windows
        self.model.eval()
        with torch.no_grad():
            for zs in tqdm(batches, desc="slices", unit="batch", disable=not progress):
                inputs = [{"height": volume.shape[1], "width": volume.shape[2], "z": z} for z in zs]
                outputs = predict(slices, [windows[z] for z in zs], inputs, cache)
                yield from zip(zs, (out["instances"].to("cpu") for out in outputs))

    def _predict_windows(self, slices, windows, inputs, cache) -> list[dict]:
        """Every window on its own: the backbone sees each slice N times."""
        for item, window in zip(inputs, windows):
            item["image"] = slices(window)
        if self.transforms:
            return self.model.inference_with_tta(inputs, self.transforms)
        return self.model(inputs)

    def _predict_cached(self, slices, windows, inputs, cache: SliceFeatureCache
                        ) -> list[dict]:
        """Backbone features of each slice once (under each transform of test-time augmentation),
        from a rolling cache; fusion + heads per window."""
        cache.update(slices, windows)
        if not self.transforms:
            return self.model.inference_from_slice_features(
                cache.windows(windows, None), cache.image_size[None], inputs)
        views = [(t, self.model.fuse_slice_features(cache.windows(windows, t)),
                  [cache.image_size[t]] * len(windows)) for t in self.transforms]
        return self.model.heads_with_tta(views, inputs)

    # ------------------------------------------------------------------ whole volume
    def regions(self, volume: np.ndarray, progress: bool = False,
                voxel_um: tuple | None = None) -> SliceRegions:
        """Predict and paste every slice of a (Z, H, W) raw volume (with predicted neighbour
        masks and z extents where the model predicts them), ready for linking."""
        geometry = self.geometry(voxel_um)
        predictions = ((z, slice_prediction(instances, self.score_threshold))
                       for z, instances in self.slice_instances(volume, progress,
                                                                geometry=geometry))
        return paste_volume(predictions, volume.shape, geometry.offsets, geometry.z_spacing_um)

    def __call__(self, volume: np.ndarray, progress: bool = False,
                 voxel_um: tuple | None = None) -> LinkedVolume:
        """Segment a (Z, H, W) raw volume into a uint16 label volume of the same shape."""
        return link_slices(self.regions(volume, progress, voxel_um), self.link_options)

    def stream(self, volume, voxel_um: tuple | None = None,
               progress: bool = False) -> Iterator[tuple[int, list[tuple[int, np.ndarray]]]]:
        """Segment a (Z, H, W) raw volume (an array or a :class:`RawStack`) slice by slice: after
        each slice z is predicted, yields (z, the label planes ``(index, (H, W) uint16)`` that no
        later slice can change, in z order), and (Z, the rest) at the end. The planes are those of
        ``self(volume)``; only the slices of objects still open are held (:func:`open_linker`; the
        "connected" linker holds every slice and returns them all at the end)."""
        geometry = self.geometry(voxel_um)
        linker = open_linker(volume.shape, geometry.offsets, geometry.z_spacing_um,
                             self.link_options)
        for z, instances in self.slice_instances(volume, progress, geometry=geometry):
            yield z, linker.add(z, slice_prediction(instances, self.score_threshold))
        yield volume.shape[0], linker.finish()

    def predict_file(self, source: str, target: str, voxel_um: tuple | None = None,
                     progress: bool = False, channel: int | None = None) -> int:
        """Segment the raw stack in file source into a uint16 label TIFF target (atomically) and
        return its number of objects, streaming (:meth:`stream`): the raw stack is read slice by
        slice (:class:`RawStack`) and the labels are written plane by plane as they are final.

        Args:
            voxel_um: the stack's (Z, Y, X) voxel size in micrometres; None: found as every tool
                finds it (:func:`resolve_voxel_size`: voxel_size.json, the TIFF's tags, a known
                CTC dataset).
            channel: the channel to segment in a multi-channel or colour TIFF.
        """
        voxel_um, origin = resolve_voxel_size(source, voxel_um)
        guess = (f": its pixels taken to be the model's {self.pixel_size_um:g} um"
                 if self.assume_model_pixel_size and self.pixel_size_um else "")
        logger.info(f"{source}: voxel size {_voxel_text(voxel_um)}"
                    + (f" (from {origin})" if voxel_um else guess))
        volume = RawStack(source, channel)
        objects = 0

        def planes():
            nonlocal objects
            for _, done in self.stream(volume, voxel_um, progress):
                for _, plane in done:
                    objects = max(objects, int(plane.max(initial=0)))
                    yield plane

        write_label_planes(target, planes(), volume.shape)
        return objects


def _voxel_text(voxel_um: tuple | None) -> str:
    return "unknown" if voxel_um is None else " x ".join(f"{v:g}" for v in voxel_um) + " um (Z Y X)"
