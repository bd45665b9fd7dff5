"""utils.runtime: JSON-ready conversion and atomic writes, quiet logs, Kaggle's input mounts and the build record."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import simulated_kaggle

from tools.notebook import parse_value
from utils import run_files
from utils.runtime import to_jsonable, write_atomic, write_json


def test_to_jsonable_converts_numpy_paths_and_missing_values():
    record = {"a": np.float32(0.5), "b": np.int64(3), "c": np.array([[1, 2]]), "d": Path("x/y"), 4: (np.nan, 1.0),
              "e": float("inf"), "f": pd.NA, "g": [np.bool_(True)], "h": "text"}
    assert to_jsonable(record) == {"a": 0.5, "b": 3, "c": [[1, 2]], "d": "x/y", "4": [None, 1.0], "e": None,
                                   "f": None, "g": [True], "h": "text"}


def test_write_json_is_strict_json(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"auc": np.float64("nan"), "n": np.int32(2)})
    text = path.read_text()
    assert "NaN" not in text and text.endswith("\n")
    assert json.loads(text) == {"auc": None, "n": 2}


def test_write_atomic_keeps_the_old_file_when_writing_fails(tmp_path):
    path = write_atomic(tmp_path / "metrics.json", "old")

    class Boom:  # json.dumps falls back to str() for it, which fails: the record cannot be serialised
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_json(path, {"x": Boom()})
    with pytest.raises(TypeError):
        write_atomic(path, 3)  # not str or bytes: fails inside the temporary file's write
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary file left behind


@pytest.mark.parametrize("text, value", [("0.2", 0.2), ("None", None), ("[1, 2]", [1, 2]), ("true", True),
                                         ("results/x", "results/x")])
def test_parse_value_reads_command_line_values(text, value):
    assert parse_value(text) == value


def test_quiet_logs_silences_tensorflow_start_up_in_a_clean_environment():
    """A notebook run by plain papermill gets no TensorFlow C++ lines: quiet_logs works without any env set up."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT, TF_LOG_NOISE

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "ABSL", "GRPC"))}
    script = ("from utils import runtime\nruntime.quiet_logs()\nimport keras, numpy as np\n"
              "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])\n"
              "model.compile('adam', 'mse')\nmodel.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0)\n"
              "import warnings\nwarnings.warn('a warning the user should see')\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=True)
    assert not [marker for marker in TF_LOG_NOISE if marker in done.stderr], done.stderr
    assert "a warning the user should see" in done.stderr  # Python warnings still reach the user


# ---------------------------------------------------------------------------------------------- Kaggle's folders


def test_attached_sources_in_both_layouts_take_the_newest_version(monkeypatch, tmp_path):
    from utils import runtime

    inputs, _ = simulated_kaggle(monkeypatch, tmp_path)
    for folder in ["datasets/xhlulu/140k-real-and-fake-faces/real_vs_fake", "datasets/me/weights/versions/2/w",
                   "datasets/me/weights/versions/10/w", "notebooks/me/train-a/train", "old-slug/train",
                   ".hidden/x"]:
        (inputs / folder).mkdir(parents=True)
    assert runtime.attached_sources() == [inputs / "datasets/me/weights/versions/10",
                                          inputs / "datasets/xhlulu/140k-real-and-fake-faces",
                                          inputs / "notebooks/me/train-a", inputs / "old-slug"]
    assert runtime.attached_sources(tmp_path / "nowhere") == []
    listing = runtime.describe_attached()
    assert "datasets/me/weights/versions/10/: w/" in listing and "notebooks/me/train-a/: train/" in listing
    assert "nothing is attached under" in runtime.describe_attached(tmp_path / "nowhere")


@pytest.mark.parametrize("ref", ["me/train-a", "train-a", "me/train-a/7", "/me/train-a/"])
def test_attached_output_finds_a_kernel_in_the_2026_layout(monkeypatch, tmp_path, ref):
    from utils import runtime

    inputs, _ = simulated_kaggle(monkeypatch, tmp_path)
    (inputs / "notebooks/me/train-a/train").mkdir(parents=True)
    (inputs / "notebooks/other/train-b").mkdir(parents=True)
    assert runtime.attached_output(ref) == inputs / "notebooks/me/train-a"
    assert runtime.attached_output("someone-else/train-a") is None
    (inputs / "notebooks/me/train-a/versions/3").mkdir(parents=True)
    (inputs / "notebooks/me/train-a/versions/12").mkdir(parents=True)
    assert runtime.attached_output(ref) == inputs / "notebooks/me/train-a/versions/12"


def test_attached_output_finds_a_kernel_in_the_older_layout_and_rejects_bad_refs(monkeypatch, tmp_path):
    from utils import runtime

    inputs, _ = simulated_kaggle(monkeypatch, tmp_path)
    (inputs / "train-a" / "train").mkdir(parents=True)
    assert runtime.attached_output("me/train-a") == inputs / "train-a"
    assert runtime.attached_output("train-a/2") == inputs / "train-a"
    assert runtime.attached_output("train-c") is None
    for bad in ["", "a/b/c", "code/me/train-a/extra"]:
        with pytest.raises(ValueError, match="kernel reference .* is invalid: expected 'owner/slug' or 'slug'"):
            runtime.attached_output(bad)


def test_find_run_dirs_lists_the_training_run_folders(tmp_path):
    from utils import runtime

    for run in ["train", "sweep/alpha-0", "sweep/alpha-0.2", ".cache/x"]:
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / run_files.METRICS).write_text("{}")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "params.json").write_text("{}")  # no metrics.json: no run
    assert runtime.find_run_dirs(tmp_path) == [tmp_path / "sweep/alpha-0", tmp_path / "sweep/alpha-0.2",
                                              tmp_path / "train"]
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        runtime.find_run_dirs(tmp_path / "missing")


