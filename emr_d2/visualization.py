"""Pictures: slice grids with outlines, orthogonal views, fusion weights, training curves."""
from __future__ import annotations

import json
import os
import textwrap

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from scipy import ndimage

from .cli import staged_output
from .data.window import normalise, percentile_range


def _subplots(rows: int, cols: int, **kwargs):
    """A Figure with an Agg canvas (no global pyplot state or backend switch) and its axes."""
    figure = Figure(figsize=kwargs.pop("figsize", None))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, **kwargs)


def _display(raw: np.ndarray) -> np.ndarray:
    return np.clip(
        normalise(raw, *percentile_range(raw[None] if raw.ndim == 2 else raw, (1.0, 99.8))), 0, 1)


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boundary pixels of every object of a 2D label image, carrying the object's label."""
    edge = (ndimage.grey_dilation(labels, size=3)
            != ndimage.grey_erosion(labels, size=3)) & (labels > 0)
    return np.where(edge, labels, 0)


def _label_colours(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    colours = colormaps["hsv"](rng.permutation(max(n, 1)) / max(n, 1))[:, :3]
    return np.concatenate([np.zeros((1, 3)), colours])


def _overlay(ax, image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None,
             colours: np.ndarray, aspect=1.0):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, aspect=aspect, interpolation="nearest")
    if gt is not None:  # reference outlines in white
        edge = outlines(gt) > 0
        ax.imshow(np.ma.masked_where(~edge, edge), cmap="Greys_r", vmin=0, vmax=1, aspect=aspect,
                  interpolation="nearest", alpha=0.9)
    if pred is not None:  # predicted outlines coloured by 3D object id
        edge = outlines(pred)
        rgba = np.zeros(edge.shape + (4,))
        rgba[..., :3] = colours[np.mod(edge, len(colours) - 1) + (edge > 0)]
        rgba[..., 3] = edge > 0
        ax.imshow(rgba, aspect=aspect, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def _legend(gt: np.ndarray | None, pred: np.ndarray | None) -> str:
    """What an overlay shows: raw, and the outlines that were given."""
    parts = ["raw"] + ["reference outlines (white)"] * (gt is not None) \
        + ["predicted outlines (colour = 3D object)"] * (pred is not None)
    return ", ".join(parts)


def plot_slice_grid(raw: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, path: str,
                    num_slices: int = 8, title: str = "") -> None:
    """A grid of evenly spaced z slices: raw data, reference outlines (white) and predicted
    outlines coloured by 3D object id (one colour per object across all slices)."""
    image = _display(raw)
    depth = raw.shape[0]
    zs = np.unique(np.linspace(0, depth - 1, min(num_slices, depth)).round().astype(int))
    cols = min(4, len(zs))
    rows = int(np.ceil(len(zs) / cols))
    colours = _label_colours(int(pred.max()) if pred is not None else 1)
    fig, axes = _subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, z in zip(axes.flat, zs):
        ax.axis("on")
        _overlay(ax, image[z], None if gt is None else gt[z], None if pred is None else pred[z],
                 colours)
        ax.set_title(f"z = {z}", fontsize=9)
    fig.suptitle(title or _legend(gt, pred), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def orthogonal_aspects(voxel_size: tuple[float, float, float] | None) -> tuple[float, float]:
    """imshow aspect (row step / column step) of the XZ view (rows z, columns x) and of the YZ
    view (rows z, columns y) for a (Z, Y, X) voxel size; 1:1 voxels when it is unknown."""
    if voxel_size is None:
        return 1.0, 1.0
    vz, vy, vx = (float(v) for v in voxel_size)
    return vz / vx, vz / vy


def plot_orthogonal(raw: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, path,
                    voxel_size: tuple[float, float, float] | None = None) -> Figure:
    """XY, XZ and YZ sections through the volume centre, with reference (white) and predicted
    (colour = 3D object id) outlines: a linked object keeps one colour along z. The side views
    are drawn at the physical aspect of voxel_size (Z, Y, X in micrometres; 1:1 voxels, said in
    the title, when None); dashed lines mark where the other views cut. Returns the figure."""
    image = _display(raw)
    depth, height, width = raw.shape
    z, y, x = depth // 2, height // 2, width // 2
    xz_aspect, yz_aspect = orthogonal_aspects(voxel_size)
    colours = _label_colours(int(pred.max()) if pred is not None else 1)
    cut_colours = {"XY": "tab:orange", "XZ": "tab:cyan", "YZ": "tab:pink"}
    views = [  # name, cut, aspect, (x axis, y axis), lines: (orientation, position, view it shows)
        ("XY", f"z = {z}", lambda v: v[z],
         1.0, ("x (pixels)", "y (pixels)"), [("h", y, "XZ"), ("v", x, "YZ")]),
        ("XZ", f"y = {y}", lambda v: v[:, y, :],
         xz_aspect, ("x (pixels)", "z (slices, 0 at the top) ↓"),
         [("h", z, "XY"), ("v", x, "YZ")]),
        ("YZ", f"x = {x}", lambda v: v[:, :, x],
         yz_aspect, ("y (pixels)", "z (slices, 0 at the top) ↓"),
         [("h", z, "XY"), ("v", y, "XZ")]),
    ]
    fig, axes = _subplots(1, 3, figsize=(14, 5.4))
    for ax, (name, where, cut, aspect, (xlabel, ylabel), lines) in zip(axes, views):
        _overlay(ax, cut(image), None if gt is None else cut(gt),
                 None if pred is None else cut(pred), colours, aspect)
        for orientation, position, other in lines:
            draw = ax.axhline if orientation == "h" else ax.axvline
            draw(position, color=cut_colours[other], ls="--", lw=1.4)
        for side in ax.spines.values():
            side.set_edgecolor(cut_colours[name])
            side.set_linewidth(2)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.set_title(f"{name} section at {where}", fontsize=10, color=cut_colours[name])
    scale = (
        f"side views at the physical aspect of {' x '.join(f'{v:g}' for v in voxel_size)} um "
        "voxels (Z x Y x X)"
        if voxel_size is not None else "voxel size unknown: side views drawn with 1:1 voxels")
    fig.suptitle(f"orthogonal sections: {_legend(gt, pred)};\n"
                 f"dashed lines: where the other sections cut (frame colours); {scale}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    fig.savefig(path, dpi=100, format="png", bbox_inches="tight")
    return fig


def fusion_place(module_name: str) -> tuple[str, str]:
    """(family, where) of a fusion module of a model, in the README's words."""
    parts = module_name.split(".")
    if "modules_by_level" in parts:
        level = parts[parts.index("modules_by_level") + 1]
        return (
            "early fusion",
            "at every fused FPN level (one module)"
            if level == "shared"
            else f"at FPN level {level}",
        )
    if "roi_heads" in parts:
        head = "mask" if "mask_pooler" in parts else "box" if "box_pooler" in parts else parts[-1]
        return "late fusion", f"of the {head} head's ROI features"
    return "fusion", f"in {module_name}"


def fusion_title(module_name: str, class_name: str) -> str:
    """Which fusion a module is and where it fuses, for a plot title."""
    family, where = fusion_place(module_name)
    return f"{family}: {class_name}\n{where}"


EDGE_NOTE = (
    "interior: windows whose slices all lie inside the volume; edge: windows centred on the "
    "volume's edge slices, whose neighbours beyond the volume are filled in")


def plot_fusion_weights(weights: dict[str, dict[str, np.ndarray]], path,
                        pixel_maps: dict[str, np.ndarray] | None = None) -> Figure:
    """Bars of the mean weight of every slice offset dz per fusion module, for windows in the
    volume's interior and at its edges (where slices are padded); optional heat maps of
    per-pixel weights (title -> (N, h, w) for one window). Returns the figure.

    weights: title (:func:`fusion_title`) -> {"interior": (N,), "edge": (N,)}.
    """
    pixel_maps = pixel_maps or {}
    n_bars = len(weights)
    n_maps = sum(len(m) for m in pixel_maps.values())
    panels = max(n_bars + n_maps, 1)
    fig, axes = _subplots(1, panels, figsize=(max(4.2 * panels, 7.5), 4.2), squeeze=False)
    axes = list(axes.flat)
    for ax, (name, groups) in zip(axes, weights.items()):
        n = len(next(iter(groups.values())))
        offsets = np.arange(n) - n // 2
        width = 0.8 / len(groups)
        for k, (group, values) in enumerate(groups.items()):
            ax.bar(offsets + (k - (len(groups) - 1) / 2) * width, values, width,
                   label=f"{group} windows")
        ax.set_xticks(offsets)
        ax.set_xticklabels([f"{d:+d}" if d else "0 (centre)" for d in offsets])
        ax.set_xlabel("slice offset dz from the centre slice")
        ax.set_ylabel("mean slice weight (sums to 1)")
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=9)
    k = n_bars
    for name, maps in pixel_maps.items():
        n = len(maps)
        for i, weight_map in enumerate(maps):
            ax = axes[k]
            k += 1
            shown = ax.imshow(weight_map, vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{name}\nper-pixel weight of dz = {i - n // 2:+d}, centre window",
                         fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046)
    note = textwrap.fill("which slices the model relies on; " + EDGE_NOTE,
                         width=int(fig.get_figwidth() * 15))
    fig.suptitle(note, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png", bbox_inches="tight")
    return fig


class MetricsFormatError(ValueError):
    """A file that is not detectron2's metrics.json; the message names it."""


def read_metrics(path: str) -> list[dict]:
    """The lines of detectron2's metrics.json (one JSON object per line)."""
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise MetricsFormatError(
                    f"{path}: line {number} is not JSON ({e.msg}); expected detectron2's "
                    "metrics.json (one JSON object per line), e.g. "
                    "OUTPUT_DIR/metrics.json") from e
            if not isinstance(row, dict) or "iteration" not in row:
                raise MetricsFormatError(
                    f"{path}: line {number} has no \"iteration\"; expected detectron2's "
                    "metrics.json")
            rows.append(row)
    if not rows:
        raise MetricsFormatError(f"{path}: no logged iteration")
    return rows


def _padded_limits(values: list[float], log: bool = False) -> tuple[float, float]:
    """Axis limits that hold every value with a margin (one value: a range around it)."""
    low, high = min(values), max(values)
    if log:
        return low / 1.3, high * 1.3
    margin = (high - low) * 0.08 or max(abs(high) * 0.05, 0.01)
    return low - margin, high + margin


# metrics.json keys of the evaluation -> what a plot calls them
EVALUATION_LABELS = {"ctc/SEG": "SEG (CTC, 3D)", "ctc/DET": "DET (CTC)",
                     "ctc/SEG_2D": "SEG per slice",
                     "validation_loss": "validation loss"}


def plot_training_curves(metrics_file: str, path) -> Figure:
    """Losses over iterations, and SEG / validation loss / fusion weights where logged, on axes
    that hold every plotted value; a metric logged once is one labelled point. Returns the
    figure."""
    rows = read_metrics(metrics_file)
    losses = sorted({k for r in rows for k in r if k.startswith("loss_") or k == "total_loss"})
    extras = [k for k in EVALUATION_LABELS if any(k in r for r in rows)]
    fusion = sorted({k for r in rows for k in r if k.startswith("fusion/")})
    modules = {k.rsplit("/", 1)[0] for k in fusion}
    labels = {
        k: (f"{' '.join(fusion_place(k[len('fusion/'):].rsplit('/', 1)[0]))}, " if len(modules) > 1
        else "")
        + k.rsplit("/", 1)[1].replace("dz", "dz ") for k in fusion}
    labels.update(EVALUATION_LABELS)
    panels = [(losses, "training losses", "loss (log scale)", True)]
    if extras:
        panels.append((extras, "evaluation", "score or loss", False))
    if fusion:
        panels.append((fusion, "mean slice weight per window position", "weight (sums to 1)",
                       False))
    fig, axes = _subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    iterations = [r["iteration"] for r in rows]
    for ax, (keys, title, ylabel, log_scale) in zip(axes.flat, panels):
        values = []
        for key in keys:
            points = [(r["iteration"], r[key]) for r in rows if key in r]
            values += [v for _, v in points]
            label = labels.get(key, key)
            if len(points) == 1:
                ax.plot(*points[0], "o", label=f"{label} = {points[0][1]:.3f}")
                ax.annotate(f"{points[0][1]:.3f}", points[0], textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
            else:
                ax.plot(*zip(*points), "-", label=label, lw=2 if key == "total_loss" else 1)
        if log_scale and values and min(values) > 0:
            ax.set_yscale("log")
            ax.set_ylim(*_padded_limits(values, log=True))
        elif values:  # scores and weights from zero, so that small differences look small
            ax.set_ylim(min(0.0, *values), _padded_limits(values)[1])
        ax.set_xlim(*_padded_limits([0, *iterations]))
        ax.set_xlabel("iteration")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    return fig


def collect_fusion_weights(cfg, model, volume: np.ndarray,
                           voxel_um: tuple | None = None) -> tuple[dict, dict]:
    """Predict a (Z, H, W) volume one window at a time (VolumePredictor, as inference does) and
    average each fusion module's slice weights per window position, separately for edge windows
    (touching padding) and interior ones.

    Returns (title -> {"interior": (N,), "edge": (N,)}, title -> (N, h, w) per-pixel weights
    of the centre window, for modules that weight per pixel or window), titled by
    :func:`fusion_title`.
    """
    from .modeling.fusion import fusion_weights, mean_slice_weights
    from .predictor import VolumePredictor

    one_window = cfg.clone()
    one_window.defrost()
    one_window.TEST.CTC.BATCH_WINDOWS = 1
    predictor = VolumePredictor(one_window, model)
    geometry, depth = predictor.geometry(voxel_um), volume.shape[0]
    offsets = geometry.offsets
    sums: dict[str, dict[str, list]] = {}
    maps = {}
    for z, _ in predictor.slice_instances(volume, geometry=geometry):
        reach = z + offsets
        group = "edge" if reach.min() < 0 or reach.max() >= depth else "interior"
        for name, w in fusion_weights(model).items():
            sums.setdefault(name,
                            {}).setdefault(group, []).append(mean_slice_weights(w).cpu().numpy())
            if z == depth // 2 and w.dim() == 4:
                maps[name] = w[0].cpu().numpy()
    modules = dict(model.named_modules())
    title = {name: fusion_title(name, type(modules[name]).__name__) for name in sums}
    weights = {title[name]: {g: np.mean(v, axis=0) for g, v in groups.items()}
               for name, groups in sums.items()}
    return weights, {title[name]: m for name, m in maps.items()}


def save_volume_pictures(raw, gt, pred, out_dir: str, voxel_size=None) -> list[str]:
    """slices.png and orthogonal.png of one volume (voxel_size (Z, Y, X) sets the aspect of the
    side views), written only when both were drawn; returns the written paths."""
    with staged_output(out_dir) as stage:
        plot_slice_grid(raw, gt, pred, os.path.join(stage, "slices.png"))
        plot_orthogonal(raw, gt, pred, os.path.join(stage, "orthogonal.png"), voxel_size)
    return [os.path.join(out_dir, "slices.png"), os.path.join(out_dir, "orthogonal.png")]
