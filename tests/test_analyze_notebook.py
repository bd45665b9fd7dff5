"""notebooks/analyze.ipynb on the tiny training run with a tiny robustness grid and one extra dataset; helpers.

The tests reading that analysis are slow (they need the tiny run) and run again under Kaggle's pinned versions
(kaggle_versions: pandas and scikit-learn make its tables and its report).
"""
import json

import pytest
from conftest import REPO_ROOT, TINY_SIZE, assert_report_shows_figures, run_from_notebooks

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
    extra = _plain_dataset(tmp_path_factory.mktemp("extra-data"))
    out = tmp_path_factory.mktemp("analysis")
    run_from_notebooks("analyze.ipynb", out,
                       {"run_dirs": [str(tiny_run)], "extra_data_dirs": [str(extra)], "robustness": TINY_GRID,
                        "robustness_images": 3, "gradcam_samples": 2, "max_images": None, "bootstrap_resamples": 200})
    return out, extra, json.loads((out / "analysis.json").read_text())


@pytest.mark.kaggle_versions
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
    assert held["optimistic"] is False and held["note"] is None  # an official test split: nothing to mark


@pytest.mark.kaggle_versions
def test_analysis_json_intervals_on_every_evaluated_split(analyzed, tiny_metrics):
    _, extra, record = analyzed
    run = next(iter(record["runs"].values()))
    held = run["held_out"]
    for intervals, n in ((held["intervals"], 12), (held["val_intervals"], held["val_metrics"]["n"]),
                         (run["extra"][str(extra)]["intervals"], 8)):
        assert intervals["n"] == n and intervals["n_resamples"] == 200 and intervals["level"] == 0.95
        for name in ("accuracy", "roc_auc", "average_precision", "eer"):
            entry = intervals["metrics"][name]
            assert entry["low"] <= entry["estimate"] <= entry["high"], name
    assert held["intervals"]["metrics"]["accuracy"]["estimate"] == held["metrics"]["accuracy"]
    # The same checkpoint on the same re-indexed validation split: the training run's own validation accuracy.
    assert held["val_metrics"]["log_loss"] > 0
    assert held["val_metrics"]["accuracy"] == pytest.approx(tiny_metrics["val"]["accuracy"])


@pytest.mark.kaggle_versions
def test_analysis_json_spectrum_baseline_beside_the_cnn(analyzed, tiny_dataset):
    _, extra, record = analyzed
    baseline = next(iter(record["runs"].values()))["baseline"]
    assert baseline["probe"] == "log_spectrum_1d" and baseline["threshold"] == 0.5
    assert baseline["train_counts"] == {"real": 12, "fake": 12}  # the run's train split: 75% of 16 per class
    assert list(baseline["results"]) == ["own test split", str(extra)]  # the CNN's report split, then extra data
    own = baseline["results"]["own test split"]
    assert own["metrics"]["n"] == 12 and own["intervals"]["n"] == 12
    assert baseline["results"][str(extra)]["metrics"]["n"] == 8
    assert own["intervals"]["metrics"]["roc_auc"]["estimate"] == pytest.approx(own["metrics"]["roc_auc"])


@pytest.mark.kaggle_versions
def test_analysis_json_gradcam_layer_and_alpha_comparison(analyzed):
    _, _, record = analyzed
    run = next(iter(record["runs"].values()))
    gradcam = run["gradcam"]
    # conv5_block3_out is 1x1 at 32 px; the chosen layer keeps at least 7x7 cells.
    assert gradcam["layer"] == "conv2_block3_out" and gradcam["map_cells"] == [8, 8] and gradcam["image_size"] == 32
    comparison = record["alpha_comparison"]
    assert comparison["paired"] == [] and comparison["best_alpha"] is None and comparison["tests"] == 0  # one run
    assert comparison["correction"] == "Holm"
    (row,) = record["alpha_table"]
    assert row["val_log_loss"] > 0 and "accuracy_at_val_threshold" in row


@pytest.mark.kaggle_versions
def test_analysis_json_robustness_gradcam_extra_alpha(analyzed):
    _, extra, record = analyzed
    run = next(iter(record["runs"].values()))
    rows = run["robustness"]
    assert [(r["transform"], r["severity"]) for r in rows] == [(t, s) for t, ss in TINY_GRID.items() for s in ss]
    assert all(r["n"] == 6 and round(r["accuracy"] * 6, 6).is_integer() for r in rows)  # k of the 6 images
    assert set(run["gradcam"]["groups"]) == {"true_real", "true_fake", "false_real", "false_fake"}
    assert all(len(v) <= 2 for v in run["gradcam"]["groups"].values())
    extra_run = run["extra"][str(extra)]
    assert extra_run["dataset"]["counts"] == {"real": 4, "fake": 4}
    assert extra_run["metrics"]["n"] == 8 and "roc_auc" in extra_run["metrics"] and 0 <= extra_run["ece"] <= 1
    (row,) = record["alpha_table"]
    assert row["alpha"] == 0.2 and row["baseline"] is False and "roc_auc_jpeg_quality_worst" in row
    assert row[f"roc_auc_{extra}"] == extra_run["metrics"]["roc_auc"]  # cross-dataset AUC compared across alphas
    assert record["params"]["robustness"] == TINY_GRID


