"""Shared fixtures (a tiny generated dataset, the suite's two training runs of notebooks/train.ipynb) and test tiers.

Tiers (markers registered in pytest.ini, --strict-markers):
* slow: end to end, minutes in all: a notebook run, a training run, a rehearsal, the Kaggle stand-in running pushed
  notebooks. `make test-fast` (pytest -m "not slow") leaves these out; `make test` runs everything.
* kaggle_versions: a slow test that `make test-kaggle-versions` runs again under Kaggle's pinned versions, beside
  every quick test (-m "not slow or kaggle_versions"): the train notebook end to end once and the reports.
Most slow tests are marked here, by the fixtures they use (pytest_collection_modifyitems); a slow test that uses
none of them carries @pytest.mark.slow in its file (or is named in SLOW_TESTS below).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_SIZE = 32
# Parameters of the one papermill run of train.ipynb that the notebook, analysis and predict tests share.
TINY_TRAIN_PARAMS = {"alpha": 0.2, "epochs": 2, "batch_size": 8, "image_size": TINY_SIZE, "val_split": 0.25,
                     "seed": 1, "learning_rate": 0.001, "max_images": None, "rotation": 0.0, "zoom": 0.0}


# What TensorFlow's C++ start-up logging prints (absl, oneDNN, the CUDA probes); none of it belongs in a report.
TF_LOG_NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "oneDNN", "cpu_feature_guard", "computation_placer")


def assert_report_shows_figures(executed: Path, html: Path, saved: list[Path]) -> None:
    """Every figure the run saved is an image/png output of the executed notebook and an <img> of its HTML report."""
    import nbformat

    from utils.report import count_images

    assert saved, "the run saved no figure"
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == len(saved), f"{executed.name}: {len(pngs)} image outputs for {len(saved)} saved figures"
    texts = [o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs]
    assert not [t for t in texts if "<Figure size" in t], f"{executed.name}: a figure printed as text"
    noise = [t for t in texts for marker in TF_LOG_NOISE if marker in t]
    assert not noise, f"{executed.name}: TensorFlow log lines in the outputs: {noise[:1]}"
    page = html.read_text()
    assert count_images(page) == len(saved), f"{html.name}: {count_images(page)} <img> for {len(saved)} figures"
    assert not [m for m in TF_LOG_NOISE if m in page], f"{html.name}: TensorFlow log lines in the report"


def papermill_from_notebooks(notebook: str, output: Path, params: dict) -> subprocess.CompletedProcess:
    """The users' own command, run from notebooks/: `papermill NOTEBOOK OUTPUT -p NAME VALUE ...` (a list or dict
    value as `-y NAME: VALUE`, which `-p` cannot pass). Its output and exit code are returned, not checked."""
    command = [str(Path(sys.executable).parent / "papermill"), notebook, str(output)]
    for name, value in params.items():
        if isinstance(value, (list, dict)):
            command += ["-y", json.dumps({name: value})]
        else:
            command += ["-p", name, str(value)]
    return subprocess.run(command, cwd=REPO_ROOT / "notebooks", capture_output=True, text=True, timeout=900)


def run_from_notebooks(notebook: str, out: Path, params: dict) -> Path:
    """papermill_from_notebooks into `out` (output_dir); fails the test with papermill's output when it fails."""
    done = papermill_from_notebooks(notebook, out.parent / f"{out.name}-{notebook}", {**params, "output_dir": str(out)})
    assert done.returncode == 0, f"papermill {notebook} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return out / notebook


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle 140k layout (12/4/6 images per class in train/valid/test)."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("tiny-dataset")
    return synthetic.generate_dataset(root, counts={"train": 12, "valid": 4, "test": 6}, image_size=TINY_SIZE, seed=3)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    """Output folder of one run of notebooks/train.ipynb on the tiny dataset, started as users start it (from
    notebooks/ with the papermill command), so its report is the one the kernel renders itself."""
    out = tmp_path_factory.mktemp("tiny-run")
    run_from_notebooks("train.ipynb", out, {**TINY_TRAIN_PARAMS, "data_dir": str(tiny_dataset)})
    assert (out / "metrics.json").is_file(), "the tiny training run wrote no metrics.json"
    return out


@pytest.fixture(scope="session")
def tiny_metrics(tiny_run) -> dict:
    """metrics.json of the tiny training run."""
    return json.loads((tiny_run / "metrics.json").read_text())


# The second papermill run of train.ipynb: two sources (the tiny dataset and a class-folder one without a test split),
# resize_mode crop and every train-time degradation on, so one run covers all three.
MULTI_DEGRADATIONS = {"blur_prob": 0.5, "blur_sigma": [0.0, 2.0], "jpeg_prob": 0.5, "jpeg_quality": [30, 90],
                      "rescale_prob": 0.5, "rescale_range": [0.5, 1.0], "noise_prob": 0.5, "noise_sigma": [0.0, 8.0]}


