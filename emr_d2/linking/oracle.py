"""Oracle linking: the per-slice regions linked with the reference identities."""

from __future__ import annotations

import numpy as np


def link_with_reference(slice_maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Oracle linking: every region of every slice takes the reference label it overlaps most in
    that slice; regions that overlap no reference object become objects of their own.

    slice_maps: (Z, H, W) region maps (``SliceRegions.maps``); reference: (Z, H, W) labels.
    Returns (Z, H, W) int64 labels. Its SEG is the most any linking of these masks can reach
    (up to gap filling): the rest is lost by the masks themselves.
    """
    labels = np.zeros(slice_maps.shape, dtype=np.int64)
    next_label = int(reference.max()) + 1 if reference.size else 1
    for z in range(slice_maps.shape[0]):
        regions = slice_maps[z]
        count = int(regions.max())
        if count == 0:
            continue
        ref_ids, ref_codes = np.unique(reference[z], return_inverse=True)
        table = np.bincount(
            regions.ravel().astype(np.int64) * len(ref_ids) + ref_codes.ravel(),
            minlength=(count + 1) * len(ref_ids),
        ).reshape(count + 1, len(ref_ids))
        table[:, ref_ids == 0] = 0
        best = table.argmax(axis=1)
        lookup = np.where(table.max(axis=1) > 0, ref_ids[best], 0).astype(np.int64)
        unmatched = np.flatnonzero(lookup[1:] == 0) + 1
        lookup[unmatched] = next_label + np.arange(len(unmatched))
        next_label += len(unmatched)
        lookup[0] = 0
        labels[z] = lookup[regions]
    return labels
