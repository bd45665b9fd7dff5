# Task runner. Every target sets up .venv from requirements.txt first (once, again when requirements.txt changes).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test explore analyze sweep bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

# The main job: the training notebook on the embedded synthetic default, rendered to results/demo/train.html.
# A finished run in results/demo is reused (only re-evaluated); delete the folder to train again.
demo: setup
	$(PY) -m tools.notebook notebooks/train.ipynb -f params/cpu-demo.yaml

test: setup
	$(PY) -m pytest

explore: setup
	$(PY) -m tools.notebook notebooks/explore.ipynb -f params/explore-demo.yaml

analyze: setup
	$(PY) -m tools.notebook notebooks/analyze.ipynb -f params/analyze-demo.yaml

sweep: setup
	$(PY) -m tools.sweep -f params/cpu-demo.yaml --seeds 42 43 44 --output-root results/sweep \
		-a extra_data_dirs '["synthetic:nearest", "synthetic:bilinear"]'

bench: setup
	$(PY) -m benchmarks.bench
