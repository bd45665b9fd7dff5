# Task runner. Every target sets up .venv from requirements.txt first (once, again when requirements.txt changes).
# Your runs go to runs/ (git-ignored); the committed reference reports in results/ are made with OUT=results
# (results/README.md lists the commands), so running the main job never rewrites a committed file.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
KAGGLE_VENV := .venv-kaggle
OUT ?= runs
UNSEEN := '["synthetic:nearest", "synthetic:bilinear"]'
# The sweep's slopes (tools.sweep's default: 0 0.01 0.1 0.2 0.3). Each run is one demo training, about 8 minutes on
# 2 CPU cores: the committed sweep compares the ReLU baseline with the study's slope only (ALPHAS="0 0.2").
ALPHAS ?= 0 0.01 0.1 0.2 0.3
# Test tiers (markers in pytest.ini, set in tests/conftest.py): slow = end to end (notebook and training runs,
# rehearsals, the Kaggle stand-in); make test-fast leaves them out. Under Kaggle's pins (TensorFlow, Keras, numpy,
# pandas, scikit-learn, nbconvert) make test-kaggle-versions runs every quick test (model build/save/load, training
# and resume, two replicas under mixed precision, pipelines, metrics, tables, in-kernel report rendering) and the
# slow tests marked kaggle_versions: the train notebook end to end once and the analysis, explore and robustness
# reports. The other end-to-end paths (rehearsals, stand-in sessions, sweep, two-source run) run once, in make pytest.
FAST_TESTS := -m "not slow"
KAGGLE_VERSION_TESTS := -m "not slow or kaggle_versions"

.PHONY: jupyter study setup demo test test-fast pytest lint strip test-kaggle-versions explore analyze sweep robustness multi-source bench bench-train-step

# The repository itself is installed in place (pyproject.toml), so the notebooks import utils from any folder.
$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# The model on JAX and PyTorch (tests/test_backends.py, benchmarks/train_step.py): into .venv only, for the tests
# and the benchmark; the main job and Kaggle's kernels need neither.
$(VENV)/.backends: $(VENV)/.installed requirements-backends.txt
	$(PY) -m pip install --quiet -r requirements-backends.txt
	touch $@

$(KAGGLE_VENV)/.installed: requirements.txt constraints-kaggle.txt pyproject.toml
	$(PYTHON) -m venv $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KAGGLE_VENV)/bin/python -m pip install --quiet -r requirements.txt -c constraints-kaggle.txt
	$(KAGGLE_VENV)/bin/python -m pip install --quiet --no-deps -e .
	touch $@

setup: $(VENV)/.installed

# The main job: the training notebook on the embedded synthetic default, rendered to $(OUT)/demo/train.html.
# A finished run in $(OUT)/demo is reused (only re-evaluated); delete the folder to train again.
demo: setup
	$(PY) -m tools.notebook notebooks/train.ipynb -f params/cpu-demo.yaml -p output_dir $(OUT)/demo

# JupyterLab on notebooks/: its kernels start there and import utils from the installed repository.
jupyter: setup
	$(VENV)/bin/jupyter lab --notebook-dir notebooks

# Everything CI checks: lint, the whole suite, then under Kaggle's pinned versions the quick tests and the
# kaggle_versions end-to-end ones (KAGGLE_VERSION_TESTS above).
test: lint pytest test-kaggle-versions

# --durations: CI's log names the slowest tests, so a new slow one shows where the suite's minutes go.
pytest: setup $(VENV)/.backends
	$(PY) -m pytest --durations=10

# The edit loop: lint and the quick tests (a few minutes on 2 CPU cores); make test before pushing.
test-fast: lint
	$(PY) -m pytest $(FAST_TESTS)

# Lint and import order (ruff, settings in pyproject.toml); notebooks must be committed without outputs.
lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb || { echo "notebooks hold outputs: run make strip"; exit 1; }

strip: setup
	$(VENV)/bin/nbstripout notebooks/*.ipynb

test-kaggle-versions: $(KAGGLE_VENV)/.installed
	$(KAGGLE_VENV)/bin/python -m pytest $(KAGGLE_VERSION_TESTS) --durations=10

explore: setup
	$(PY) -m tools.notebook notebooks/explore.ipynb -f params/explore-demo.yaml -p output_dir $(OUT)/explore

analyze: setup
	$(PY) -m tools.notebook notebooks/analyze.ipynb -f params/analyze-demo.yaml \
		-p run_dirs '["$(OUT)/demo"]' -p output_dir $(OUT)/analysis

# The study plan at CPU scale (params/study-demo.yaml): 2 slopes x 6 seeds on the embedded default, then the plan's
# analysis and verdict (about an hour on 2 CPU cores; the same command again reuses finished runs).
study: setup
	$(PY) -m tools.sweep --plan params/study-demo.yaml --output-root $(OUT)/study-demo

sweep: setup
	$(PY) -m tools.sweep -f params/cpu-demo.yaml --alphas $(ALPHAS) --seeds 42 43 44 --output-root $(OUT)/sweep -a extra_data_dirs $(UNSEEN)

# The robustness study (tools/robustness.py): resize, train-time blur+JPEG and crop, seeds 42-44, on the embedded default
# and on FACES, a folder of real and fake faces (optional; e.g. a sample of the 140k dataset). About 15 demo-sized
# trainings: two to three hours on 2 CPU cores.
FACES ?=
robustness: setup
	$(PY) -m tools.robustness -f params/cpu-demo.yaml --output-root $(OUT)/robustness $(if $(FACES),--faces $(FACES))

# One model over several datasets (data_dir a list): the embedded default pooled with FACES, metrics per source
# (Grad-CAM is left to the demo's analysis: its image grids would triple this report's size).
multi-source: setup
	@test -n "$(FACES)" || { echo "make multi-source needs FACES=/path/to/a/folder/of/real/and/fake/faces"; exit 2; }
	$(PY) -m tools.notebook notebooks/train.ipynb -f params/cpu-demo.yaml \
		-p data_dir '["synthetic:transposed", "$(FACES)"]' -p output_dir $(OUT)/multi-source/run
	$(PY) -m tools.notebook notebooks/analyze.ipynb -f params/analyze-demo.yaml -p gradcam_samples 0 \
		-p run_dirs '["$(OUT)/multi-source/run"]' -p output_dir $(OUT)/multi-source/analysis

bench: setup
	$(PY) -m benchmarks.bench --out $(OUT)/bench

# The train step on any Keras 3 backend (benchmarks/train_step.py: only Keras and that backend); BACKEND=jax, torch
# or tensorflow; OUT=results for the committed records (docs/speed.md). Under JAX, DEVICES=8 times the data-parallel
# step on 8 devices too (a TPU v5e-8), and VIRTUAL_DEVICES=8 makes them of a CPU host's cores (a smoke test).
BACKEND ?= jax
DEVICES ?= 1
VIRTUAL_DEVICES ?=
bench-train-step: setup $(VENV)/.backends
	$(PY) -m benchmarks.train_step --backend $(BACKEND) --devices $(DEVICES) \
		$(if $(VIRTUAL_DEVICES),--virtual-devices $(VIRTUAL_DEVICES)) --out $(OUT)/bench
