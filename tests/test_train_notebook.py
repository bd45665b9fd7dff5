"""One papermill run of notebooks/train.ipynb with tiny parameters: what it writes and what metrics.json says.

The tests reading the tiny run (conftest.tiny_run) are slow and run again under Kaggle's pinned versions
(kaggle_versions): the train notebook end to end once there. The two-source run's (multi_run) run once, here.
"""

import json

import nbformat
import pytest
from conftest import MULTI_DEGRADATIONS, REPO_ROOT, TINY_TRAIN_PARAMS, assert_report_shows_figures


@pytest.mark.kaggle_versions
def test_run_writes_report_and_artifacts(tiny_run):
    for name in ("metrics.json", "history.csv", "model.keras", "training_curves.png", "confusion_matrix.png",
                 "train.ipynb", "train.html", "params.json"):
        assert (tiny_run / name).is_file(), name
    assert not (tiny_run / "backup").exists(), "the resume backup must be gone after a finished run"
    html = (tiny_run / "train.html").read_text()
    assert "LeakyReLU-ResNet50" in html
    assert_report_shows_figures(tiny_run / "train.ipynb", tiny_run / "train.html", sorted(tiny_run.glob("*.png")))
    # The report hides code but shows the parameters in force.
    assert "validate_params" not in html and "learning_rate" in html and "<td>0.2</td>" in html
    # Degradations are off by default: one line says so, and there is no example figure.
    assert "train-time degradations are off" in html and not (tiny_run / "degradation_examples.png").exists()


@pytest.mark.kaggle_versions
def test_metrics_json_content(tiny_metrics, tiny_dataset, tiny_run):
    from utils.training import read_history

    m = tiny_metrics
    history = read_history(tiny_run / "history.csv")
    assert m["epochs_run"] == TINY_TRAIN_PARAMS["epochs"]
    for key in ("accuracy", "loss", "val_accuracy", "val_loss"):
        assert m["final"][key] == pytest.approx(history[key].iloc[-1])
    assert m["best"]["epoch"] == int(history["val_loss"].idxmin()) + 1
    assert m["params"]["alpha"] == 0.2 and m["params"]["image_size"] == 32 and m["seed"] == 1
    assert m["params"]["data_dir"] == str(tiny_dataset)
    assert m["params"]["resize_mode"] == "resize" and m["params"]["blur_prob"] == 0.0  # the study's protocol
    counts = m["dataset"]["counts"]
    # Pool of 16 per class split 75:25; the official test split (6 per class) kept aside.
    assert counts["train"] == {"real": 12, "fake": 12} and counts["val"] == {"real": 4, "fake": 4}
    assert counts["test"] == {"real": 6, "fake": 6}
    assert m["test"]["n"] == 12 and m["val"]["n"] == 8
    assert sum(map(sum, m["test"]["confusion_matrix"])) == 12
    assert m["dataset"]["skipped"] == []
    # Training steps only, the first (tracing) epoch left out; validation timed apart.
    assert m["images_per_second"] == pytest.approx(history["images_per_second"].iloc[1:].median())
    assert m["validation_seconds"] == pytest.approx(history["validation_seconds"].sum(), abs=0.1)
    assert m["training"] == {"replicas": 1, "global_batch": 8, "effective_learning_rate": 0.001,
                             "lr_scaling": m["training"]["lr_scaling"], "keras_backend": "tensorflow",
                             "precision": "float32", "earlier_replicas": []}
    assert m["dataset"]["root"].startswith(str(tiny_dataset))  # outside the repository: its own path
    assert 0 < m["training_seconds"] < m["wall_time_seconds"]  # a fresh run: training is part of this execution
    env = m["environment"]
    assert env["tensorflow"] and env["keras"].startswith("3.") and env["python"] and env["accelerator"].startswith("CPU")
    assert env["keras_backend"] == "tensorflow" and env["replicas"] == 1 and env["precision"] == "float32"


@pytest.mark.kaggle_versions
def test_history_has_one_row_per_epoch(tiny_run):
    from utils.training import read_history

    history = read_history(tiny_run / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "images_per_second"} <= set(history.columns)