@pytest.fixture(scope="session")
def second_source(tmp_path_factory) -> Path:
    """A class-folder dataset (real/ and ai/, 8 JPEGs each, no test split) named "plain-faces"."""
    from utils import synthetic

    root = tmp_path_factory.mktemp("second-source") / "plain-faces"
    for folder, fake in (("real", False), ("ai", True)):
        (root / folder).mkdir(parents=True)
        for i in range(8):
            image = synthetic.make_image(100 + i, fake, image_size=TINY_SIZE + 8, seed=11)
            (root / folder / f"{i}.jpg").write_bytes(synthetic.encode_jpeg(image, 80))
    return root


@pytest.fixture(scope="session")
def multi_run(tmp_path_factory, tiny_dataset, second_source) -> Path:
    """Output folder of one run of train.ipynb by tools.notebook (the runner) on two sources, crop mode and
    degradations (1 epoch)."""
    from tools.notebook import run_notebook

    out = tmp_path_factory.mktemp("multi-run")
    run_notebook(REPO_ROOT / "notebooks" / "train.ipynb",
                 {**TINY_TRAIN_PARAMS, "epochs": 1, "max_images": 4, "data_dir": [str(tiny_dataset), str(second_source)],
                  "output_dir": str(out), "resize_mode": "crop", **MULTI_DEGRADATIONS})
    assert (out / "metrics.json").is_file(), "the two-source training run wrote no metrics.json"
    return out


# ---------------------------------------------------------------------------------------------- tiers

# Fixtures whose set-up runs something end to end: every test using one (directly or through another fixture)
# is slow. tiny_run / multi_run: papermill runs of train.ipynb; rehearsals: tests/test_rehearse.py's four rehearsals
# of the Kaggle kernel; stand_in: tests/test_kaggle.py's stand-in Kaggle, which executes each pushed notebook.
SLOW_FIXTURES = frozenset({"tiny_run", "multi_run", "rehearsals", "stand_in"})
# Slow tests that use none of those fixtures: a test's node id without parameters, or a whole file.
SLOW_TESTS = frozenset({
    "tests/test_bench.py::test_benchmark_parts_and_report_on_tiny_sizes",  # trains and times ResNet50 steps
    "tests/test_backends.py",  # every test reads what the JAX and PyTorch subprocesses built and trained
})


def pytest_collection_modifyitems(config, items):
    """Mark slow every test that uses a SLOW_FIXTURES fixture or is named (or in a file named) in SLOW_TESTS."""
    for item in items:
        test = item.nodeid.split("[", 1)[0]
        if SLOW_FIXTURES.intersection(item.fixturenames) or test in SLOW_TESTS or test.split("::")[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def scores():
    """Fixed labels and noisy-but-informative P(fake) scores (40 images, 18 real, 22 fake)."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 18 + [1] * 22)
    p = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    return y, p


def write_image(path: Path, seed: int, size: int = 16, mode: str = "RGB", fmt: str | None = None) -> Path:
    """A small random-noise image (noise so JPEGs are several KB and truncation is real)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    image.save(path, format=fmt or ("PNG" if path.suffix.lower() == ".png" else "JPEG"), quality=95)
    return path


# A valid namespace of the train notebook's parameters without those added later (as an older notebook passes it).
GOOD_PARAMS = {"alpha": 0.2, "epochs": 3, "batch_size": 8, "image_size": 64, "val_split": 0.25, "seed": 0,
               "learning_rate": 0.001, "data_dir": None, "max_images": None, "flip": "horizontal", "rotation": 0.1,
               "zoom": 0.1, "contrast": 0.1, "weights": None, "bn_momentum": 0.99, "early_stopping": 0,
               "output_dir": "out"}


def simulated_kaggle(monkeypatch, tmp_path: Path, run_type: str | None = "Batch") -> tuple[Path, Path]:
    """A simulated /kaggle: (input folder, working folder) through the variables a rehearsal sets."""
    inputs, working = tmp_path / "input", tmp_path / "working"
    inputs.mkdir(parents=True)
    working.mkdir(parents=True)
    monkeypatch.setenv("KAGGLE_INPUT_ROOT", str(inputs))
    monkeypatch.setenv("KAGGLE_WORKING_ROOT", str(working))
    monkeypatch.delenv("KAGGLE_REHEARSAL_REPLICAS", raising=False)
    if run_type is None:
        monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    else:
        monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", run_type)
    return inputs, working
