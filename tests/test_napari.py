"""The napari plugin: the reader, "Segment nuclei" (equal to tools/predict.py, 4D, cancel, errors)
and "Save as CTC result", in a real napari viewer on a virtual X server (pytest-xvfb; OpenGL
through Mesa). Without napari or an X server these tests skip, unless EMR_D2_REQUIRE_NAPARI=1
(CI), where they fail instead."""
import json
import os
import shutil

import numpy as np
import pytest
import tifffile
import yaml

REQUIRED = os.environ.get("EMR_D2_REQUIRE_NAPARI") == "1"
try:
    import napari  # noqa: F401
except ImportError:
    if REQUIRED:
        raise
    pytest.skip('napari is not installed (pip install -e ".[napari]")', allow_module_level=True)
if not os.environ.get("DISPLAY"):
    if REQUIRED:
        raise RuntimeError(
            "the napari tests need an X server: install Xvfb (Debian: xvfb), pytest-xvfb starts it")
    pytest.skip("no X server for napari's OpenGL canvas (install Xvfb)", allow_module_level=True)

from napari.layers import Image, Labels  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402

from emr_d2.data.synthetic import write_synthetic_dataset  # noqa: E402
from emr_d2.data.tiff_stack import tiff_voxel_size  # noqa: E402
from emr_d2.measurements import measure_nuclei  # noqa: E402
from emr_d2.napari_plugin.measure import MeasureWidget  # noqa: E402
from emr_d2.napari_plugin.reader import get_reader  # noqa: E402
from emr_d2.napari_plugin.save import SaveWidget  # noqa: E402
from emr_d2.napari_plugin.segment import SegmentWidget, load_predictor  # noqa: E402

from helpers import ROOT, tool  # noqa: E402

WORKER_TIMEOUT_MS = 300_000
SCREENSHOT = os.path.join(ROOT, "docs", "napari.png")


@pytest.fixture
def notifications():
    """Every napari notification shown during the test (message texts)."""
    shown = []
    handler = lambda notification: shown.append(str(notification.message))  # noqa: E731
    notification_manager.notification_ready.connect(handler)
    yield shown
    notification_manager.notification_ready.disconnect(handler)


def voxel_of(dataset: str) -> tuple:
    with open(os.path.join(dataset, "voxel_size.json")) as f:
        return tuple(json.load(f)["zyx_um"])


def plugin_widget(viewer, name: str):
    """A widget of the plugin opened as Plugins > emr_d2 nuclei > name opens it (napari's plugin
    manager instantiates it and injects the viewer)."""
    _, widget = viewer.window.add_plugin_dock_widget("emr_d2", name)
    return widget


def run_widget(widget: SegmentWidget, qtbot) -> None:
    widget.run()
    if widget.worker is not None:
        qtbot.waitUntil(lambda: widget.worker is None, timeout=WORKER_TIMEOUT_MS)


def test_the_reader_opens_a_ctc_sequence_with_its_reference_and_result(
    make_napari_viewer, tiny_dataset, tmp_path):
    root = tmp_path / "TINY"
    shutil.copytree(tiny_dataset, root)
    os.makedirs(root / "02_RES")
    for name in os.listdir(root / "02_GT" / "SEG"):
        shutil.copy(root / "02_GT" / "SEG" / name,
                    root / "02_RES" / name.replace("man_seg", "mask"))
    viewer = make_napari_viewer()
    layers = viewer.open(str(root / "02"), plugin="emr_d2")
    image, reference, result = layers
    raw = tifffile.imread(root / "02" / "t001.tif")
    assert isinstance(image, Image) and image.data.shape == (3, *raw.shape)
    assert np.array_equal(image.data[1], raw)
    assert tuple(image.scale) == (1.0, *voxel_of(tiny_dataset))
    assert isinstance(reference, Labels) and isinstance(result, Labels)
    assert np.array_equal(reference.data[2],
                          tifffile.imread(root / "02_GT" / "SEG" / "man_seg002.tif"))
    assert np.array_equal(result.data, reference.data) and tuple(result.scale) == tuple(image.scale)
    assert image.metadata["ctc_files"] == ["t000.tif", "t001.tif", "t002.tif"]


def test_the_widgets_open_from_the_plugins_menu(make_napari_viewer):
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest("emr_d2")
    assert {w.display_name for w in manifest.contributions.widgets} == {
        "Segment nuclei", "Save as CTC result", "Measure nuclei"}
    viewer = make_napari_viewer()
    assert isinstance(plugin_widget(viewer, "Segment nuclei"), SegmentWidget)
    assert isinstance(plugin_widget(viewer, "Save as CTC result"), SaveWidget)
    assert isinstance(plugin_widget(viewer, "Measure nuclei"), MeasureWidget)
    actions = [a.text() for a in viewer.window.plugins_menu.actions()]
    assert any("emr_d2" in text for text in actions), actions


