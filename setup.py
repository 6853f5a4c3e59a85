from setuptools import find_packages, setup

setup(
    name="emr_d2",
    version="0.1.0",
    description="2.5D instance segmentation of cell nuclei in 3D microscopy on detectron2",
    packages=find_packages(include=["emr_d2", "emr_d2.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch",
        "torchvision",
        "fvcore",
        "iopath",
        "tifffile",
        "pycocotools",
        "numpy",
        "scipy",
        "tqdm",
        "matplotlib",
        "tensorboard",
        "opencv-python-headless",  # imported by detectron2.projects.point_rend
        "scikit-image",  # regionprops: measuring the segmented nuclei
    ],
    package_data={"emr_d2.napari_plugin": ["napari.yaml"]},
    entry_points={"napari.manifest": ["emr_d2 = emr_d2.napari_plugin:napari.yaml"]},
    extras_require={
        "test": ["pytest", "py-ctcmetrics", "ruff"],
        # the napari plugin, and what its tests need (Qt offscreen, a virtual X server for OpenGL)
        "napari": ["napari>=0.5", "pyqt6", "pytest-qt", "pytest-xvfb"],
    },
)
