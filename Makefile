# The two commands of the README: `make setup` (install, then run the default experiment) and
# `make test`. Everything lives in .venv, so nothing is installed system-wide.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup install test test-newest bench ui gpu-check

setup: install
	$(BIN)/moonprop

# torch is pinned here, not in pyproject.toml: 2.13.0 is the CPU build this project is tested with,
# and an open range would pull a multi-GB CUDA build onto machines without a GPU.
install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[search,server,tensorboard,test]'

test:
	$(BIN)/python -m pytest

# the tests of MLflow's internals, models, auth and UI against the newest MLflow pyproject.toml
# allows, in .venv-newest (`make test` tests what `make install` resolves, the lowest)
test-newest:
	scripts/newest-mlflow

bench:
	$(BIN)/python benchmarks/bench.py

# on a machine with a CUDA device: a default run and a 1,000-job batched sweep on GPU and on CPU,
# compared job by job (outputs/gpu-check/); elsewhere it says so in one line
gpu-check:
	$(BIN)/python scripts/gpu_check.py

# the UI for the default store, on this machine only; prints the addresses that open on the runs
UI_PORT ?= 5000
ui:
	$(BIN)/python scripts/ui.py --store outputs/mlflow.db --port $(UI_PORT)
