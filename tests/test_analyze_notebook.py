"""notebooks/analyze.ipynb on the tiny training run with a tiny robustness grid and one extra dataset; helpers."""
import json

import pytest

from conftest import REPO_ROOT, TINY_SIZE, assert_report_shows_figures

TINY_GRID = {"jpeg_quality": [100, 30], "blur_sigma": [0, 1], "rescale_factor": [1, 0.5], "noise_sigma": [0, 10]}


def _plain_dataset(root, n=4, seed=9):
    """real/ and ai/ JPEG folders: the layout of a generic other dataset or generator."""
    from utils import synthetic

    for folder, fake in (("real", False), ("ai", True)):
        (root / folder).mkdir(parents=True)
        for i in range(n):
            image = synthetic.make_image(i, fake, image_size=TINY_SIZE + 8, seed=seed)
            (root / folder / f"{i}.jpg").write_bytes(synthetic.encode_jpeg(image, 80))
    return root


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory, tiny_run):
    from tools.notebook import run_notebook

    extra = _plain_dataset(tmp_path_factory.mktemp("extra-data"))
    out = tmp_path_factory.mktemp("analysis")
    run_notebook(REPO_ROOT / "notebooks" / "analyze.ipynb",
                 {"run_dirs": [str(tiny_run)], "extra_data_dirs": [str(extra)], "robustness": TINY_GRID,
                  "robustness_images": 3, "gradcam_samples": 2, "max_images": None, "output_dir": str(out)})
    return out, extra, json.loads((out / "analysis.json").read_text())


def test_analysis_json_held_out_metrics(analyzed, tiny_run, tiny_metrics):
    _, _, record = analyzed
    (name, run), = record["runs"].items()
    assert name == tiny_run.name and run["alpha"] == 0.2 and run["run_dir"] == str(tiny_run.resolve())
    assert run["data_warning"] is None  # the re-indexed data are the ones the run recorded
    held = run["held_out"]
    assert held["report_split"] == "test"
    m = held["metrics"]
    for key in ("accuracy", "accuracy_real", "accuracy_fake", "precision", "recall", "f1", "roc_auc",
                "average_precision", "eer", "confusion_matrix"):
        assert key in m, key
    assert m["n"] == 12 and m["threshold"] == 0.5
    # Same checkpoint, same test images, same pipeline: the training run's own test accuracy is reproduced.
    assert m["accuracy"] == pytest.approx(tiny_metrics["test"]["accuracy"])
    assert 0 <= held["ece"] <= 1
    assert 0 <= held["val_threshold"] <= 1
    assert held["metrics_at_val_threshold"]["threshold"] == pytest.approx(held["val_threshold"])
    assert run["dataset"]["counts"]["val"] == tiny_metrics["dataset"]["counts"]["val"]


def test_analysis_json_robustness_gradcam_extra_alpha(analyzed):
    _, extra, record = analyzed
    run = next(iter(record["runs"].values()))
    rows = run["robustness"]
    assert [(r["transform"], r["severity"]) for r in rows] == [(t, s) for t, ss in TINY_GRID.items() for s in ss]
    assert all(r["n"] == 6 and 0 <= r["accuracy"] <= 1 for r in rows)
    assert set(run["gradcam"]["groups"]) == {"true_real", "true_fake", "false_real", "false_fake"}
    assert all(len(v) <= 2 for v in run["gradcam"]["groups"].values())
    extra_run = run["extra"][str(extra)]
    assert extra_run["dataset"]["counts"] == {"real": 4, "fake": 4}
    assert extra_run["metrics"]["n"] == 8 and "roc_auc" in extra_run["metrics"] and 0 <= extra_run["ece"] <= 1
    (row,) = record["alpha_table"]
    assert row["alpha"] == 0.2 and row["baseline"] is False and "roc_auc_jpeg_quality_worst" in row
    assert row[f"roc_auc_{extra}"] == extra_run["metrics"]["roc_auc"]  # cross-dataset AUC compared across alphas
    assert record["params"]["robustness"] == TINY_GRID


def test_analysis_figures_report_and_threshold_file(analyzed, tiny_run):
    out, _, record = analyzed
    name = next(iter(record["runs"]))
    for figure in ("confusion_matrix.png", "roc_pr.png", "reliability.png", "robustness.png", "gradcam_examples.png"):
        assert (out / name / figure).is_file(), figure
    html = (out / "analyze.html").read_text()
    assert "Robustness to image quality" in html
    assert_report_shows_figures(out / "analyze.ipynb", out / "analyze.html", sorted(out.rglob("*.png")))
    recorded = json.loads((tiny_run / "threshold.json").read_text())
    assert recorded["threshold"] == pytest.approx(record["runs"][name]["held_out"]["val_threshold"])


def test_cap_split_keeps_per_class_cap_and_order():
    from utils.data import cap_split
    from utils.data import Split

    split = Split([f"{i:02d}.jpg" for i in range(10)], [0] * 7 + [1] * 3)
    capped = cap_split(split, 2, seed=0)
    assert capped.counts() == {"real": 2, "fake": 2} and capped.paths == sorted(capped.paths)
    assert cap_split(split, None) is split


def test_run_names_are_distinct(tmp_path):
    from utils.analysis import run_names

    assert run_names([tmp_path / "a" / "run", tmp_path / "b" / "run"]) == ["a-run", "b-run"]
    assert run_names([tmp_path / "x", tmp_path / "y"]) == ["x", "y"]


def test_dataset_split_pools_every_image(tmp_path):
    from utils.analysis import dataset_split

    root = _plain_dataset(tmp_path / "plain", n=5)
    split, info = dataset_split(str(root))
    assert split.counts() == {"real": 5, "fake": 5} and info["layout"] and info["root"] == str(root)
    capped, _ = dataset_split(str(root), max_images=3)
    assert capped.counts() == {"real": 3, "fake": 3}
    assert len(set(split.paths)) == 10


def test_read_run_rejects_a_folder_without_a_run(tmp_path):
    from utils.analysis import read_run

    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        read_run(tmp_path)


def test_analyze_run_matches_the_notebook(analyzed, tiny_run, tmp_path):
    """The one-call API gives the notebook's held-out numbers and writes the same figures."""
    from utils.analysis import analyze_run

    _, _, record = analyzed
    result = analyze_run(tiny_run, robustness_grid={"jpeg_quality": [100]}, robustness_images=2, gradcam_samples=0,
                         output_dir=tmp_path)
    notebook = next(iter(record["runs"].values()))["held_out"]
    assert result["held_out"]["metrics"]["accuracy"] == pytest.approx(notebook["metrics"]["accuracy"])
    assert result["held_out"]["ece"] == pytest.approx(notebook["ece"], abs=1e-6)
    assert len(result["robustness"]) == 1 and result["extra"] == {}
    assert (tmp_path / "reliability.png").is_file() and (tmp_path / "robustness.png").is_file()
