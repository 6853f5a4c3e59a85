"""z-linking: per-slice instance masks with scores -> one uint16 3D label volume.

1. Every slice's masks are pasted in ascending score order, so where masks overlap the higher
   score wins (:func:`paste_slice`, :func:`paste_volume`).
2. The regions are linked across z (:class:`LinkOptions`): by a similarity between slices that
   a Hungarian assignment maximises (:data:`SIMILARITIES`: region IoU, overlap, or the IoU of
   each region's predicted neighbour masks), or as 3D connected components ("connected").
3. Linked objects are split at necks of their area along z, trimmed to their predicted z
   extents, filtered by length and gap-filled (:mod:`.tracks`), then numbered 1..K.

Whole volumes (:func:`link_slices`, :func:`link_volume`) and slice-by-slice prediction
(:func:`open_linker`) run the same linkers, so they give the same labels.

    from emr_d2.linking import LinkOptions, link_volume
    linked = link_volume(predictions, shape, options=LinkOptions.from_config(cfg))
"""

from .linkers import (
    ConnectedLinker,
    LinkedVolume,
    ObjectNumbering,
    SliceLinker,
    StreamingLinker,
    link_slices,
    link_volume,
    open_linker,
)
from .options import CONFIG_KEYS, LinkOptionError, LinkOptions
from .oracle import link_with_reference
from .regions import (
    SlicePrediction,
    SliceRegions,
    paste_prediction,
    paste_slice,
    paste_volume,
    region_overlaps,
    slice_prediction,
)
from .similarity import LINKERS, SIMILARITIES

__all__ = [
    "CONFIG_KEYS",
    "LINKERS",
    "SIMILARITIES",
    "ConnectedLinker",
    "LinkOptionError",
    "LinkOptions",
    "LinkedVolume",
    "ObjectNumbering",
    "SliceLinker",
    "SlicePrediction",
    "SliceRegions",
    "StreamingLinker",
    "link_slices",
    "link_volume",
    "link_with_reference",
    "open_linker",
    "paste_prediction",
    "paste_slice",
    "paste_volume",
    "region_overlaps",
    "slice_prediction",
]
