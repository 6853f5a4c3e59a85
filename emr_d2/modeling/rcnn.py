"""SliceStackRCNN: detectron2's GeneralizedRCNN on N-slice stacks, with an intensity front-end,
the neighbour-mask head, and inference from per-slice features shared between windows."""
from __future__ import annotations

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling import (META_ARCH_REGISTRY, GeneralizedRCNN, build_backbone,
                                 build_proposal_generator,
                                 build_roi_heads)
from detectron2.structures import ImageList, Instances

from .backbone import SharedSliceBackbone
from .intensity import build_intensity_front_end
from .tta import PlaneSymmetry, average_mask_outputs, merge_detections


def slice_stats(values, num_slices: int, key: str) -> list[float]:
    """PIXEL_MEAN / PIXEL_STD for N input slices: one value for every slice, or N values."""
    values = list(values)
    if len(values) == 1:
        return values * num_slices
    if len(values) != num_slices:
        raise ValueError(
            f"{key} has {len(values)} values but INPUT.NUM_SLICES is {num_slices}: give one "
            f"value (used for every slice) or exactly {num_slices}")
    return values


def paste_neighbor_masks(instances: Instances, threshold: float = 0.5) -> None:
    """(R, M, S, S) ``pred_neighbor_masks`` probabilities -> (R, M, H, W) bool masks in the
    image of ``instances`` (in place; boxes already at the output size)."""
    probabilities = instances.pred_neighbor_masks
    pasted = [
        paste_masks_in_image(probabilities[:, m], instances.pred_boxes, instances.image_size,
        threshold)
        for m in range(probabilities.shape[1])]
    instances.pred_neighbor_masks = torch.stack(pasted, dim=1)


