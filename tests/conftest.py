"""Shared fixtures: a tiny SIM+-like CTC dataset made on the fly, and tiny model configs."""
import os
import tempfile

# Keep the slice-index cache and dataset discovery of the tests away from the user's.
os.environ.setdefault("EMR_CACHE", tempfile.mkdtemp(prefix="emr_cache_"))
os.environ.setdefault("EMR_DATASETS", tempfile.mkdtemp(prefix="emr_datasets_"))

import pytest  # noqa: E402

from emr_d2.data.synthetic import SyntheticPreset, write_synthetic_dataset  # noqa: E402

# 8 x 64 x 64 voxels, 4 nuclei of about 24 px across.
TINY_PRESET = SyntheticPreset(field_um=(3.2, 16.0, 16.0), scale=0.5, frames={"01": 6, "02": 3},
                              num_nuclei=4, min_separation=1.05, division_rate=0.0)


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
    """A tiny mlp_fusion model trained for 30 iterations (tools/train_net.py): its folder holds
    config.yaml, model_final.pth and linking.json (calibrated on TINY_01_val); evaluation runs
    at the end. Returns (folder, the tool's output)."""
    from helpers import CONFIGS, TINY_MODEL, TRAIN, tool

    out = str(tmp_path_factory.mktemp("train"))
    run = tool("train_net.py", "--config-file", os.path.join(CONFIGS, "mlp_fusion.yaml"), *TINY_MODEL, *TRAIN,
               "SOLVER.MAX_ITER", "30", "SOLVER.CHECKPOINT_PERIOD", "1000", "OUTPUT_DIR", out,
               "DATASETS.VAL", "('TINY_01_val',)", "DATASETS.SPLIT.GAP", "1", "TEST.VAL_LOSS_PERIOD", "10",
               "TEST.VAL_LOSS_BATCHES", "2", "TEST.CTC.CALIBRATE_LINKING", "True", "SEED", "1",
               dataset_root=tiny_dataset)
    return out, run.stdout + run.stderr