@pytest.mark.kaggle_versions
def test_analysis_figures_report_and_threshold_file(analyzed, tiny_run):
    out, _, record = analyzed
    name = next(iter(record["runs"]))
    for figure in ("confusion_matrix.png", "roc_pr.png", "reliability.png", "robustness.png", "gradcam_examples.png"):
        assert (out / name / figure).is_file(), figure
    html = (out / "analyze.html").read_text()
    assert "Robustness to image quality" in html
    assert "Trivial baseline" in html and "AUC gain over probe" in html and "conv2_block3_out" in html
    assert_report_shows_figures(out / "analyze.ipynb", out / "analyze.html", sorted(out.rglob("*.png")))
    recorded = json.loads((tiny_run / "threshold.json").read_text())
    assert recorded["threshold"] == pytest.approx(record["runs"][name]["held_out"]["val_threshold"])


def test_cap_split_keeps_per_class_cap_and_order():
    from utils.data import Split, cap_split

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


def _scored_run(report_split: str, seed: int = 0):
    """A Run without model or files: only labels and P(fake) of its splits, enough for the held-out metrics."""
    import numpy as np

    from utils.analysis import Run

    rng = np.random.default_rng(seed)
    run = Run("toy", REPO_ROOT, {"params": {"alpha": 0.1, "seed": 1, "image_size": 32}}, None, None, report_split, {})
    for split in {"val", report_split}:
        run.y[split] = np.r_[np.zeros(20), np.ones(20)].astype(int)
        run.p[split] = np.clip(0.3 + 0.4 * run.y[split] + rng.normal(0, 0.2, 40), 0, 1)
    return run


def test_validation_report_split_is_marked_optimistic():
    """Without an official test split every number read on validation says so (the chosen route; see the notebook)."""
    from utils import analysis

    run = _scored_run("val")
    held = analysis.held_out_metrics(run, n_resamples=50)
    assert held["optimistic"] is True and "optimistic" in held["note"] and run.report_label == "val (optimistic)"
    results = {"toy": {"alpha": 0.1, "held_out": held}}
    assert analysis.metrics_frame(results).loc["toy", "split"] == "val (optimistic)"
    intervals = analysis.interval_frame(results)
    assert list(intervals["split"]) == ["own val (optimistic) split"]  # validation is the report split: one row
    assert analysis.extra_frame(results)["dataset"].tolist() == ["own val (optimistic) split"]
    tested = analysis.interval_frame({"toy": {"alpha": 0.1, "held_out": analysis.held_out_metrics(
        _scored_run("test"), n_resamples=50)}})
    assert list(tested["split"]) == ["val", "own test split"]
    assert tested.iloc[1]["accuracy"].count("[") == 1  # "estimate [low, high]"


def test_alpha_comparison_with_runs_sharing_an_alpha():
    """Several seeds per alpha, two runs sharing alpha and seed: paired table, Holm, alpha chosen on validation."""
    from utils import analysis, comparison

    rows = []
    for alpha, gain, loss in ((0.0, 0.0, 0.3), (0.1, 0.05, 0.1), (0.2, -0.02, 0.2)):
        for seed, base in ((42, 0.80), (43, 0.90), (44, 0.85)):
            rows.append({"run": f"a{alpha}-s{seed}", "alpha": alpha, "seed": seed, "accuracy": base + gain,
                         "roc_auc": 0.9 + gain, "val_log_loss": loss + seed / 1000, "val_accuracy": 0.9})
    rows.append({**rows[-1], "run": "a0.2-s44-again"})
    df = comparison.alpha_table(rows)
    result = analysis.alpha_comparison(df)
    paired = result["paired"]
    assert sorted(set(paired["metric"])) == ["accuracy", "roc_auc"]  # validation columns are not tested
    assert result["tests"] == 4 and result["n_pairs"] == [3] and result["min_p"] == 0.25
    assert (paired["p_holm"] >= paired["p_value"]).all()
    gain = paired[(paired["alpha"] == 0.1) & (paired["metric"] == "accuracy")].iloc[0]
    assert gain["mean_diff"] == pytest.approx(0.05) and gain["p_value"] == 0.25
    best = result["best_alpha"]
    assert best["alpha"] == 0.1 and best["chosen_on"] == "val" and best["criterion"] == "val_log_loss"
    assert best["reported"]["accuracy"] == pytest.approx(0.90)  # its test numbers are only reported
    table = analysis.paired_alpha_frame(paired)
    assert table.iloc[0]["difference [95% CI]"] == "+0.0500 [+0.0500, +0.0500]"
    assert analysis.paired_alpha_frame(paired.iloc[:0]).empty


