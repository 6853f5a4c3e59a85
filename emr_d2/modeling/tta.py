"""Test-time augmentation over the flips and 90-degree rotations of the slice plane.

Each transform is one of the eight symmetries of a square (the dihedral group): the (N, H, W)
slice stack is rotated by multiples of 90 degrees and maybe flipped, the model detects in the
transformed stack, and the boxes are mapped back. Boxes from all transforms are merged by
non-maximum suppression (as detectron2's ``GeneralizedRCNNWithTTA`` merges its flipped and
rescaled detections); the mask heads then run on the merged boxes under every transform, and their
box-relative outputs (masks, neighbour masks: (R, C, M, M) probabilities; z extents) are mapped
back and averaged. Symmetries map a box onto a box and its M x M mask grid onto the transformed
box's grid, so averaging in the grid is exact.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

# Box-relative outputs of the mask heads that the merge averages: (R, C, M, M) grids, mapped
# back before averaging, and per-instance values that the slice-plane symmetries leave alone.
GRID_FIELDS = ("pred_masks", "pred_neighbor_masks")
INVARIANT_FIELDS = ("pred_z_extent",)


@dataclass(frozen=True)
class PlaneSymmetry:
    """Rotate the last two (H, W) axes by ``quarter_turns`` x 90 degrees (``torch.rot90``, from
    the first axis towards the second), then flip the columns if ``flip``."""

    name: str
    quarter_turns: int
    flip: bool

    def apply_image(self, image: torch.Tensor) -> torch.Tensor:
        """(..., H, W) -> (..., H', W'), also for box-relative (R, C, M, M) mask grids."""
        image = torch.rot90(image, self.quarter_turns, dims=(-2, -1))
        return image.flip(-1) if self.flip else image

    def invert_image(self, image: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`apply_image`."""
        image = image.flip(-1) if self.flip else image
        return torch.rot90(image, -self.quarter_turns, dims=(-2, -1))

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(H', W') of a transformed (H, W) image."""
        return (size[1], size[0]) if self.quarter_turns % 2 else tuple(size)

    def apply_boxes(self, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(R, 4) XYXY boxes in an (H, W) image -> the same boxes in the transformed image."""
        x0, y0, x1, y1 = boxes.unbind(-1)
        height, width = size
        for _ in range(self.quarter_turns % 4):  # one turn: (x, y) -> (y, W - x), size (W, H)
            x0, y0, x1, y1 = y0, width - x1, y1, width - x0
            height, width = width, height
        if self.flip:
            x0, x1 = width - x1, width - x0
        return torch.stack([x0, y0, x1, y1], dim=-1)

    def invert_boxes(self, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(R, 4) XYXY boxes in the transformed image of an (H, W) image -> boxes in the (H, W)
        image: undo the flip, then turn back."""
        size = self.output_size(size)
        if self.flip:
            boxes = PlaneSymmetry("flip", 0, True).apply_boxes(boxes, size)
        return PlaneSymmetry("back", -self.quarter_turns % 4, False).apply_boxes(boxes, size)


PLANE_SYMMETRIES = {s.name: s for s in (
    PlaneSymmetry("identity", 0, False), PlaneSymmetry("rot90", 1, False),
    PlaneSymmetry("rot180", 2, False), PlaneSymmetry("rot270", 3, False),
    PlaneSymmetry("hflip", 0, True), PlaneSymmetry("vflip", 2, True),
    PlaneSymmetry("transpose", 3, True), PlaneSymmetry("antitranspose", 1, True),
)}


def plane_symmetries(names: Sequence[str]) -> list[PlaneSymmetry]:
    """The symmetries of these names, in this order; a one-line error names an unknown one."""
    unknown = [n for n in names if n not in PLANE_SYMMETRIES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"{list(names)}: give one or more different names of "
                         f"{', '.join(PLANE_SYMMETRIES)}")
    return [PLANE_SYMMETRIES[n] for n in names]


def merge_detections(detections: Sequence[Sequence[Instances]],
                     transforms: Sequence[PlaneSymmetry], image_sizes: Sequence[tuple[int, int]],
                     nms_threshold: float, max_detections: int) -> list[Instances]:
    """Boxes found under every transform, mapped back and merged by class-wise NMS.

    Args:
        detections: per transform, per image: Instances in the transformed image with
            ``pred_boxes``, ``scores``, ``pred_classes``.
        transforms: the transform of each entry of ``detections``.
        image_sizes: per image, its (H, W) before any transform.
        nms_threshold: box IoU above which the lower-scoring box is dropped.
        max_detections: most boxes kept per image (highest scores first).

    Returns:
        per image, Instances of size ``image_sizes[i]`` with ``pred_boxes``, ``scores``,
        ``pred_classes``.
    """
    merged = []
    for i, size in enumerate(image_sizes):
        found = [per_image[i] for per_image in detections]
        boxes = torch.cat([t.invert_boxes(d.pred_boxes.tensor, size)
                           for t, d in zip(transforms, found)])
        scores = torch.cat([d.scores for d in found])
        classes = torch.cat([d.pred_classes for d in found])
        keep = batched_nms(boxes, scores, classes, nms_threshold)[:max_detections]
        merged.append(Instances(tuple(size), pred_boxes=Boxes(boxes[keep]), scores=scores[keep],
                                pred_classes=classes[keep]))
    return merged


def average_mask_outputs(merged: Sequence[Instances], transforms: Sequence[PlaneSymmetry],
                         predict_masks: Callable[[PlaneSymmetry, list[Instances]],
                                                 list[Instances]]) -> list[Instances]:
    """Run the mask heads on the merged boxes under every transform and average their outputs.

    Args:
        merged: per image, the merged detections (:func:`merge_detections`).
        transforms: the transforms to average over.
        predict_masks: (transform, per image Instances with ``pred_boxes`` / ``pred_classes`` in
            the transformed image) -> the same Instances with the heads' box-relative outputs
            (:data:`GRID_FIELDS` as (R, C, M, M) probabilities, :data:`INVARIANT_FIELDS`).

    Returns:
        ``merged`` with the averaged outputs added, each in the untransformed image.
    """
    sums: list[dict[str, torch.Tensor]] = [{} for _ in merged]
    for transform in transforms:
        moved = []
        for item in merged:
            boxes = transform.apply_boxes(item.pred_boxes.tensor, item.image_size)
            moved.append(Instances(transform.output_size(item.image_size),
                                   pred_boxes=Boxes(boxes), pred_classes=item.pred_classes))
        for total, result in zip(sums, predict_masks(transform, moved)):
            for name in GRID_FIELDS + INVARIANT_FIELDS:
                if result.has(name):
                    value = result.get(name)
                    value = transform.invert_image(value) if name in GRID_FIELDS else value
                    total[name] = total[name] + value if name in total else value
    for item, total in zip(merged, sums):
        for name, value in total.items():
            item.set(name, value / len(transforms))
    return list(merged)
