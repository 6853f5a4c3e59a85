"""napari widget "Segment nuclei": a trained model folder on an image layer -> a Labels layer.

The model folder is what ``tools/train_net.py`` writes: ``config.yaml``, ``model_final.pth`` and,
when the linking was calibrated, ``linking.json`` (used as ``tools/predict.py`` uses it). The
segmentation runs in a napari thread worker, slice by slice (:meth:`VolumePredictor.stream`, so
the labels equal ``tools/predict.py``'s), with a progress bar over slices and frames, and can
be cancelled. Errors are one-line napari notifications with the text the tools print.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label,
                              ProgressBar, PushButton)
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..cli import one_line
from ..data.ctc import check_not_labels

if TYPE_CHECKING:
    import napari

MODEL_FILES = ("config.yaml", "model_final.pth")


def load_predictor(model_dir: str, score_threshold: float | None = None, tta: bool = False):
    """The VolumePredictor of a trained model folder (its calibrated linking applied when the
    folder has linking.json); score_threshold overrides TEST.CTC.SCORE_THRESHOLD, tta turns on
    test-time augmentation (TEST.AUG.ENABLED)."""
    from ..engine import setup_config
    from ..predictor import VolumePredictor

    check_model_folder(model_dir)
    opts = ["MODEL.WEIGHTS", os.path.join(model_dir, "model_final.pth")]
    if score_threshold is not None:
        opts += ["TEST.CTC.SCORE_THRESHOLD", str(score_threshold)]
    if tta:
        opts += ["TEST.AUG.ENABLED", "True"]
    return VolumePredictor(setup_config(os.path.join(model_dir, "config.yaml"), opts))


def check_model_folder(model_dir: str) -> None:
    """Raise with one line naming what is missing unless model_dir holds a trained model."""
    if not model_dir or not os.path.isdir(model_dir):
        raise FileNotFoundError(
            f"{model_dir or '(none)'}: no model folder; choose the folder that holds "
            f"{' and '.join(MODEL_FILES)} (tools/train_net.py's OUTPUT_DIR)")
    for name in MODEL_FILES:
        if not os.path.isfile(os.path.join(model_dir, name)):
            raise FileNotFoundError(
                f"{os.path.join(model_dir, name)}: not found; a model folder holds "
                f"{' and '.join(MODEL_FILES)} (tools/train_net.py's OUTPUT_DIR)"
            )


@dataclass
class SegmentJob:
    """What one run segments: frames (indices into the layer's leading axis; None for a 3D
    layer) of a (Z, Y, X) or (T, Z, Y, X) image."""

    model_dir: str
    data: object  # (Z, Y, X) or (T, Z, Y, X) array-like (numpy or dask)
    frames: list[int] | None
    voxel_um: tuple[float, float, float] | None
    score_threshold: float
    tta: bool = False

    @property
    def steps(self) -> int:
        return len(self.frames or [0]) * self.data.shape[-3]


def segment(job: SegmentJob) -> Iterator[int]:
    """Generator for the thread worker: yields the number of slices done after each slice and
    returns ``(labels, "")`` with labels shaped like the image (uint16; frames not asked for
    stay 0), or ``(None, one-line error)``: errors are returned, not raised, so that napari shows
    the one line and no traceback dialog."""
    try:
        predictor = load_predictor(job.model_dir, job.score_threshold, job.tta)
        if job.voxel_um is None and predictor.pixel_size_um:
            return None, (f"the voxel size is unknown (0) and the model works at "
                          f"{predictor.pixel_size_um:g} µm pixels: fill in voxel Z, Y and X (µm)")
        labels = np.zeros(job.data.shape, np.uint16)
        done = 0
        for frame in job.frames or [None]:
            volume = np.asarray(job.data if frame is None else job.data[frame])
            target = labels if frame is None else labels[frame]
            for z, planes in predictor.stream(volume, job.voxel_um):
                for index, plane in planes:
                    target[index] = plane
                if z < len(volume):  # a slice predicted (z == len: the last planes linked)
                    done += 1
                    yield done
        return labels, ""
    except Exception as e:  # the worker's boundary: every error becomes one notification line
        return None, one_line(e)


class SegmentWidget(Container):
    """Dock widget: model folder, image layer, voxel size (um, prefilled from the layer's
    scale; 0 = unknown), score threshold (prefilled from the model), all frames of a 4D layer or
    only the current one, test-time augmentation; Segment / Cancel and a progress bar."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        viewer = self._viewer = napari_viewer
        self.model_dir = FileEdit(label="model folder", mode="d", nullable=True, value=None)
        self.image = ComboBox(label="image", choices=self._image_layers)
        self.voxel = [
            FloatSpinBox(label=f"voxel {axis} (µm)", min=0.0, max=1000.0, step=0.01, value=0.0,
                         tooltip="the layer's voxel size in micrometres, prefilled from its scale; "
                                 "0 = unknown, refused by a model that works at a pixel size")
            for axis in "ZYX"]
        self.voxel_note = Label(value="voxel size: 0 = unknown (the model then refuses the layer "
                                      "unless it works at native pixels)")
        for box in self.voxel:
            box.native.setDecimals(4)
        self.score_threshold = FloatSpinBox(label="score threshold", min=0.0, max=1.0, step=0.05,
                                            value=0.5)
        self.current_frame_only = CheckBox(text="only the current frame (4D)", value=False)
        self.tta = CheckBox(text="test-time augmentation (flips; about 4x slower)", value=False)
        self.run_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(value="")
        super().__init__(widgets=[self.model_dir, self.image, *self.voxel, self.voxel_note,
                                  self.score_threshold,
                                  self.current_frame_only, self.tta, self.run_button,
                                  self.cancel_button, self.progress, self.status])
        self.worker = None
        self.image.changed.connect(self._prefill_voxel_size)
        self.model_dir.changed.connect(self._prefill_threshold)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)
        self._prefill_voxel_size()

    def _image_layers(self, _widget=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Image)]

    def _prefill_voxel_size(self, _value=None) -> None:
        layer = self.image.value
        if layer is None or layer.ndim < 3:
            return
        scale = [float(s) for s in layer.scale[-3:]]
        for box, value in zip(self.voxel, scale if any(s != 1.0 for s in scale) else [0.0] * 3):
            box.value = value

    def _prefill_threshold(self, _value=None) -> None:
        """The model's TEST.CTC.SCORE_THRESHOLD once the folder holds a model (quietly: the path
        may be half typed; Segment reports what is wrong)."""
        path = str(self.model_dir.value or "")
        try:
            check_model_folder(path)
            from ..engine import setup_config

            self.score_threshold.value = setup_config(
                os.path.join(path, "config.yaml")).TEST.CTC.SCORE_THRESHOLD
        except Exception:
            return

    def job(self) -> SegmentJob:
        """The run the widget's fields describe; raises with one line if they do not describe one.
        """
        path = str(self.model_dir.value or "")
        check_model_folder(path)
        layer = self.image.value
        if layer is None:
            raise ValueError("no image layer: open a 3D stack or a CTC sequence first")
        if layer.ndim not in (3, 4) or layer.rgb:
            raise ValueError(f"{layer.name}: a {layer.ndim}D {'RGB ' if layer.rgb else ''}layer; "
                             "segment a 3D (Z, Y, X) or 4D (T, Z, Y, X) image layer")
        if layer.ndim == 4 and str(layer.axis_labels[0]).lower() not in ("t", "time"):
            raise ValueError(
                f"{layer.name}: a 4D layer whose first axis is not time (axis labels "
                f"{tuple(layer.axis_labels)}); open the file with the emr_d2 reader (one layer per "
                "channel, a time-lapse as t, z, y, x) or label the axes t, z, y, x")
        check_not_labels(layer.data if layer.ndim == 3 else layer.data[0], layer.name,
                         "choose the raw image layer")
        voxel = tuple(float(box.value) for box in self.voxel)
        frames = None
        if layer.ndim == 4:
            current = int(self._viewer.dims.current_step[self._viewer.dims.ndim - 4])
            frames = (
                [current] if self.current_frame_only.value else list(range(layer.data.shape[0]))
            )
        return SegmentJob(path, layer.data, frames, voxel if all(v > 0 for v in voxel) else None,
                          float(self.score_threshold.value), bool(self.tta.value))

    def run(self, _value=None) -> None:
        """Start segmenting in a thread worker (one notification and nothing started on an error).
        """
        if self.worker is not None:
            return
        try:
            job = self.job()
        except Exception as e:
            show_error(one_line(e))
            return
        layer = self.image.value
        self.progress.max, self.progress.value = job.steps, 0
        self.status.value = f"segmenting {layer.name} ..."
        self.worker = create_worker(segment, job)
        self.worker.yielded.connect(self._advance)
        self.worker.returned.connect(lambda result: self._add_labels(result, layer, job))
        self.worker.aborted.connect(self._cancelled)
        self.worker.finished.connect(self._finished)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.worker.start()

    def cancel(self, _value=None) -> None:
        if self.worker is not None:
            self.worker.quit()

    def _advance(self, done: int) -> None:
        self.progress.value = done

    def _cancelled(self) -> None:
        self.status.value = "cancelled"
        show_info("Segment nuclei: cancelled")

    def _finished(self) -> None:
        self.worker = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _add_labels(self, result, layer, job: SegmentJob) -> None:
        labels, error = result
        if error:
            self.status.value = "failed"
            show_error(error)
            return
        metadata = {k: v for k, v in layer.metadata.items() if k in ("ctc_files", "ctc_sequence")}
        metadata["segmented_frames"] = job.frames
        self._viewer.add_labels(labels, name=f"{layer.name} labels", scale=layer.scale,
                                translate=layer.translate,
                                axis_labels=layer.axis_labels, units=layer.units, metadata=metadata)
        volumes = [labels] if job.frames is None else [labels[t] for t in job.frames]
        objects = sum(len(np.unique(v)) - 1 for v in volumes)
        self.status.value = f"{objects} objects in {len(volumes)} volume(s)"
