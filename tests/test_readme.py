"""The README's Python example runs, and the Python API links as tools/predict.py does."""

import contextlib
import io
import os
import re
import shutil

import numpy as np
import tifffile

from helpers import CONFIGS, ROOT, TINY_MODEL, tool


def readme_python_example() -> str:
    text = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(r"<!-- python-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python-example block"
    return match.group(1)


def test_the_readme_python_example_runs(trained, tiny_dataset, tmp_path, monkeypatch):
    folder, _ = trained
    run_dir = tmp_path / "output" / "demo" / "mlp_fusion"
    run_dir.mkdir(parents=True)
    for name in ("config.yaml", "model_final.pth", "linking.json"):
        shutil.copy(os.path.join(folder, name), run_dir / name)
    shutil.copy(os.path.join(tiny_dataset, "02", "t000.tif"), tmp_path / "stack.tif")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(printed):
        exec(readme_python_example(), namespace)
    volume = tifffile.imread(tmp_path / "stack.tif")
    assert namespace["linked"].labels.shape == volume.shape and namespace["linked"].labels.max() > 0
    assert namespace["relinked"].labels.shape == volume.shape
    assert len(namespace["nuclei"]) == namespace["linked"].labels.max()
    assert printed.getvalue().startswith(f"{volume.shape} ")


def test_python_api_default_linking_is_what_predict_tool_writes(trained, tiny_dataset, tmp_path):
    """With no options, link_slices uses the default config's linking, as tools/predict.py with
    the default config does (no linking.json beside these weights)."""
    from emr_d2.engine import setup_config
    from emr_d2.linking import LinkOptions, link_slices
    from emr_d2.predictor import VolumePredictor

    folder, _ = trained
    weights = tmp_path / "weights" / "model_final.pth"
    weights.parent.mkdir()
    shutil.copy(os.path.join(folder, "model_final.pth"), weights)
    opts = [*TINY_MODEL, "INPUT.NUM_SLICES", "3", "MODEL.WEIGHTS", str(weights)]
    config = os.path.join(CONFIGS, "mlp_fusion.yaml")
    source = os.path.join(tiny_dataset, "02", "t001.tif")
    tool(
        "predict.py",
        "--config-file",
        config,
        "--input",
        source,
        "--output",
        str(tmp_path / "out"),
        *opts,
        dataset_root=tiny_dataset,
    )
    written = tifffile.imread(tmp_path / "out" / "mask001.tif")

    cfg = setup_config(config, opts)
    assert LinkOptions.from_config(cfg) == LinkOptions.from_config()
    regions = VolumePredictor(cfg).regions(tifffile.imread(source))
    linked = link_slices(regions)
    assert written.max() > 0
    np.testing.assert_array_equal(linked.labels, written)


def test_the_user_docs_are_short_complete_and_free_of_history():
    """README.md is a user's guide of at most 300 lines; it and the docs it links to stay inside
    the repository and state what is true now (no development history)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.splitlines()) <= 300
    pages = [
        "README.md",
        "benchmarks/README.md",
        *(f"docs/{p}" for p in os.listdir(f"{ROOT}/docs")),
    ]
    history = re.compile(r"this round|earlier round|previous round|this session|\bissue\b|#\d+\b"
                         r"|\.\./shared")
    for page in (p for p in pages if p.endswith(".md")):
        text = open(os.path.join(ROOT, page)).read()
        assert not history.findall(text), (page, history.findall(text))
        for link in re.findall(r"\]\(([^)#]+)", text):
            if not link.startswith("http"):
                target = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), link))
                assert os.path.exists(target), (page, link)


def test_readme_names_the_system_packages_ci_installs_for_napari():
    text = open(os.path.join(ROOT, "README.md")).read()
    match = re.search(r"<!-- napari-system-packages -->\s*```\n(.*?)```", text, re.S)
    assert match, "README.md has no napari-system-packages block"
    named = match.group(1).replace("\\\n", " ").split()
    assert named[:2] == ["sudo", "apt-get"] and named[2] == "install"
    installed = open(os.path.join(ROOT, "scripts", "napari-system-packages.txt")).read().split()
    assert named[3:] == installed
    assert "scripts/napari-system-packages.txt" in open(os.path.join(ROOT, ".ci", "run")).read()
