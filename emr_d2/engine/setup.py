"""Config setup shared by the command-line tools."""
from __future__ import annotations

import contextlib
import difflib
import os
import re

import torch
from detectron2.config import CfgNode, get_cfg

from ..calibration import apply_calibrated_linking
from ..config import add_emr_config
from .config_checks import check_config, check_replaced_keys
from ..data.catalog import configure_splits


def setup_config(config_file: str | None = None, opts: list[str] | None = None, freeze: bool = True,
                 calibrated_linking: bool = True) -> CfgNode:
    """detectron2 config with the emr_d2 keys, a YAML file (with ``_BASE_``) and KEY VALUE
    overrides; the linking calibrated for MODEL.WEIGHTS applied (unless ``calibrated_linking`` is
    False; see :func:`apply_calibrated_linking`), every key checked (:func:`check_config`), dataset
    splits configured, and MODEL.DEVICE "cuda" (detectron2's default) replaced by "cpu" where no
    GPU is present."""
    cfg = get_cfg()
    add_emr_config(cfg)
    check_replaced_keys(config_file, list(opts or []))
    if config_file:
        with _unknown_keys_named(cfg, f"{config_file}: "):
            cfg.merge_from_file(config_file)
    with _unknown_keys_named(cfg):
        cfg.merge_from_list(list(opts or []))
    if calibrated_linking:
        apply_calibrated_linking(cfg, list(opts or []))
    check_config(cfg)
    configure_splits(cfg)
    if cfg.MODEL.DEVICE == "cuda" and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg


def config_keys(node: CfgNode, prefix: str = "") -> list[str]:
    """Every leaf key of a config, dotted (``MODEL.ROI_HEADS.NAME``)."""
    keys = []
    for name, value in node.items():
        keys += (config_keys(value, f"{prefix}{name}.") if isinstance(value, CfgNode)
                 else [f"{prefix}{name}"])
    return keys


@contextlib.contextmanager
def _unknown_keys_named(cfg: CfgNode, where: str = ""):
    """Turn yacs's error for a key the config does not have into one line that names the key and
    the nearest keys it has (a misspelling's likely intent)."""
    try:
        yield
    except (KeyError, AssertionError) as e:
        match = re.search(r"Non-existent (?:config )?key: (\S+)", str(e))
        if not match:
            raise
        key = match.group(1)
        near = difflib.get_close_matches(key, config_keys(cfg), n=3, cutoff=0.75)
        raise KeyError(f"{where}{key} is not a config key"
                       + (f"; did you mean {' or '.join(near)}?" if near else "")) from None


def config_variants(config_dir: str) -> list[str]:
    """Names of the model variants in a config folder: every YAML file but the Base-* ones,
    baseline_2d first, then alphabetically."""
    names = [os.path.splitext(f)[0] for f in os.listdir(config_dir)
             if f.endswith(".yaml") and not f.startswith("Base-")]
    return sorted(names, key=lambda name: (name != "baseline_2d", name))
