"""napari widget "Save as CTC result": a Labels layer -> maskTTT.tif files and res_track.txt.

The same rules as ``tools/predict.py``: a frame's file is named after its raw frame (tTTT.tif ->
maskTTT.tif; the layer's ``ctc_files`` metadata, set by the reader and carried by "Segment
nuclei", else frame index i -> mask{i:03d}.tif), a non-empty folder is refused unless overwrite
is ticked, and the files appear only when all of them are written (a staging folder), with
labels unique over the sequence and ``res_track.txt`` (``tools/ctc_seg.py`` / ``ctc_det.py`` and
the CTC's tools score the folder).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, PushButton
from napari.layers import Labels
from napari.utils.notifications import show_error, show_info

from ..cli import check_new_output_folder, one_line, staged_output
from ..data.ctc import RAW_PATTERN, output_name, write_label_volume, write_result_tracks

if TYPE_CHECKING:
    import napari


def result_names(layer) -> dict[int, str]:
    """{index along the layer's frame axis: maskTTT.tif} of the frames to save (3D layer: {0: ...});
    a layer from "Segment nuclei" saves the frames it segmented."""
    frames = layer.data.shape[0] if layer.ndim == 4 else 1
    files = layer.metadata.get("ctc_files") or []
    segmented = layer.metadata.get("segmented_frames")
    indices = range(frames) if segmented is None else segmented
    names = {}
    for i in indices:
        raw = files[i] if i < len(files) and RAW_PATTERN.match(files[i]) else f"t{i:03d}.tif"
        names[i] = output_name(raw)
    return names


def is_result(layer) -> bool:
    """Whether a labels layer may be saved as a result: not the reference the reader took from _GT.
    """
    return not layer.metadata.get("ctc_reference")


def save_ctc_result(layer, folder: str, overwrite: bool = False) -> list[str]:
    """Write a (Z, Y, X) or (T, Z, Y, X) Labels layer as a CTC result folder; returns the file
    names."""
    if layer.ndim not in (3, 4):
        raise ValueError(
            f"{layer.name}: a {layer.ndim}D labels layer; a CTC result is 3D (Z, Y, X) per frame")
    if not is_result(layer):
        raise ValueError(
            f"{layer.name}: the reference segmentation read from a _GT folder, not a result; "
            "save a segmentation (Segment nuclei's labels layer)")
    if not folder:
        raise ValueError("no output folder chosen")
    check_new_output_folder(folder, overwrite, how="tick 'overwrite'")
    names = result_names(layer)
    with staged_output(folder) as stage:
        for index, name in names.items():
            labels = np.asarray(layer.data[index] if layer.ndim == 4 else layer.data)
            if labels.dtype.kind not in "ui" or (labels.dtype.kind == "i" and labels.size
                                                 and labels.min() < 0):
                raise ValueError(
                    f"{layer.name}: labels must be non-negative integers, got {labels.dtype}")
            write_label_volume(os.path.join(stage, name), labels)
        write_result_tracks(stage)
    return sorted(names.values())


class SaveWidget(Container):
    """Dock widget: labels layer (the newest that is not a reference read from a _GT folder; a
    layer added later, such as "Segment nuclei"'s result, becomes the choice), output folder,
    overwrite; Save."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        viewer = self._viewer = napari_viewer
        self.layer = ComboBox(label="labels", choices=self._labels_layers)
        self.folder = FileEdit(label="output folder", mode="d", nullable=True, value=None)
        self.overwrite = CheckBox(text="overwrite files of the same name", value=False)
        self.save_button = PushButton(text="Save")
        super().__init__(widgets=[self.layer, self.folder, self.overwrite, self.save_button])
        self.save_button.changed.connect(self.save)
        viewer.layers.events.inserted.connect(self._choose_new_layer)
        viewer.layers.events.removed.connect(self.reset_choices)
        results = [layer for layer in self._labels_layers() if is_result(layer)]
        if results:
            self.layer.value = results[-1]

    def _labels_layers(self, _widget=None) -> list:
        return [layer for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _choose_new_layer(self, event) -> None:
        """A labels layer added later (a segmentation) becomes the choice; a reference never does.
        """
        self.reset_choices()
        if isinstance(event.value, Labels) and is_result(event.value):
            self.layer.value = event.value

    def save(self, _value=None) -> list[str] | None:
        layer, folder = self.layer.value, str(self.folder.value or "")
        try:
            if layer is None:
                raise ValueError("no labels layer to save")
            names = save_ctc_result(layer, folder, bool(self.overwrite.value))
        except Exception as e:
            show_error(one_line(e))
            return None
        show_info(f"Wrote {len(names)} CTC result frame(s) and res_track.txt to {folder}")
        return names