def test_runs_with_the_same_data_share_one_baseline_fit(tiny_run):
    """Two alphas of one seed see the same images: the spectrum probe is fit once and reported for both."""
    from utils import analysis

    runs = [analysis.load_run(tiny_run, name=name) for name in ("a", "b")]
    baselines = analysis.spectrum_baselines(runs, n_resamples=20)
    assert list(baselines) == ["a", "b"] and baselines["a"] is baselines["b"]
    assert list(baselines["a"]["results"]) == ["own test split"]


def test_figure_runs_picks_one_run_per_alpha():
    from types import SimpleNamespace

    from utils.analysis import figure_runs

    runs = [SimpleNamespace(name=f"a{a}-s{s}", params={"alpha": a}) for a in (0, 0.2) for s in (1, 2)]
    assert [r.name for r in figure_runs(runs, "first-per-alpha")] == ["a0-s1", "a0.2-s1"]
    assert figure_runs(runs, "all") == runs and figure_runs(runs, "none") == []
    with pytest.raises(ValueError, match="per_run_figures must be one of"):
        figure_runs(runs, "some")


@pytest.mark.kaggle_versions
def test_single_source_run_says_so(analyzed):
    out, _, record = analyzed
    assert "by_source" not in next(iter(record["runs"].values()))  # one source: nothing to break down
    assert "one source (140k-real-and-fake-faces)" in (out / "analyze.html").read_text()


def test_per_source_table_of_a_two_source_run(multi_run):
    """Per source and split: the training run's numbers reproduced, with intervals, in the table and analysis.json."""
    from utils import analysis

    recorded = json.loads((multi_run / "metrics.json").read_text())["by_source"]
    run = analysis.load_run(multi_run)
    assert run.warning is None and run.report_split == "test"
    by_source = analysis.source_intervals(run, n_resamples=50)
    assert {split: list(entries) for split, entries in by_source.items()} == {
        split: list(entries) for split, entries in recorded.items()}
    for split, entries in recorded.items():
        for source, metrics in entries.items():
            entry = by_source[split][source]
            assert entry["n"] == metrics["n"] and entry["accuracy"] == pytest.approx(metrics["accuracy"])
            for name in ("accuracy", "roc_auc"):
                interval = entry["intervals"]["metrics"][name]
                assert interval["low"] <= interval["estimate"] <= interval["high"], (split, source, name)
    frame = analysis.source_interval_frame({"multi": by_source})
    assert list(zip(frame["split"], frame["source"], frame["n"])) == [
        ("val", "140k-real-and-fake-faces", 2), ("val", "plain-faces", 2), ("test", "140k-real-and-fake-faces", 8)]
    assert frame["accuracy"].str.contains(r"^\d\.\d{3}(?: \[\d\.\d{3}, \d\.\d{3}\])?$").all()
    assert analysis.source_intervals(run, n_resamples=50) == by_source  # a seeded bootstrap
    held = analysis.held_out_metrics(run, n_resamples=50)
    summary = analysis.run_summary(run, held, None, {}, {}, by_source=by_source)
    assert summary["by_source"] == json.loads(json.dumps(analysis.to_jsonable(by_source)))
    assert [s["name"] for s in summary["dataset"]["sources"]] == ["140k-real-and-fake-faces", "plain-faces"]


def test_reindex_run_holds_out_the_recorded_source(tiny_dataset, second_source):
    """A leave-one-source-out run is re-indexed the same way: its test split is the held-out source's every image."""
    from utils import analysis

    params = {"data_dir": [str(tiny_dataset), str(second_source)], "val_split": 0.25, "seed": 1, "max_images": 4}
    index = analysis.reindex_run({"params": {**params, "holdout_source": "plain-faces"}})
    assert index.holdout_source == "plain-faces" and set(index.source_of(index.test)) == {"plain-faces"}
    assert index.test.counts() == {"real": 4, "fake": 4}  # all of it: capped pool, no test split of its own
    assert set(index.source_of(index.train)) == set(index.source_of(index.val)) == {"140k-real-and-fake-faces"}
    pooled = analysis.reindex_run({"params": params})  # recorded before holdout_source existed: no holdout
    assert pooled.holdout_source is None and pooled.test.counts() == {"real": 4, "fake": 4}


def test_robustness_by_run_keeps_the_grid_order():
    """Severities shared by two transforms (0.5: a blur sigma and a rescale factor) must not pull rows out of order."""
    import pandas as pd

    from utils.analysis import robustness_by_run

    grid = [("blur_sigma", s) for s in (0, 0.5, 1)] + [("rescale_factor", s) for s in (1, 0.75, 0.5)]
    tables = {name: pd.DataFrame([{"transform": t, "severity": s, "roc_auc": auc - i / 100, "accuracy": 0.5}
                                  for i, (t, s) in enumerate(grid)]) for name, auc in (("b", 0.9), ("a", 0.8))}
    frame = robustness_by_run(tables)
    assert list(frame.index) == grid and list(frame.columns) == ["b", "a"]
    assert frame.loc[("rescale_factor", 0.5), "a"] == 0.8 - 5 / 100
