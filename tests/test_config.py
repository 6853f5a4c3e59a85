"""Configs: every variant builds through detectron2's own recipe with the slices its INPUT keys
ask for; every enumerated key is checked at setup; tools stay outside the model's internals."""
import glob
import os
import re

import pytest
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from emr_d2.config import add_emr_config
from emr_d2.modeling.backbone import SharedSliceBackbone

from emr_d2.engine import setup_config
from helpers import CONFIGS, ROOT, TINY_MODEL, tiny_cfg
from test_bad_input import assert_one_line_error, run_tool

ALL_CONFIGS = sorted(f for f in glob.glob(os.path.join(CONFIGS, "**", "*.yaml"), recursive=True)
                     if not os.path.basename(f).startswith("Base-"))


@pytest.mark.parametrize("path", ALL_CONFIGS,
                         ids=[os.path.relpath(p, CONFIGS) for p in ALL_CONFIGS])
def test_detectron2_recipe_builds_the_configured_number_of_slices(path):
    cfg = get_cfg()
    add_emr_config(cfg)
    cfg.merge_from_file(path)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    n = cfg.INPUT.NUM_SLICES
    assert model.pixel_mean.numel() == model.pixel_std.numel() == n
    if isinstance(model.backbone, SharedSliceBackbone):
        assert (
            model.backbone.num_slices == n
            and model.backbone.slice_backbone.bottom_up.stem.conv1.in_channels == 1
        )
    else:
        assert model.backbone.bottom_up.stem.conv1.in_channels == n
    if cfg.MODEL.ROI_MASK_HEAD.NAME == "NeighborMaskHead":
        assert model.roi_heads.mask_head.predictor.out_channels == n


BAD_VALUES = [
    ("INPUT.SLICE_PADDING", "wrap"),
    ("INPUT.SLICE_OFFSETS", "[0, 1, 2]"),
    ("MODEL.INTENSITY.NAME", "log"),
    ("MODEL.FUSION.NAME", "se_global"),
    ("MODEL.FUSION.LATE.NAME", "max"),
    ("MODEL.FUSION.STATIC_INIT", "uniform"),
    ("MODEL.FUSION.LATE.PROPOSALS_FROM", "all"),
    ("TEST.CTC.LINKING", "hungarian"),
    ("TEST.CTC.CALIBRATION.LINKERS", "['iou', 'greedy']"),
    ("TEST.BEST_METRIC_MODE", "maximum"),
    ("SOLVER.OPTIMIZER", "LAMB"),
    ("MODEL.PIXEL_MEAN", "[0.1, 0.2]"),
    ("TEST.CTC.SPLIT_DEPTH", "1.5"),
    ("TEST.CTC.CALIBRATION.SPLIT_DEPTHS", "[0.0, -0.1]"),
]


@pytest.mark.parametrize("key,value", BAD_VALUES, ids=[k for k, _ in BAD_VALUES])
def test_a_bad_enumerated_value_fails_at_setup_naming_the_key(key, value):
    with pytest.raises(ValueError) as error:
        tiny_cfg("mlp_fusion", 3, [key, value])
    message = str(error.value)
    assert key in message and "\n" not in message, message


def test_pairings_are_checked_at_setup():
    with pytest.raises(ValueError,
                       match="MODEL.ROI_HEADS.NAME"):  # late-fusion backbone, standard heads
        tiny_cfg("late_fusion_center", 3, ["MODEL.ROI_HEADS.NAME", "StandardROIHeads"])
    with pytest.raises(ValueError, match="predicted"):  # predicted linking needs the neighbour head
        tiny_cfg("mlp_fusion", 3, ["TEST.CTC.LINKING", "predicted"])


def test_the_replaced_neighbor_masks_switch_is_ignored_off_and_refused_on(tmp_path):
    """Models trained before NeighborMaskHead was chosen by its name carry the switch in their
    config.yaml: off it loads, on it is one line naming the file and the replacement."""
    for value in ("false", "true"):
        (tmp_path / f"{value}.yaml").write_text(
            f"_BASE_: {os.path.join(CONFIGS, 'mlp_fusion.yaml')}\n"
            f"MODEL:\n  ROI_MASK_HEAD:\n    NEIGHBOR_MASKS: {value}\n")
    off = setup_config(str(tmp_path / "false.yaml"), TINY_MODEL + ["INPUT.NUM_SLICES", "3"])
    assert off.MODEL.ROI_MASK_HEAD.NAME == tiny_cfg("mlp_fusion", 3).MODEL.ROI_MASK_HEAD.NAME
    with pytest.raises(ValueError, match="true.yaml: MODEL.ROI_MASK_HEAD.NEIGHBOR_MASKS is"):
        setup_config(str(tmp_path / "true.yaml"))
    run = run_tool("train_net.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                   "MODEL.ROI_MASK_HEAD.NEIGHBOR_MASKS", "True", "OUTPUT_DIR", tmp_path)
    assert_one_line_error(run, "NEIGHBOR_MASKS", "NeighborMaskHead")


def test_train_net_rejects_a_misspelt_linking_before_reading_data(tmp_path):
    # the training dataset does not exist: the error must come from the config check, before it
    run = run_tool("train_net.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"),
                   "TEST.CTC.LINKING",
                   "overlapp", "DATASETS.TRAIN", "('NO_SUCH_DATA_01',)", "OUTPUT_DIR", tmp_path)
    assert_one_line_error(run, "TEST.CTC.LINKING", "overlapp")


def test_no_code_outside_modeling_calls_private_model_methods():
    private = re.compile(
        r"\.(_postprocess|_forward_box|_forward_mask|_move_to_current_device|_batch)\(|"
        r"\.(proposal_generator|roi_heads)\(")
    sources = [f for pattern in ("emr_d2/**/*.py", "tools/*.py", "benchmarks/*.py")
               for f in glob.glob(os.path.join(ROOT, pattern), recursive=True)
               if os.sep + "modeling" + os.sep not in f]
    offenders = [f"{os.path.relpath(f, ROOT)}: {line.strip()}" for f in sources for line in open(f)
                 if private.search(line)]
    assert not offenders, offenders