def test_the_reader_takes_the_voxel_size_a_tiff_carries_and_leaves_2d_tiffs(tmp_path):
    stack = str(tmp_path / "stack.tif")
    tifffile.imwrite(stack, np.zeros((4, 16, 16), np.uint16), imagej=True, resolution=(4.0, 4.0),
                     metadata={"spacing": 0.5, "unit": "um", "axes": "ZYX"})
    assert tiff_voxel_size(stack) == pytest.approx((0.5, 0.25, 0.25))
    ((data, meta, kind),) = get_reader(stack)(stack)
    assert kind == "image" and data.shape == (4, 16,
                                              16) and meta["scale"] == pytest.approx((
                                                  0.5, 0.25, 0.25))
    flat = str(tmp_path / "flat.tif")
    tifffile.imwrite(flat, np.zeros((16, 16), np.uint16))
    assert get_reader(flat) is None
    assert get_reader(str(tmp_path)) is None  # a folder without CTC frames


def test_the_reader_opens_channels_and_time_points_by_the_files_axes(make_napari_viewer, tmp_path,
                                                                    tiny_dataset):
    volume = tifffile.imread(os.path.join(tiny_dataset, "02", "t000.tif"))
    hyperstack = str(tmp_path / "zcyx.tif")
    tifffile.imwrite(hyperstack, np.stack([volume // 2, volume], axis=1), imagej=True,
                     resolution=(1 / 0.2, 1 / 0.2),
                     metadata={"axes": "ZCYX", "spacing": 1.0, "unit": "um"})
    viewer = make_napari_viewer()
    first, second = viewer.open(hyperstack, plugin="emr_d2")
    assert first.data.shape == second.data.shape == volume.shape
    assert np.array_equal(second.data, volume) and second.metadata["channel"] == 1
    assert tuple(second.scale) == pytest.approx((1.0, 0.2, 0.2))
    ome = str(tmp_path / "stack.ome.tif")
    tifffile.imwrite(ome, volume, metadata={"axes": "ZYX", "PhysicalSizeX": 0.3,
                                            "PhysicalSizeY": 0.3, "PhysicalSizeZ": 2.0})
    (layer,) = viewer.open(ome, plugin="emr_d2")
    assert tuple(layer.scale) == pytest.approx((2.0, 0.3, 0.3))
    timelapse = str(tmp_path / "tzyx.tif")
    tifffile.imwrite(timelapse, np.stack([volume] * 2), imagej=True, metadata={"axes": "TZYX"})
    (layer,) = viewer.open(timelapse, plugin="emr_d2")
    assert layer.data.shape == (2, *volume.shape) and tuple(layer.axis_labels) == ("t", "z", "y",
                                                                                 "x")


def test_segment_refuses_a_4d_layer_of_unknown_axes_and_an_unknown_voxel_size(
        make_napari_viewer, qtbot, trained, tiny_dataset, tmp_path, notifications):
    model_dir, _ = trained
    viewer = make_napari_viewer()
    widget = plugin_widget(viewer, "Segment nuclei")
    widget.model_dir.value = model_dir
    volume = tifffile.imread(os.path.join(tiny_dataset, "02", "t000.tif"))
    viewer.add_image(np.stack([volume, volume], axis=1), name="zcyx")  # no axis labels
    notifications.clear()
    widget.run()
    assert len(notifications) == 1 and "zcyx: a 4D layer whose first axis is not time" in \
        notifications[0] and widget.worker is None
    viewer.layers.clear()
    viewer.add_image(volume, name="stack")  # napari's default scale: no voxel size
    assert [box.value for box in widget.voxel] == [0.0, 0.0, 0.0]
    notifications.clear()
    run_widget(widget, qtbot)  # the trained model works at its training data's pixel size
    assert len(notifications) == 1 and "voxel size is unknown (0)" in notifications[0]
    assert "stack labels" not in viewer.layers


def test_measure_nuclei_writes_the_predict_measure_table(make_napari_viewer, tiny_dataset,
                                                         tmp_path, notifications):
    volume = tifffile.imread(os.path.join(tiny_dataset, "02", "t000.tif"))
    labels = tifffile.imread(os.path.join(tiny_dataset, "02_GT", "SEG", "man_seg000.tif"))
    voxel = voxel_of(tiny_dataset)
    viewer = make_napari_viewer()
    widget = plugin_widget(viewer, "Measure nuclei")
    viewer.add_image(volume, name="stack", scale=voxel)
    viewer.add_labels(labels, name="nuclei", scale=voxel)
    widget.labels_layer.value = viewer.layers["nuclei"]
    widget.image_layer.value = viewer.layers["stack"]
    widget.file.value = str(tmp_path / "nuclei.csv")
    assert widget.measure() == len(np.unique(labels)) - 1
    import csv

    rows = list(csv.DictReader(open(tmp_path / "nuclei.csv")))
    expected = measure_nuclei(labels, volume, voxel)
    assert [int(r["label"]) for r in rows] == [e["label"] for e in expected]
    assert [float(r["volume_um3"]) for r in rows] == pytest.approx(
        [e["volume_um3"] for e in expected], rel=1e-5)

    viewer.layers["nuclei"].scale = (1, 1, 1)
    notifications.clear()
    assert widget.measure() is None
    assert len(notifications) == 1 and "voxel size is unknown" in notifications[0]


def test_segment_equals_predict_py_and_saves_a_ctc_result(make_napari_viewer, qtbot, trained,
                                                          tiny_dataset,
                                                          tmp_path, notifications):
    model_dir, _ = trained
    voxel = voxel_of(tiny_dataset)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    shutil.copy(os.path.join(tiny_dataset, "02", "t001.tif"), stacks / "stack.tif")
    tool("predict.py", "--config-file", os.path.join(model_dir, "config.yaml"), "--input",
         str(stacks / "stack.tif"),
         "--output", str(tmp_path / "predicted"), "--voxel-size", *map(str, voxel),
         "MODEL.WEIGHTS", os.path.join(model_dir, "model_final.pth"), dataset_root=tiny_dataset)
    expected = tifffile.imread(tmp_path / "predicted" / "stack_labels.tif")
    # the tiny model finds nuclei: the comparison is not between empty volumes
    assert expected.max() > 0

    viewer = make_napari_viewer()
    viewer.add_image(tifffile.imread(stacks / "stack.tif"), name="stack", scale=voxel)
    widget = plugin_widget(viewer, "Segment nuclei")
    widget.model_dir.value = model_dir
    assert [box.value
            for box in widget.voxel] == pytest.approx(voxel)  # prefilled from the layer's scale
    run_widget(widget, qtbot)
    labels = viewer.layers["stack labels"]
    assert np.array_equal(labels.data, expected) and tuple(labels.scale) == pytest.approx(voxel)
    assert widget.progress.value == widget.progress.max == expected.shape[0]

    save = plugin_widget(viewer, "Save as CTC result")
    assert save.layer.value is labels
    save.folder.value = str(tmp_path / "RES")
    assert save.save() == ["mask000.tif"]
    assert sorted(os.listdir(tmp_path / "RES")) == ["mask000.tif", "res_track.txt"]
    assert not [m for m in notifications if "rror" in m]


def test_a_4d_layer_segments_every_frame_or_the_current_one_and_cancels(
    make_napari_viewer, qtbot, trained,
    tiny_dataset, tmp_path,
    notifications):
    model_dir, _ = trained
    viewer = make_napari_viewer()
    image, reference = viewer.open(os.path.join(tiny_dataset, "02"), plugin="emr_d2")
    save = plugin_widget(viewer, "Save as CTC result")
    assert save.layer.value is reference  # the only labels layer
    widget = plugin_widget(viewer, "Segment nuclei")
    widget.model_dir.value = model_dir
    widget.image.value = image
    run_widget(widget, qtbot)
    labels = viewer.layers[f"{image.name} labels"]
    assert save.layer.value is labels  # the new result, not the reference
    assert viewer.dims.axis_labels == ("t", "z", "y",
                                       "x") and tuple(map(str, labels.units))[1:] == (
                                           "micrometer",) * 3
    predictor = load_predictor(model_dir)
    for t in range(3):
        assert np.array_equal(labels.data[t],
                              predictor(np.asarray(image.data[t]),
                                        voxel_um=voxel_of(tiny_dataset)).labels)
    assert labels.data.max() > 0 and widget.progress.value == 3 * image.data.shape[1]

    save.folder.value = str(tmp_path / "02_RES")
    save.save()
    seg = tool("ctc_seg.py", str(tmp_path / "02_RES"), os.path.join(tiny_dataset, "02_GT"),
               dataset_root=tiny_dataset)
    assert seg.stdout.startswith("SEG measure: ")

    viewer.layers.remove(labels)
    viewer.dims.set_current_step(0, 1)
    widget.current_frame_only.value = True
    run_widget(widget, qtbot)
    only = viewer.layers[f"{image.name} labels"].data
    assert np.array_equal(only[1], labels.data[1]) and not only[0].any() and not only[2].any()

    viewer.layers.remove(f"{image.name} labels")
    widget.tta.value = True  # test-time augmentation: the labels of the predictor with it
    run_widget(widget, qtbot)
    augmented = viewer.layers[f"{image.name} labels"].data[1]
    assert np.array_equal(augmented, load_predictor(model_dir, tta=True)(
        np.asarray(image.data[1]), voxel_um=voxel_of(tiny_dataset)).labels)
    assert augmented.max() > 0
    widget.tta.value = False

    viewer.layers.remove(f"{image.name} labels")
    widget.current_frame_only.value = False
    widget.run()
    widget.worker.yielded.connect(lambda done: widget.cancel())  # cancel after the first slice
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WORKER_TIMEOUT_MS)
    assert f"{image.name} labels" not in viewer.layers and widget.status.value == "cancelled"
    assert widget.progress.value < widget.progress.max
    assert not [m for m in notifications if "rror" in m]


def test_each_error_is_one_notification(make_napari_viewer, qtbot, trained, tiny_dataset, tmp_path,
                                        notifications):
    model_dir, _ = trained
    viewer = make_napari_viewer()
    widget = plugin_widget(viewer, "Segment nuclei")
    volume = tifffile.imread(os.path.join(tiny_dataset, "02", "t000.tif"))

    viewer.add_image(volume, name="stack")
    widget.model_dir.value = str(tmp_path / "nowhere")
    notifications.clear()
    widget.run()
    assert len(
        notifications) == 1 and "no model folder" in notifications[0] and widget.worker is None

    widget.model_dir.value = model_dir
    viewer.layers.clear()
    viewer.add_image(volume[0], name="one slice")
    notifications.clear()
    widget.run()
    assert (
        len(notifications) == 1
        and "one slice: a 2D layer" in notifications[0]
        and widget.worker is None
    )

    viewer.layers.clear()
    viewer.add_image(tifffile.imread(os.path.join(tiny_dataset, "02_GT", "SEG", "man_seg000.tif")),
                     name="gt")
    notifications.clear()
    widget.run()
    assert (
        len(notifications) == 1
        and "gt: looks like a label image" in notifications[0]
        and widget.worker is None
    )

    spaced = tmp_path / "spaced_model"
    shutil.copytree(model_dir, spaced)
    config = yaml.safe_load((spaced / "config.yaml").read_text())
    config["INPUT"]["SLICE_SPACING_UM"] = 0.4  # a model that reads its neighbours 0.4 um away
    (spaced / "config.yaml").write_text(yaml.safe_dump(config))
    widget.model_dir.value = str(spaced)
    viewer.layers.clear()
    viewer.add_image(volume, name="stack")  # napari's default scale: no voxel size
    notifications.clear()
    run_widget(widget, qtbot)
    assert len(notifications) == 1 and "voxel size" in notifications[0], notifications
    assert "stack labels" not in viewer.layers

    save = plugin_widget(viewer, "Save as CTC result")
    save.layer.value = viewer.add_labels(np.zeros_like(volume, np.uint16), name="empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("x")
    save.folder.value = str(tmp_path / "full")
    notifications.clear()
    assert save.save() is None
    assert (
        len(notifications) == 1
        and "not empty" in notifications[0]
        and "tick 'overwrite'" in notifications[0]
    )
    assert os.listdir(tmp_path / "full") == ["other.txt"]

    viewer.layers.clear()
    _, reference = viewer.open(os.path.join(tiny_dataset, "02"), plugin="emr_d2")
    save.layer.value = reference
    save.folder.value = str(tmp_path / "from_reference")
    notifications.clear()
    assert save.save() is None
    assert len(notifications) == 1 and "the reference segmentation" in notifications[0]
    assert not (tmp_path / "from_reference").exists()


def test_screenshot_of_a_demo_stack_in_3d(make_napari_viewer, qtbot, tmp_path):
    """The README's picture: a demo sequence opened with the reader (raw stack and reference
    labels), 3D view, the plugin's widgets docked. EMR_D2_WRITE_DOCS=1 writes docs/napari.png."""
    write_synthetic_dataset(str(tmp_path / "SIM-demo"), "demo", seed=3, frames=1)
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1400, 800)
    layers = viewer.open(str(tmp_path / "SIM-demo" / "01"), plugin="emr_d2")
    assert [type(layer) for layer in layers] == [Image, Labels]
    layers[0].contrast_limits = np.percentile(np.asarray(layers[0].data), [1, 99.8]).tolist()
    layers[0].rendering, layers[0].blending = "mip", "additive"
    layers[1].opacity = 0.6
    plugin_widget(viewer, "Segment nuclei")
    plugin_widget(viewer, "Save as CTC result")
    qtbot.wait(200)  # let the docks lay out before the view is fitted to the canvas
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    viewer.camera.angles = (5, -35, 60)
    viewer.camera.zoom *= 0.9
    shot = viewer.screenshot(canvas_only=False, flash=False)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    colours = np.unique(canvas[..., :3].reshape(-1, 3) // 32, axis=0)
    assert len(colours) > 20, "the 3D canvas rendered (almost) nothing"
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "napari.png", shot)
    if os.environ.get("EMR_D2_WRITE_DOCS") == "1":
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        shutil.copy(tmp_path / "napari.png", SCREENSHOT)
