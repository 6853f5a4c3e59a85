# emr_d2: `make demo` and `make test` are all a user needs.
PYTHON_SYSTEM ?= python3
VENV ?= .venv
# The venv sees the packages of PYTHON_SYSTEM, so that a PyTorch and detectron2 installed there
# (e.g. an official CUDA build) are used instead of installed again. VENV_FLAGS= isolates it.
VENV_FLAGS ?= --system-site-packages
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Point this at an official detectron2 source checkout to build it (with its C++/CUDA ops) instead.
DETECTRON2_SOURCE ?=
PYTEST_ARGS ?=
# `make demo DEMO_ARGS=--baseline` also trains the 2D baseline for comparison.
DEMO_ARGS ?=

# `make peers`: StarDist-3D and Cellpose (and the classical peer) in environments of their own,
# so that TensorFlow and the peers' pins never touch the product's (benchmarks/peers/README.md).
EMR_D2_PEERS ?= .peers

.PHONY: setup test demo clean-demo peers

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: setup.py scripts/install_detectron2.sh
	test -x $(PY) || $(PYTHON_SYSTEM) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	DETECTRON2_SOURCE=$(DETECTRON2_SOURCE) bash scripts/install_detectron2.sh $(PY)
	$(PY) -m pip install -q -e ".[test,napari]"
	touch $@

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

demo: setup
	$(PY) tools/demo.py --output output/demo $(DEMO_ARGS)

clean-demo:
	rm -rf output/demo datasets/SIM-demo

peers: $(EMR_D2_PEERS)/stardist/.done $(EMR_D2_PEERS)/cellpose/.done

$(EMR_D2_PEERS)/%/.done: benchmarks/peers/requirements-%.txt
	test -x $(EMR_D2_PEERS)/$*/bin/python || $(PYTHON_SYSTEM) -m venv $(EMR_D2_PEERS)/$*
	$(EMR_D2_PEERS)/$*/bin/python -m pip install -q -r $<
	touch $@