def test_build_record_is_read_on_kaggle_only(monkeypatch, tmp_path):
    from utils import runtime

    _, working = simulated_kaggle(monkeypatch, tmp_path, run_type=None)
    (working / runtime.BUILD_RECORD).write_text(json.dumps({"slug": "train-x", "resume_from": None}))
    assert runtime.build_record() is None  # off Kaggle a stray file means nothing
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert runtime.build_record() == {"slug": "train-x", "resume_from": None}
    (working / runtime.BUILD_RECORD).write_text("[1, 2]")
    with pytest.raises(ValueError, match="kaggle-build.json holds list, expected a JSON object"):
        runtime.build_record()
    (working / runtime.BUILD_RECORD).write_text("{not json")
    with pytest.raises(ValueError, match="kaggle-build.json is not a readable JSON build record"):
        runtime.build_record()
    (working / runtime.BUILD_RECORD).unlink()
    assert runtime.build_record() is None  # run on Kaggle by hand, not pushed


def test_analysis_run_dirs_name_attached_kernels_on_kaggle(monkeypatch, tmp_path):
    """analyze.ipynb's run_dirs on Kaggle: a kernel stands for the run folders in its attached output (either layout);
    a name that is neither a folder nor attached stops at once, saying what is attached."""
    from utils.analysis import resolve_run_dirs

    input_dir, _ = simulated_kaggle(monkeypatch, tmp_path)
    new = input_dir / "notebooks" / "tester" / "train-alpha-0" / "train"
    old = input_dir / "train-alpha-0-2" / "train"
    for run in (new, old):
        run.mkdir(parents=True)
        (run / run_files.METRICS).write_text("{}")
    local = tmp_path / "local-run"
    local.mkdir()
    assert resolve_run_dirs(["tester/train-alpha-0", "train-alpha-0-2/3", str(local)]) == [str(new), str(old), str(local)]
    with pytest.raises(FileNotFoundError) as error:
        resolve_run_dirs(["tester/never-pushed"])
    assert "'tester/never-pushed' is neither a folder nor an attached kernel's output" in str(error.value)
    assert "notebooks/tester/train-alpha-0/" in str(error.value)  # what is attached
    (input_dir / "notebooks" / "tester" / "empty-kernel").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no training run"):
        resolve_run_dirs(["tester/empty-kernel"])
    with pytest.raises(ValueError, match="non-empty list"):
        resolve_run_dirs("tester/train-alpha-0")


def test_a_record_names_data_inside_the_repository_relative_to_it(tmp_path, monkeypatch):
    """A dataset under the repository is recorded relative to it, so the analysis of a run in a moved or cloned
    repository still re-indexes it; data outside (e.g. /kaggle/input) keeps its path."""
    from conftest import write_image

    from utils import analysis, runtime

    monkeypatch.setattr(runtime, "REPO_ROOT", tmp_path / "repo")
    root = tmp_path / "repo" / "data" / "faces"
    for label in ("real", "fake"):
        for i in range(4):
            write_image(root / label / f"{i}.png", seed=i + 10 * (label == "fake"))
    assert runtime.recorded_path(root) == "data/faces"
    assert runtime.recorded_path("/kaggle/input/faces") == "/kaggle/input/faces"
    assert runtime.resolve_recorded_path("data/faces") == str(root)
    assert runtime.resolve_recorded_path("/kaggle/input/faces") == "/kaggle/input/faces"
    record = {"params": {"val_split": 0.25, "seed": 0, "max_images": None, "data_dir": None},
              "dataset": {"root": "data/faces"}}
    assert analysis.reindex_run(record).root == str(root)
