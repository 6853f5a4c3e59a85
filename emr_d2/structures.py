"""NeighborMasks: the masks of the centre slice's objects in the neighbour slices of a window."""
from __future__ import annotations

import torch
from torchvision.ops import roi_align


class NeighborMasks:
    """Masks of K objects in the M neighbour slices of a window, for the neighbour-mask head.

    masks: (K, M, H, W) bool, object k in window neighbour m (the window positions other than
    the centre, in order); valid: (K, M) bool, False where the slice has no reference (outside
    the volume, or a slice-wise reference). Indexing (as detectron2's Instances does when it
    samples proposals) only composes an index into the K objects, so the full-size masks are
    kept once per image, not once per proposal.
    """

    def __init__(self, masks: torch.Tensor, valid: torch.Tensor, index: torch.Tensor | None = None):
        self.masks = masks
        self.valid = valid
        self.index = torch.arange(len(masks), device=masks.device) if index is None else index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item) -> "NeighborMasks":
        index = self.index[item]
        return NeighborMasks(self.masks, self.valid,
                             index.reshape(-1) if index.dim() == 0 else index)

    def to(self, *args, **kwargs) -> "NeighborMasks":
        return NeighborMasks(self.masks.to(*args, **kwargs), self.valid.to(*args, **kwargs),
                             self.index.to(*args, **kwargs))

    @property
    def device(self) -> torch.device:
        return self.masks.device

    def crop_and_resize(self, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each entry's masks cropped to its (R, 4) XYXY box and resized to size x size, as the
        centre slice's mask targets are: ((R, M, size, size) float targets, (R, M) bool valid)."""
        if len(self) == 0:
            return boxes.new_zeros((0, self.masks.shape[1], size, size)), self.valid[:0]
        rois = torch.cat([self.index.to(boxes)[:, None], boxes], dim=1)
        crops = roi_align(self.masks.to(boxes.dtype), rois, (size, size), 1.0, 0, aligned=True)
        return (crops >= 0.5).to(boxes.dtype), self.valid[self.index]
