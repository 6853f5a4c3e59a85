"""emr_d2: 2.5D instance segmentation of cell nuclei in 3D microscopy, on detectron2.

Importing the package registers its models with detectron2's registries and every CTC dataset
under $EMR_DATASETS (default ./datasets) with the DatasetCatalog. Torch-free command-line tools
set EMR_D2_NO_REGISTER=1 before importing ``emr_d2.evaluation.seg`` or ``emr_d2.data.ctc``, so
that neither torch nor detectron2 is loaded.
"""
import os

__version__ = "0.1.0"

if os.environ.get("EMR_D2_NO_REGISTER") != "1":
    from . import modeling  # noqa: F401  (registers backbones, ROI heads, meta-architecture)
    from .config import add_emr_config  # noqa: F401
    from .data.catalog import register_all_ctc_datasets

    register_all_ctc_datasets()
