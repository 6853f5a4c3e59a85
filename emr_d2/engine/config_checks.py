"""The checks of a config's values, called by engine setup before any work: every enumerated
emr_d2 key and the pairings between keys, each checked once, with one-line errors naming the key.
(The keys themselves, with their defaults and meaning, are defined in :mod:`emr_d2.config`.)"""
from __future__ import annotations

from detectron2.config import CfgNode as CN
from detectron2.modeling import ROI_HEADS_REGISTRY

from ..config import REPLACED_SWITCHES
from ..data.window import PADDING_MODES
from ..linking import CONFIG_KEYS, LinkOptionError, LinkOptions
from ..modeling.backbone import LATE_FUSION_BACKBONES, PROPOSAL_SOURCES
from ..modeling.fusion.base import FUSION_REGISTRY, STATIC_INITS
from ..modeling.intensity import INTENSITY_MODES
from ..modeling.point_rend import POINT_REND_HEADS
from ..modeling.rcnn import slice_stats
from ..modeling.roi_heads import SliceFusionROIHeads, SliceStackROIHeads, predicts_neighbor_masks
from ..modeling.tta import plane_symmetries
from .amp import PRECISIONS


def check_replaced_keys(config_file: str | None, opts: list[str]) -> None:
    """Raise a one-line ValueError where a config file (with its ``_BASE_`` files) or a KEY VALUE
    override turns on a switch of REPLACED_SWITCHES; off, such a switch is ignored."""
    on = ("true", "1", "yes")
    pairs = dict(zip(opts[0::2], opts[1::2]))
    loaded = CN.load_yaml_with_base(config_file, allow_unsafe=True) if config_file else {}
    for key, replacement in REPLACED_SWITCHES.items():
        value = loaded
        for part in key.split("."):
            value = value.get(part, {}) if isinstance(value, dict) else {}
        where = f"{config_file}: " if value is True else ""
        if value is True or str(pairs.get(key, "")).lower() in on:
            raise ValueError(f"{where}{key} is replaced by {replacement}: set that instead")


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{key}: {value!r} is not one of {list(allowed)}")


def _check_linking(cfg: CN) -> None:
    """TEST.CTC's link options and every value of its calibration grid, checked by
    :class:`LinkOptions` and reported here in the words of the keys."""
    try:
        options = LinkOptions.from_config(cfg)
    except LinkOptionError as e:
        raise ValueError(f"TEST.CTC.{CONFIG_KEYS[e.option]}: {e.message}") from None
    grid = cfg.TEST.CTC.CALIBRATION
    for key, option in (("LINKERS", "strategy"), ("THRESHOLDS", "threshold"),
                        ("LOOK_BACKS", "look_back"),
                        ("MIN_SLICES", "min_slices"), ("SPLIT_DEPTHS", "split_depth"),
                        ("EXTENT_GATES_UM", "extent_gate_um"),
                        ("EXTENT_TRIMS_UM", "extent_trim_um")):
        for value in grid[key]:
            try:
                options.replace(**{option: value})
            except LinkOptionError as e:
                raise ValueError(f"TEST.CTC.CALIBRATION.{key}: {e.message}") from None
    if "predicted" in [cfg.TEST.CTC.LINKING, *grid.LINKERS] and not predicts_neighbor_masks(cfg):
        raise ValueError(
            "TEST.CTC.LINKING: 'predicted' needs MODEL.ROI_MASK_HEAD.NAME NeighborMaskHead "
            "and INPUT.NUM_SLICES > 1")


def _check_point_rend(cfg: CN, late_heads: bool) -> None:
    """The PointRend mask heads: which fusion family takes which, and what they need."""
    head = cfg.MODEL.ROI_MASK_HEAD
    if head.NAME not in POINT_REND_HEADS:
        return
    key = f"MODEL.ROI_MASK_HEAD.NAME: {head.NAME!r}"
    if head.POOLER_TYPE:
        raise ValueError(
            f"{key} pools its own features: set MODEL.ROI_MASK_HEAD.POOLER_TYPE to \"\"")
    if late_heads != (head.NAME == "SliceFusionPointRendMaskHead"):
        raise ValueError(
            f"{key}: late fusion (SliceFusionROIHeads) takes SliceFusionPointRendMaskHead, "
            "every other fusion family PointRendMaskHead or ImplicitPointRendMaskHead")
    if head.POINT_HEAD_ON and cfg.MODEL.POINT_HEAD.NUM_CLASSES != cfg.MODEL.ROI_HEADS.NUM_CLASSES:
        raise ValueError(
            f"MODEL.POINT_HEAD.NUM_CLASSES: {cfg.MODEL.POINT_HEAD.NUM_CLASSES} must equal "
            f"MODEL.ROI_HEADS.NUM_CLASSES ({cfg.MODEL.ROI_HEADS.NUM_CLASSES})")


