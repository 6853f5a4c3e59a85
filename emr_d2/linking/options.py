"""The options of z-linking and their defaults (their one home: the config's TEST.CTC keys take
their defaults from here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .similarity import LINKERS

# The TEST.CTC key of every option.
CONFIG_KEYS = {
    "strategy": "LINKING",
    "threshold": "LINK_THRESHOLD",
    "look_back": "LOOK_BACK",
    "min_slices": "MIN_SLICES",
    "fill_gaps": "FILL_GAPS",
    "split_depth": "SPLIT_DEPTH",
    "extent_gate_um": "EXTENT_GATE_UM",
    "extent_trim_um": "EXTENT_TRIM_UM",
}


class LinkOptionError(ValueError):
    """A link option out of its range; ``option`` names the argument."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


@dataclass(frozen=True)
class LinkOptions:
    """How per-slice regions are linked into 3D objects (see :mod:`emr_d2.linking`).

    Attributes:
        strategy: a name of :data:`LINKERS`: "iou", "overlap" or "predicted" (the similarity a
            Hungarian assignment between slices maximises), or "connected" (3D components).
        threshold: least similarity for two slices' regions to be linked.
        look_back: how many missed slices an object may be continued across.
        min_slices: objects in fewer slices are dropped.
        fill_gaps: fill the slices that look-back bridged.
        split_depth: split an object at an interior minimum of its area along z at least this
            fraction below its largest area on both sides; 0: no split.
        extent_gate_um: with predicted z extents, never link detections whose extents are more
            than this apart; 0: off.
        extent_trim_um: with predicted z extents, remove end slices more than this beyond where
            the object's other detections say it ends; 0: off.

    ``LinkOptions.from_config(cfg)`` reads them from TEST.CTC; ``LinkOptions()`` (and
    ``from_config()``) are the defaults, which the config's keys and the Python API use.
    """

    strategy: str = "iou"
    threshold: float = 0.3
    look_back: int = 1
    min_slices: int = 2
    fill_gaps: bool = True
    split_depth: float = 0.15  # what the calibration chose most often
    extent_gate_um: float = 0.0
    extent_trim_um: float = 0.0

    def __post_init__(self):
        if self.strategy not in LINKERS:
            raise LinkOptionError("strategy", f"{self.strategy!r} is not one of {tuple(LINKERS)}")
        if self.look_back < 0:
            raise LinkOptionError("look_back", f"{self.look_back} must not be negative")
        if self.min_slices < 1:
            raise LinkOptionError("min_slices", f"{self.min_slices} must be at least 1")
        if not 0 <= self.split_depth < 1:
            raise LinkOptionError(
                "split_depth", f"{self.split_depth} must be a fraction in [0, 1) (0: no split)"
            )
        for name in ("extent_gate_um", "extent_trim_um"):
            if getattr(self, name) < 0:
                raise LinkOptionError(name, f"{getattr(self, name)} must not be negative (0: off)")

    @classmethod
    def from_config(cls, cfg=None) -> LinkOptions:
        """The options of a config's TEST.CTC keys; without a config, the defaults."""
        if cfg is None:
            return cls()
        return cls(**{option: cfg.TEST.CTC[key] for option, key in CONFIG_KEYS.items()})

    def replace(self, **changes) -> LinkOptions:
        """A copy with some options changed."""
        return dataclasses.replace(self, **changes)


def resolve_options(options: LinkOptions | None, changes: dict) -> LinkOptions:
    """``options`` (the defaults when None) with ``changes`` applied."""
    options = LinkOptions() if options is None else options
    return options.replace(**changes) if changes else options
