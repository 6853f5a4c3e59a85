"""Pictures: slice grids with outlines, orthogonal views, fusion weights, training curves."""
from __future__ import annotations

import json
import os

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
from scipy import ndimage

from .data.window import normalise, percentile_range


def _subplots(rows: int, cols: int, **kwargs):
    """A Figure with an Agg canvas (no global pyplot state or backend switch) and its axes."""
    figure = Figure(figsize=kwargs.pop("figsize", None))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, cols, **kwargs)


def _display(raw: np.ndarray) -> np.ndarray:
    return np.clip(normalise(raw, *percentile_range(raw[None] if raw.ndim == 2 else raw, (1.0, 99.8))), 0, 1)


def outlines(labels: np.ndarray) -> np.ndarray:
    """Boundary pixels of every object of a 2D label image, carrying the object's label."""
    edge = (ndimage.grey_dilation(labels, size=3) != ndimage.grey_erosion(labels, size=3)) & (labels > 0)
    return np.where(edge, labels, 0)


def _label_colours(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    colours = colormaps["hsv"](rng.permutation(max(n, 1)) / max(n, 1))[:, :3]
    return np.concatenate([np.zeros((1, 3)), colours])


def _overlay(ax, image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, colours: np.ndarray, aspect=1.0):
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
        _overlay(ax, image[z], None if gt is None else gt[z], None if pred is None else pred[z], colours)
        ax.set_title(f"z = {z}", fontsize=9)
    fig.suptitle(title or "raw, reference (white) and predicted outlines (colour = 3D object)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_orthogonal(raw: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, path: str,
                    voxel_size: tuple[float, float, float] | None = None) -> None:
    """XY, XZ and YZ sections through the volume centre, with reference (white) and predicted
    (colour = 3D object id) outlines: a linked object keeps one colour along z."""
    image = _display(raw)
    depth, height, width = raw.shape
    z, y, x = depth // 2, height // 2, width // 2
    aspect = voxel_size[0] / voxel_size[1] if voxel_size else 1.0
    colours = _label_colours(int(pred.max()) if pred is not None else 1)
    views = [
        ("XY (z = %d)" % z, lambda v: v[z], 1.0),
        ("XZ (y = %d)" % y, lambda v: v[:, y, :], aspect),
        ("YZ (x = %d)" % x, lambda v: v[:, :, x], aspect),
    ]
    fig, axes = _subplots(1, 3, figsize=(13, 4.2))
    for ax, (name, cut, asp) in zip(axes, views):
        _overlay(ax, cut(image), None if gt is None else cut(gt), None if pred is None else cut(pred), colours, asp)
        ax.set_title(name, fontsize=10)
    fig.suptitle("orthogonal views: z-linking shows as one colour per object along z", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_fusion_weights(weights: dict[str, dict[str, np.ndarray]], path: str,
                        pixel_maps: dict[str, np.ndarray] | None = None) -> None:
    """Bar plots of the mean weight of every slice offset dz per fusion module, for windows in
    the volume's interior and at its edges (where slices are padded); optional heat maps of
    per-pixel weights (module -> (N, h, w) for one window).

    weights: module -> {"interior": (N,), "edge": (N,)}.
    """
    pixel_maps = pixel_maps or {}
    n_bars = len(weights)
    n_maps = sum(len(m) for m in pixel_maps.values())
    fig, axes = _subplots(1, max(n_bars + n_maps, 1), figsize=(3.6 * max(n_bars + n_maps, 1), 3.4), squeeze=False)
    axes = list(axes.flat)
    for ax, (name, groups) in zip(axes, weights.items()):
        n = len(next(iter(groups.values())))
        offsets = np.arange(n) - n // 2
        width = 0.8 / len(groups)
        for k, (group, values) in enumerate(groups.items()):
            ax.bar(offsets + (k - (len(groups) - 1) / 2) * width, values, width, label=group)
        ax.set_xticks(offsets)
        ax.set_xlabel("slice offset dz")
        ax.set_ylabel("mean weight")
        ax.set_title(name.replace("backbone.", ""), fontsize=8)
        ax.legend(fontsize=7)
    k = n_bars
    for name, maps in pixel_maps.items():
        n = len(maps)
        for i, weight_map in enumerate(maps):
            ax = axes[k]
            k += 1
            shown = ax.imshow(weight_map, vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{name.replace('backbone.', '')}\ndz = {i - n // 2:+d}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def read_metrics(path: str) -> list[dict]:
    """The lines of detectron2's metrics.json (one JSON object per line)."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_training_curves(metrics_file: str, path: str) -> None:
    """Losses over iterations, and SEG / validation loss / fusion weights where logged."""
    rows = read_metrics(metrics_file)
    losses = sorted({k for r in rows for k in r if k.startswith("loss_") or k == "total_loss"})
    extras = [k for k in ("ctc/SEG", "ctc/SEG_2D", "validation_loss") if any(k in r for r in rows)]
    fusion = sorted({k for r in rows for k in r if k.startswith("fusion/")})
    count = 1 + bool(extras) + bool(fusion)
    fig, axes = _subplots(1, count, figsize=(5 * count, 3.6), squeeze=False)
    panels = [(losses, "training losses", "-")]
    if extras:
        panels.append((extras, "evaluation", "o-"))
    if fusion:
        panels.append((fusion, "mean slice weights", "-"))
    for ax, (keys, title, style) in zip(axes.flat, panels):
        for key in keys:
            points = [(r["iteration"], r[key]) for r in rows if key in r]
            ax.plot(*zip(*points), style, label=key.replace("fusion/backbone.", ""),
                    lw=2 if key == "total_loss" else 1)
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.legend(fontsize=6)
    axes.flat[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def collect_fusion_weights(cfg, model, volume: np.ndarray, voxel_um: tuple | None = None) -> tuple[dict, dict]:
    """Predict a (Z, H, W) volume one window at a time (VolumePredictor, as inference does) and
    average each fusion module's slice weights per window position, separately for edge windows
    (touching padding) and interior ones.

    Returns (module -> {"interior": (N,), "edge": (N,)}, module -> (N, h, w) per-pixel weights
    of the centre window, for modules that weight per pixel or window).
    """
    from .modeling.fusion import fusion_weights, mean_slice_weights
    from .predictor import VolumePredictor

    one_window = cfg.clone()
    one_window.defrost()
    one_window.TEST.CTC.BATCH_WINDOWS = 1
    predictor = VolumePredictor(one_window, model)
    offsets, depth = predictor.slice_offsets(voxel_um), volume.shape[0]
    sums: dict[str, dict[str, list]] = {}
    maps = {}
    for z, _ in predictor.slice_instances(volume, voxel_um=voxel_um):
        reach = z + offsets
        group = "edge" if reach.min() < 0 or reach.max() >= depth else "interior"
        for name, w in fusion_weights(model).items():
            sums.setdefault(name, {}).setdefault(group, []).append(mean_slice_weights(w).cpu().numpy())
            if z == depth // 2 and w.dim() == 4:
                maps[name] = w[0].cpu().numpy()
    weights = {name: {g: np.mean(v, axis=0) for g, v in groups.items()} for name, groups in sums.items()}
    return weights, maps


def save_volume_pictures(raw, gt, pred, out_dir: str, voxel_size=None) -> list[str]:
    """slices.png and orthogonal.png of one volume (voxel_size (Z, Y, X) sets the aspect of the
    side views); returns the written paths."""
    os.makedirs(out_dir, exist_ok=True)
    grid = os.path.join(out_dir, "slices.png")
    ortho = os.path.join(out_dir, "orthogonal.png")
    plot_slice_grid(raw, gt, pred, grid)
    plot_orthogonal(raw, gt, pred, ortho, voxel_size)
    return [grid, ortho]