def check_config(cfg: CN) -> None:
    """Check every enumerated emr_d2 key and the pairings between them; raise ValueError with one
    line naming the key, the value and what is allowed. Called by every tool before any work."""
    n = cfg.INPUT.NUM_SLICES
    if n < 1:
        raise ValueError(f"INPUT.NUM_SLICES: {n} must be at least 1")
    offsets = list(cfg.INPUT.SLICE_OFFSETS)
    if offsets and (len(offsets) != n or sorted(set(offsets)) != offsets or offsets[n // 2] != 0):
        raise ValueError(
            f"INPUT.SLICE_OFFSETS: {offsets} must be {n} (INPUT.NUM_SLICES) increasing "
            f"integers with 0 at position {n // 2}")
    if offsets and cfg.INPUT.SLICE_SPACING_UM > 0:
        raise ValueError("INPUT.SLICE_SPACING_UM: give either it or INPUT.SLICE_OFFSETS, not both")
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        slice_stats(cfg.MODEL[key], n, f"MODEL.{key}")
    try:
        plane_symmetries(cfg.TEST.AUG.TRANSFORMS)
    except ValueError as e:
        raise ValueError(f"TEST.AUG.TRANSFORMS: {e}") from None
    if cfg.INPUT.PIXEL_SIZE_UM < 0:
        raise ValueError(f"INPUT.PIXEL_SIZE_UM: {cfg.INPUT.PIXEL_SIZE_UM} must not be negative")
    if cfg.INPUT.SLICE_SPACING_UM < 0:
        raise ValueError(
            f"INPUT.SLICE_SPACING_UM: {cfg.INPUT.SLICE_SPACING_UM} must not be negative")
    if not 0.0 <= cfg.INPUT.CENTER_DEGRADE.PROB <= 1.0:
        raise ValueError(
            f"INPUT.CENTER_DEGRADE.PROB: {cfg.INPUT.CENTER_DEGRADE.PROB} is not a probability")
    _choice("INPUT.SLICE_PADDING", cfg.INPUT.SLICE_PADDING, PADDING_MODES)
    _choice("MODEL.INTENSITY.NAME", cfg.MODEL.INTENSITY.NAME, INTENSITY_MODES)
    fusion = cfg.MODEL.FUSION
    fusion_names = sorted(name for name, _ in FUSION_REGISTRY)
    _choice("MODEL.FUSION.NAME", fusion.NAME, fusion_names)
    _choice("MODEL.FUSION.LATE.NAME", fusion.LATE.NAME, fusion_names)
    _choice("MODEL.FUSION.STATIC_INIT", fusion.STATIC_INIT, STATIC_INITS)
    _choice("MODEL.FUSION.LATE.PROPOSALS_FROM", fusion.LATE.PROPOSALS_FROM, PROPOSAL_SOURCES)
    late_backbone = cfg.MODEL.BACKBONE.NAME in LATE_FUSION_BACKBONES
    late_heads = issubclass(ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME), SliceFusionROIHeads)
    if late_backbone != late_heads:
        raise ValueError(
            f"MODEL.ROI_HEADS.NAME: {cfg.MODEL.ROI_HEADS.NAME!r} with MODEL.BACKBONE.NAME "
            f"{cfg.MODEL.BACKBONE.NAME!r}: late fusion needs build_late_fusion_backbone "
            "together with SliceFusionROIHeads")
    if fusion.CENTER_OUTPUTS and cfg.MODEL.BACKBONE.NAME != "build_early_fusion_backbone":
        raise ValueError(f"MODEL.FUSION.CENTER_OUTPUTS: {list(fusion.CENTER_OUTPUTS)} needs "
                         "build_early_fusion_backbone (other families have no unfused centre "
                         "features there, or pass every slice's)")
    _check_point_rend(cfg, late_heads)
    _check_linking(cfg)
    if cfg.MODEL.Z_EXTENT.ENABLED:
        if cfg.MODEL.Z_EXTENT.SCALE_UM <= 0:
            raise ValueError(
                f"MODEL.Z_EXTENT.SCALE_UM: {cfg.MODEL.Z_EXTENT.SCALE_UM} must be positive")
        if not issubclass(ROI_HEADS_REGISTRY.get(cfg.MODEL.ROI_HEADS.NAME), SliceStackROIHeads):
            raise ValueError(f"MODEL.Z_EXTENT.ENABLED needs an ROI head with the z-extent branch "
                             "(SliceStackROIHeads or SliceFusionROIHeads), not "
                             f"{cfg.MODEL.ROI_HEADS.NAME!r}")
        if not cfg.MODEL.MASK_ON:
            raise ValueError(
                "MODEL.Z_EXTENT.ENABLED reads the mask pooler's features: it needs MODEL.MASK_ON")
    if cfg.TEST.CTC.CALIBRATE_LINKING and not cfg.DATASETS.VAL:
        raise ValueError("TEST.CTC.CALIBRATE_LINKING: True needs validation data in DATASETS.VAL")
    _choice("TEST.BEST_METRIC_MODE", cfg.TEST.BEST_METRIC_MODE, ("max", "min"))
    _choice("SOLVER.OPTIMIZER", cfg.SOLVER.OPTIMIZER.upper(), ("SGD", "ADAMW"))
    _choice("SOLVER.AMP.PRECISION", cfg.SOLVER.AMP.PRECISION, PRECISIONS)