@META_ARCH_REGISTRY.register()
class SliceStackRCNN(GeneralizedRCNN):
    """GeneralizedRCNN whose inputs' ``image`` is an (N, H, W) stack of normalised slices.

    The number of slices is INPUT.NUM_SLICES (the backbone is built for that many input slices,
    MODEL.PIXEL_MEAN / PIXEL_STD hold one value for all slices or one per slice). The learnable
    intensity front-end (MODEL.INTENSITY) acts on the normalised stack before the pixel
    statistics and the backbone. With the neighbour-mask head (MODEL.ROI_MASK_HEAD.NAME
    NeighborMaskHead) outputs carry ``pred_neighbor_masks`` (R, N - 1, H, W). A shared per-slice
    backbone lets whole-volume inference compute each slice's features once
    (:meth:`slice_features`) and run only fusion and heads per window
    (:meth:`inference_from_slice_features`). Test-time augmentation (:meth:`inference_with_tta`,
    or :meth:`heads_with_tta` from cached features) merges the predictions of the stacks under
    symmetries of the slice plane (:mod:`.tta`).
    """

    @configurable
    def __init__(self, *, intensity: torch.nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.intensity = intensity

    @classmethod
    def from_config(cls, cfg):
        num_slices = cfg.INPUT.NUM_SLICES
        backbone = build_backbone(cfg, ShapeSpec(channels=num_slices))
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, backbone.output_shape()),
            "roi_heads": build_roi_heads(cfg, backbone.output_shape()),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": slice_stats(cfg.MODEL.PIXEL_MEAN, num_slices, "MODEL.PIXEL_MEAN"),
            "pixel_std": slice_stats(cfg.MODEL.PIXEL_STD, num_slices, "MODEL.PIXEL_STD"),
            "intensity": build_intensity_front_end(cfg),
        }

    def preprocess_image(self, batched_inputs: list[dict]) -> ImageList:
        images = [self.intensity(self._move_to_current_device(x["image"])) for x in batched_inputs]
        return self._batch([(x - self.pixel_mean) / self.pixel_std for x in images])

    def _batch(self, images: list[torch.Tensor]) -> ImageList:
        return ImageList.from_tensors(
            images, self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints
        )

    def inference(self, batched_inputs: list[dict], detected_instances=None,
                  do_postprocess: bool = True):
        if detected_instances is not None:
            return super().inference(batched_inputs, detected_instances, do_postprocess)
        features, image_sizes = self.fused_features(batched_inputs)
        return self._heads(features, image_sizes, batched_inputs, do_postprocess)

    def fused_features(self, batched_inputs: list[dict]) -> tuple[dict, list[tuple[int, int]]]:
        """The backbone's features of the inputs' (N, H, W) stacks and the image sizes the heads
        see."""
        images = self.preprocess_image(batched_inputs)
        return self.backbone(images.tensor), images.image_sizes

    def inference_with_tta(self, batched_inputs: list[dict],
                           transforms: list[PlaneSymmetry]) -> list[dict]:
        """:meth:`inference` of every input stack under every transform, merged
        (:meth:`heads_with_tta`)."""
        views = [(t, *self.fused_features([{**x, "image": t.apply_image(x["image"])}
                                           for x in batched_inputs]))
                 for t in transforms]
        return self.heads_with_tta(views, batched_inputs)

    def heads_with_tta(self, views: list[tuple[PlaneSymmetry, dict, list[tuple[int, int]]]],
                       batched_inputs: list[dict]) -> list[dict]:
        """Test-time augmentation from fused features (:mod:`.tta`): detections under every
        transform merged by NMS, then the mask heads' outputs on the merged boxes averaged.

        views: per transform, (transform, fused features of the transformed stacks, their image
        sizes); batched_inputs: B dicts with the output "height" and "width".
        """
        transforms = [t for t, _, _ in views]
        detections = []
        for _, features, image_sizes in views:
            proposals, _ = self.proposal_generator(self._sizes_only(features, image_sizes),
                                                   features, None)
            detections.append(self.roi_heads.detect_boxes(features, proposals))
        first, _, sizes = views[0]
        image_sizes = [first.output_size(s) for s in sizes]  # back in the untransformed frame
        predictor = self.roi_heads.box_predictor
        merged = merge_detections(detections, transforms, image_sizes, predictor.test_nms_thresh,
                                  predictor.test_topk_per_image)
        features_of = {t.name: features for t, features, _ in views}
        results = average_mask_outputs(
            merged, transforms,
            lambda t, instances: self.roi_heads.forward_with_given_boxes(features_of[t.name],
                                                                         instances))
        return self._postprocess_outputs(results, batched_inputs, image_sizes)

    # ------------------------------------------------------------------ shared slice features
    @property
    def shares_slice_features(self) -> bool:
        """Whether windows can share per-slice features: the backbone runs on each slice alone
        (early / late fusion, attention) and every slice is normalised alike. Channel fusion
        mixes the slices in its first convolution and cannot share."""
        return (
            isinstance(self.backbone, SharedSliceBackbone)
            and bool((self.pixel_mean == self.pixel_mean.flatten()[0]).all())
            and bool((self.pixel_std == self.pixel_std.flatten()[0]).all())
        )

    def slice_features(
        self, slices: torch.Tensor
    ) -> tuple[list[dict[str, torch.Tensor]], tuple[int, int]]:
        """(S, H, W) normalised slices -> per slice {level: (C, h, w)} backbone features, and the
        image size the heads see. Needs :attr:`shares_slice_features`."""
        x = self.intensity(self._move_to_current_device(slices))[:, None]
        images = self._batch(list((x - self.pixel_mean[0]) / self.pixel_std[0]))
        features = self.backbone.forward_slices(images.tensor)  # {level: (S, 1, C, h, w)}
        per_slice = [{level: f[k, 0] for level, f in features.items()} for k in range(len(slices))]
        return per_slice, images.image_sizes[0]

    def inference_from_slice_features(self, windows: list[list[dict[str, torch.Tensor]]],
                                      image_size: tuple[int, int],
                                      batched_inputs: list[dict]) -> list[dict]:
        """Predict the centre slice of each window from its slices' features (as from
        :meth:`slice_features`): fusion, proposals, heads and postprocessing, as :meth:`inference`.

        windows: B lists of N per-slice feature dicts; batched_inputs: B dicts with the output
        "height" and "width".
        """
        return self._heads(self.fuse_slice_features(windows), [image_size] * len(windows),
                           batched_inputs, True)

    def fuse_slice_features(self, windows: list[list[dict[str, torch.Tensor]]]) -> dict:
        """B windows of N per-slice feature dicts (as from :meth:`slice_features`) -> the fused
        features {level: (B, C, h, w)} the heads read."""
        levels = windows[0][0].keys()
        stacked = {level: torch.stack([torch.stack([s[level] for s in w]) for w in windows])
                   for level in levels}
        return self.backbone.combine(stacked)

    def _heads(self, features: dict, image_sizes: list, batched_inputs: list[dict],
               do_postprocess: bool):
        images = self._sizes_only(features, image_sizes)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)
        if not do_postprocess:
            return results
        return self._postprocess_outputs(results, batched_inputs, image_sizes)

    @staticmethod
    def _sizes_only(features: dict, image_sizes: list) -> ImageList:
        # the proposal generator and ROI heads read only the image sizes of the ImageList
        device = next(iter(features.values())).device
        return ImageList(torch.empty((len(image_sizes), 0, 0), device=device), image_sizes)

    @staticmethod
    def _postprocess_outputs(results: list[Instances], batched_inputs: list[dict],
                             image_sizes: list) -> list[dict]:
        """Instances at the model's input size -> {"instances"} at each input's output size,
        masks and neighbour masks pasted into the image."""
        processed = GeneralizedRCNN._postprocess(results, batched_inputs, image_sizes)
        for output in processed:
            if output["instances"].has("pred_neighbor_masks"):
                paste_neighbor_masks(output["instances"])
        return processed
