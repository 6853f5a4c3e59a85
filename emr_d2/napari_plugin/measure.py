"""napari widget "Measure nuclei": a Labels layer and its image -> one CSV row per nucleus.

The same table as ``tools/predict.py --measure`` (:func:`measure_nuclei`: centroid, bounding box,
volume, z extent and intensity, in micrometres from the layer's scale). A 4D (T, Z, Y, X) layer
is measured at the frame the viewer shows.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from napari.layers import Image, Labels
from napari.utils.notifications import show_error, show_info

from ..cli import one_line
from ..measurements import measure_nuclei, write_measurements

if TYPE_CHECKING:
    import napari


def layer_volume(layer, frame: int) -> np.ndarray:
    """The (Z, Y, X) volume of a 3D layer, or frame ``frame`` of a 4D one."""
    if layer.ndim not in (3, 4):
        raise ValueError(f"{layer.name}: a {layer.ndim}D layer; measure a 3D or 4D layer")
    return np.asarray(layer.data if layer.ndim == 3 else layer.data[frame])


def measure_layers(labels, image, path: str, frame: int = 0) -> int:
    """Write the CSV of the nuclei of a labels layer (intensities from an image layer of the same
    shape, voxel size from the labels layer's scale in micrometres); returns the row count."""
    if not path:
        raise ValueError("no CSV file chosen")
    scale = tuple(float(s) for s in labels.scale[-3:])
    if all(s == 1.0 for s in scale) and all(str(u) == "pixel" for u in labels.units[-3:]):
        raise ValueError(f"{labels.name}: its voxel size is unknown (scale 1, no unit), so its "
                         "nuclei cannot be measured in micrometres; open the stack with its voxel "
                         "size (voxel_size.json, TIFF tags) or set the layer's scale")
    rows = measure_nuclei(layer_volume(labels, frame), layer_volume(image, frame), scale)
    write_measurements(path, rows)
    return len(rows)


class MeasureWidget(Container):
    """Dock widget: labels layer, image layer, CSV file; Measure."""

    def __init__(self, napari_viewer: napari.viewer.Viewer):
        viewer = self._viewer = napari_viewer
        self.labels_layer = ComboBox(label="labels", choices=self._layers(Labels))
        self.image_layer = ComboBox(label="image", choices=self._layers(Image))
        self.file = FileEdit(label="CSV file", mode="w", filter="*.csv", nullable=True, value=None)
        self.measure_button = PushButton(text="Measure")
        super().__init__(widgets=[self.labels_layer, self.image_layer, self.file,
                                  self.measure_button])
        self.measure_button.changed.connect(self.measure)
        viewer.layers.events.inserted.connect(self.reset_choices)
        viewer.layers.events.removed.connect(self.reset_choices)

    def _layers(self, kind):
        return lambda _widget=None: [layer for layer in self._viewer.layers
                                     if isinstance(layer, kind)]

    def measure(self, _value=None) -> int | None:
        labels, image = self.labels_layer.value, self.image_layer.value
        path = str(self.file.value or "")
        try:
            if labels is None or image is None:
                raise ValueError("choose a labels layer and the image layer it segments")
            frame = int(self._viewer.dims.current_step[0]) if labels.ndim == 4 else 0
            count = measure_layers(labels, image, path, frame)
        except Exception as e:
            show_error(one_line(e))
            return None
        show_info(f"Wrote {count} nuclei to {os.path.basename(path)}")
        return count
