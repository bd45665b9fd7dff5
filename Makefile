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
# The tests that touch what Kaggle's image pins (TensorFlow, Keras, numpy, pandas, scikit-learn).
KAGGLE_VERSION_TESTS := tests/test_model.py tests/test_training.py tests/test_train_notebook.py \
	tests/test_analyze_notebook.py tests/test_kaggle.py tests/test_rehearse.py

.PHONY: setup demo test pytest lint strip test-kaggle-versions explore analyze sweep robustness multi-source bench

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(KAGGLE_VENV)/.installed: requirements.txt constraints-kaggle.txt
	$(PYTHON) -m venv $(KAGGLE_VENV)
	$(KAGGLE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(KAGGLE_VENV)/bin/python -m pip install --quiet -r requirements.txt -c constraints-kaggle.txt
	touch $@

setup: $(VENV)/.installed

# The main job: the training notebook on the embedded synthetic default, rendered to $(OUT)/demo/train.html.
# A finished run in $(OUT)/demo is reused (only re-evaluated); delete the folder to train again.
demo: setup
	$(PY) -m tools.notebook notebooks/train.ipynb -f params/cpu-demo.yaml -p output_dir $(OUT)/demo

# Everything CI checks: lint, the whole suite, then the version-sensitive tests under Kaggle's pinned versions.
test: lint pytest test-kaggle-versions

pytest: setup
	$(PY) -m pytest

# Lint and import order (ruff, settings in pyproject.toml); notebooks must be committed without outputs.
lint: setup
	$(PY) -m ruff check .
	$(VENV)/bin/nbstripout --verify notebooks/*.ipynb || { echo "notebooks hold outputs: run make strip"; exit 1; }

strip: setup
	$(VENV)/bin/nbstripout notebooks/*.ipynb

test-kaggle-versions: $(KAGGLE_VENV)/.installed
	$(KAGGLE_VENV)/bin/python -m pytest $(KAGGLE_VERSION_TESTS)

explore: setup
	$(PY) -m tools.notebook notebooks/explore.ipynb -f params/explore-demo.yaml -p output_dir $(OUT)/explore

analyze: setup
	$(PY) -m tools.notebook notebooks/analyze.ipynb -f params/analyze-demo.yaml \
		-p run_dirs '["$(OUT)/demo"]' -p output_dir $(OUT)/analysis

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
