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
