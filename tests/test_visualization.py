"""Pictures read without the code: physical aspect, labelled axes, honest limits, plain titles."""
import io
import json

import numpy as np
import pytest

from emr_d2 import visualization as vis
from benchmark_runner import METRICS, plot_results


def ellipsoid_volume():
    z, y, x = np.ogrid[:12, :48, :40]
    labels = (((z - 6) / 4) ** 2 + ((y - 24) / 12) ** 2 + ((x - 20) / 10) ** 2
              <= 1).astype(np.uint16)
    raw = (labels * 500 + 100).astype(np.uint16)
    return raw, labels


def test_orthogonal_views_have_the_physical_aspect_labelled_z_and_cut_lines():
    raw, labels = ellipsoid_volume()
    fig = vis.plot_orthogonal(raw, labels, labels, io.BytesIO(), voxel_size=(1.0, 0.25, 0.2))
    xy, xz, yz = fig.axes[:3]
    assert xz.get_aspect() == pytest.approx(1.0
                                            / 0.2) and yz.get_aspect() == pytest.approx(1.0 / 0.25)
    assert xy.get_aspect() == 1.0
    assert "z" in xz.get_ylabel() and "z" in yz.get_ylabel() and "x" in xy.get_xlabel()
    horizontal = [line.get_ydata()[0] for line in xz.lines
                  if line.get_ydata()[0] == line.get_ydata()[1]]
    assert len(xy.lines) == 2 and horizontal == [6]  # the XY section's cut, at the centre slice
    assert "1 x 0.25 x 0.2 um" in fig._suptitle.get_text()
    unknown = vis.plot_orthogonal(raw, None, labels, io.BytesIO())
    assert unknown.axes[1].get_aspect() == 1.0 and "unknown" in unknown._suptitle.get_text()


def test_training_curves_hold_every_value_and_draw_one_evaluation_as_a_point(tmp_path):
    rows = [{"iteration": i, "total_loss": 2.0 / (i + 1), "loss_mask": 0.5 / (i + 1)}
            for i in range(0, 300, 20)]
    rows.append({"iteration": 299, "ctc/SEG": 0.87})
    path = tmp_path / "metrics.json"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    fig = vis.plot_training_curves(str(path), io.BytesIO())
    losses, evaluation = fig.axes[:2]
    assert losses.get_xlabel() == "iteration" and losses.get_ylabel() and evaluation.get_ylabel()
    low, high = losses.get_ylim()
    assert low <= min(r.get("loss_mask", 9) for r in rows) and high >= 2.0
    assert evaluation.get_xlim()[0] <= 0 and evaluation.get_xlim()[1] >= 299
    low, high = evaluation.get_ylim()
    assert low < 0.87 < high
    assert [len(line.get_xdata()) for line in evaluation.lines] == [1]
    assert "0.870" in evaluation.texts[0].get_text()
    assert [t.get_text() for t in evaluation.get_legend().get_texts()] == ["SEG (CTC, 3D) = 0.870"]


def test_fusion_weights_are_titled_in_plain_words():
    assert vis.fusion_title("backbone.fusion.modules_by_level.shared",
                            "MLPFusion").startswith("early fusion: MLPFusion")
    assert "FPN level p3" in vis.fusion_title("backbone.fusion.modules_by_level.p3",
                                              "CrossSliceAttentionFusion")
    assert "mask head" in vis.fusion_title("roi_heads.mask_pooler.fusion", "MeanFusion")
    weights = {"early fusion: MLPFusion\nat every fused FPN level (one module)":
               {"interior": np.array([0.2, 0.6, 0.2]), "edge": np.array([0.1, 0.8, 0.1])}}
    fig = vis.plot_fusion_weights(weights, io.BytesIO())
    ax = fig.axes[0]
    assert ax.get_ylim() == (0.0,
                             1.0) and "centre" in [t.get_text() for t in ax.get_xticklabels()][1]
    note = fig._suptitle.get_text()
    # words, not config keys
    assert "edge slices" in note and "interior" in note and "INPUT." not in note
    assert [t.get_text()
            for t in ax.get_legend().get_texts()] == ["interior windows", "edge windows"]


def test_benchmark_plot_draws_points_with_error_bars_and_names_the_metric():
    rows = [
        {"config": c, "seed": s,
        **{m: v + 0.01 * s for m in ("SEG", "SEG_calibrated", "DET_calibrated",
                                                                 "OP_CSB_calibrated",
                                     "SEG_oracle_link")}}
        for c, v in (("baseline_2d", 0.70), ("mlp_fusion", 0.72)) for s in range(3)]
    for row in rows:
        row.update({m: row.get(m, 0.0) for m in METRICS})
    fig = plot_results(rows, io.BytesIO())
    ax = fig.axes[0]
    assert ax.get_ylabel() == "SEG" and not ax.patches  # points, not bars
    low, high = ax.get_ylim()
    assert low < 0.70 and high > 0.74


def test_benchmark_plot_names_of_many_configs_do_not_overlap():
    rows = [{"config": f"config_with_a_long_name_{k}", "seed": 0, **{m: 0.8 for m in METRICS}}
            for k in range(15)]
    fig = plot_results(rows, io.BytesIO())
    ax = fig.axes[0]
    label = ax.get_xticklabels()[0]
    ticks = ax.transData.transform([(t, 0.8) for t in ax.get_xticks()])[:, 0]
    # rotated names are parallel: their distance across is the tick spacing times sin(rotation)
    across = np.diff(ticks).min() * np.sin(np.radians(label.get_rotation()))
    assert across > 1.2 * label.get_fontsize() * fig.dpi / 72