@pytest.mark.kaggle_versions
def test_rerun_with_other_parameters_is_refused(tiny_run, tiny_dataset):
    """A finished run folder is never overwritten by a run with other parameters."""
    from papermill.exceptions import PapermillExecutionError

    from tools.notebook import run_notebook

    before = {name: (tiny_run / name).read_bytes() for name in ("metrics.json", "train.ipynb", "train.html")}
    with pytest.raises(PapermillExecutionError, match="holds a run with other parameters"):
        run_notebook(REPO_ROOT / "notebooks" / "train.ipynb",
                     {**TINY_TRAIN_PARAMS, "alpha": 0.1, "data_dir": str(tiny_dataset), "output_dir": str(tiny_run)})
    # The finished run's record and report stay; the refused attempt's report sits beside them.
    assert {name: (tiny_run / name).read_bytes() for name in before} == before
    assert "holds a run with other parameters" in (tiny_run / "train-failed.html").read_text()
    assert not (tiny_run / "train.running.ipynb").exists()


def test_notebooks_are_committed_clean():
    for path in sorted((REPO_ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["kernelspec"]["name"] == "python3", path
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path} has outputs"
        tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path} needs exactly one cell tagged parameters"
        for line in tagged[0].source.splitlines():
            if line.strip() and not line.startswith("#"):
                assert "  # " in line, f"{path}: parameter line without a comment: {line}"
                # papermill cannot parse a parameter whose comment holds '='.
                assert line.split("#", 1)[1].count("=") == 0, f"{path}: '=' in the comment of {line}"
        assert len(nb.cells) <= 25, path


def test_run_with_degradations_and_crops_shows_their_examples(multi_run):
    """Degradations on and resize_mode crop: recorded with the run, and their example figure is in the report."""
    out = multi_run
    assert (out / "degradation_examples.png").stat().st_size > 0
    assert_report_shows_figures(out / "train.ipynb", out / "train.html", sorted(out.glob("*.png")))
    for record in (json.loads((out / "params.json").read_text()),
                   json.loads((out / "metrics.json").read_text())["params"]):
        assert record["resize_mode"] == "crop"
        assert {k: record[k] for k in MULTI_DEGRADATIONS} == MULTI_DEGRADATIONS


def test_two_sources_are_counted_and_scored_per_source(multi_run, tiny_dataset, second_source):
    """The same run pools two sources: per-source counts per split and per-source held-out metrics in metrics.json."""
    m = json.loads((multi_run / "metrics.json").read_text())
    assert m["params"]["data_dir"] == [str(tiny_dataset), str(second_source)] and m["params"]["holdout_source"] is None
    dataset = m["dataset"]
    assert dataset["layout"] == "multi-source" and dataset["holdout_source"] is None
    sources = dataset["sources"]
    assert [s["name"] for s in sources] == ["140k-real-and-fake-faces", "plain-faces"]
    # max_images 4 per class and source: each pool split 3:1; only the first source has a test split (4 per class).
    assert sources[0]["counts"] == {"train": {"real": 3, "fake": 3}, "val": {"real": 1, "fake": 1},
                                    "test": {"real": 4, "fake": 4}}
    assert sources[1]["counts"] == {"train": {"real": 3, "fake": 3}, "val": {"real": 1, "fake": 1}}
    assert dataset["counts"] == {"train": {"real": 6, "fake": 6}, "val": {"real": 2, "fake": 2},
                                 "test": {"real": 4, "fake": 4}}
    by_source = m["by_source"]
    assert {split: list(entries) for split, entries in by_source.items()} == {
        "val": ["140k-real-and-fake-faces", "plain-faces"], "test": ["140k-real-and-fake-faces"]}
    assert [e["n"] for e in by_source["val"].values()] == [2, 2] and by_source["test"]["140k-real-and-fake-faces"]["n"] == 8
    # The only source of the test split scores exactly the pooled test numbers; val's sources add up to val's.
    assert by_source["test"]["140k-real-and-fake-faces"] == m["test"]
    correct = sum(e["accuracy"] * e["n"] for e in by_source["val"].values())
    assert correct == pytest.approx(m["val"]["accuracy"] * m["val"]["n"])
    assert all(e["threshold"] == 0.5 and set(e) == set(m["val"]) for e in by_source["val"].values())
    html = (multi_run / "train.html").read_text()
    assert "Per source" in html and "plain-faces" in html


@pytest.mark.kaggle_versions
def test_single_source_run_has_no_per_source_entries(tiny_run, tiny_metrics):
    assert "sources" not in tiny_metrics["dataset"] and "by_source" not in tiny_metrics
    assert "one source (140k-real-and-fake-faces)" in (tiny_run / "train.html").read_text()
