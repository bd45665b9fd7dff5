"""Shared fixtures: a tiny generated dataset and one tiny training run of notebooks/train.ipynb (session-scoped)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_SIZE = 32
# Parameters of the one papermill run of train.ipynb that the notebook, analysis and predict tests share.
TINY_TRAIN_PARAMS = {"alpha": 0.2, "epochs": 2, "batch_size": 8, "image_size": TINY_SIZE, "val_split": 0.25,
                     "seed": 1, "learning_rate": 0.001, "max_images": None, "rotation": 0.0, "zoom": 0.0}


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle 140k layout (12/4/6 images per class in train/valid/test)."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("tiny-dataset")
    return synthetic.generate_dataset(root, counts={"train": 12, "valid": 4, "test": 6}, image_size=TINY_SIZE, seed=3)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    """Output folder of one papermill run of notebooks/train.ipynb on the tiny dataset."""
    from tools.notebook import run_notebook

    out = tmp_path_factory.mktemp("tiny-run")
    run_notebook(REPO_ROOT / "notebooks" / "train.ipynb",
                 {**TINY_TRAIN_PARAMS, "data_dir": str(tiny_dataset), "output_dir": str(out)})
    assert (out / "metrics.json").is_file(), "the tiny training run wrote no metrics.json"
    return out


@pytest.fixture(scope="session")
def tiny_metrics(tiny_run) -> dict:
    """metrics.json of the tiny training run."""
    return json.loads((tiny_run / "metrics.json").read_text())
