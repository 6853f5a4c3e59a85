"""Shared fixtures: a tiny SIM+-like CTC dataset made on the fly, and tiny model configs."""
import os
import shutil
import sys
import tempfile

# The benchmark's runner, benchmarks/benchmark_runner.py, is imported by the tests as by the tools.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))

# Keep the slice-index cache and dataset discovery of the tests away from the user's; the folders
# made here are removed when the session ends.
SESSION_FOLDERS = []
for variable, prefix in (("EMR_CACHE", "emr_cache_"), ("EMR_DATASETS", "emr_datasets_")):
    if variable not in os.environ:
        os.environ[variable] = tempfile.mkdtemp(prefix=prefix)
        SESSION_FOLDERS.append(os.environ[variable])

# Scripts under benchmarks/ and tools/ set EMR_D2_NO_REGISTER=1 when imported (they start without
# torch); a test that imports one must not pass it on to the tools later tests start (no dataset
# would be registered there).
NO_REGISTER = os.environ.get("EMR_D2_NO_REGISTER")

import pytest  # noqa: E402

from emr_d2.data.synthetic import SyntheticPreset, write_synthetic_dataset  # noqa: E402

# The fraction of TINY_02's nuclei the trained fixture must find (benchmarks/fixture_learning.py
# measures how far above it the fixture lands on each CPU kernel path).
LEARNED_RECALL = 0.5

# 8 x 64 x 64 voxels, 4 nuclei of about 24 px across.
TINY_PRESET = SyntheticPreset(field_um=(3.2, 16.0, 16.0), scale=0.5, frames={"01": 6, "02": 3},
                              num_nuclei=4, min_separation=1.05, division_rate=0.0)


def pytest_collection_modifyitems(items):
    """Mark the tests that need a model that learned (`-m learned` runs them alone, as CI's pass
    under a second CPU kernel path does)."""
    for item in items:
        if "trained" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.learned)


def pytest_sessionfinish(session, exitstatus):
    for folder in SESSION_FOLDERS:
        shutil.rmtree(folder, ignore_errors=True)


def restore_registration_env() -> None:
    """EMR_D2_NO_REGISTER as the test session found it."""
    if NO_REGISTER is None:
        os.environ.pop("EMR_D2_NO_REGISTER", None)
    else:
        os.environ["EMR_D2_NO_REGISTER"] = NO_REGISTER


@pytest.fixture(autouse=True)
def registration_env_kept():
    """Every test starts and ends with EMR_D2_NO_REGISTER as the session found it (also undoing a
    script imported while the tests were collected)."""
    restore_registration_env()
    yield
    restore_registration_env()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """A CTC-layout dataset (sequences 01 with 6 frames and 02 with 3) of 8 x 64 x 64 volumes."""
    root = str(tmp_path_factory.mktemp("data") / "TINY")
    write_synthetic_dataset(root, TINY_PRESET, seed=1)
    return root


@pytest.fixture(scope="session")
def registered_tiny(tiny_dataset) -> str:
    """The tiny dataset registered as TINY_01, TINY_02 and their splits; returns the root."""
    from emr_d2.data.catalog import register_ctc_dataset

    register_ctc_dataset(tiny_dataset, "TINY")
    return tiny_dataset


@pytest.fixture(scope="session")
def trained(tiny_dataset, tmp_path_factory):
    """A tiny mlp_fusion model trained by tools/train_net.py until it finds the tiny nuclei (see
    helpers.train_learning_model): its folder holds config.yaml, model_final.pth and linking.json
    (calibrated on TINY_01_val); evaluation on TINY_02 runs at the end. Fails with one line if the
    model did not learn. Returns (folder, the tool's output)."""
    from helpers import train_learning_model

    out = str(tmp_path_factory.mktemp("train"))
    run, metrics = train_learning_model(tiny_dataset, out)
    log = run.stdout + run.stderr
    if run.returncode != 0:
        pytest.fail(
            f"training the tiny model failed (exit {run.returncode}): "
            f"{log.strip().splitlines()[-1]}",
            pytrace=False)
    if metrics["recall"] < LEARNED_RECALL:
        pytest.fail(
            f"the tiny model did not learn: recall {metrics['recall']:.2f} < {LEARNED_RECALL} on "
            "TINY_02 "
            f"(SEG {metrics['SEG']:.3f}); log in {out}", pytrace=False)
    return out, log


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights of the tiny 3-slice mlp_fusion model, and of a model that does not fit it."""
    import torch
    from detectron2.modeling import build_model

    from helpers import tiny_cfg

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save({"model": build_model(tiny_cfg("mlp_fusion", 3)).state_dict()}, folder / "mlp.pth")
    torch.save({"model": build_model(tiny_cfg("channel_fusion", 5)).state_dict()},
               folder / "other.pth")
    return folder
