"""The robustness study: conditions read from run parameters, seed-paired comparisons, the report, the study's plan.

The analysis records are built by hand (what analyze.ipynb writes, with known numbers), so every expected value
below is computed from those numbers, not read back from the code under test.
"""
import json

import numpy as np
import pytest
from conftest import TINY_SIZE, assert_report_shows_figures, run_from_notebooks

from utils import conditions

GRID = {"jpeg_quality": [100, 30], "blur_sigma": [0, 2], "rescale_factor": [1, 0.5]}
DEGRADED = {"blur_prob": 0.5, "jpeg_prob": 0.5}


def _summary(dataset: str, seed: int, params: dict, auc: dict, alpha: float = 0.2) -> dict:
    """One run's entry of analysis.json: its parameters, clean metrics, robustness rows and one extra dataset."""
    clean = auc[("jpeg_quality", 100)]
    return {"params": {"alpha": alpha, "seed": seed, "val_split": 0.25, "image_size": 64, **params},
            "dataset": {"name": dataset},
            "held_out": {"report_split": "test", "optimistic": False,
                         "metrics": {"accuracy": clean - 0.05, "roc_auc": clean}},
            "robustness": [{"transform": t, "severity": s, "accuracy": auc[(t, s)] - 0.05, "roc_auc": auc[(t, s)], "n": 20}
                           for t, severities in GRID.items() for s in severities],
            "extra": {"synthetic:nearest": {"metrics": {"roc_auc": clean - 0.3}}}}


def _auc(seed: int, blur_gain: float) -> dict:
    """Robustness AUCs of one run: clean 0.9 + seed jitter, blur sigma 2 at 0.55 + blur_gain."""
    jitter = 0.01 * (seed - 43)
    return {("jpeg_quality", 100): 0.9 + jitter, ("jpeg_quality", 30): 0.85 + jitter,
            ("blur_sigma", 0): 0.9 + jitter, ("blur_sigma", 2): 0.55 + blur_gain + jitter,
            ("rescale_factor", 1): 0.9 + jitter, ("rescale_factor", 0.5): 0.7 + jitter}


def _write_analysis(folder, runs: dict) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "analysis.json").write_text(json.dumps({"params": {}, "runs": runs}))
    return str(folder)


@pytest.fixture()
def analyses(tmp_path):
    """Two datasets; "default" with resize and degraded runs (gains 0.20, 0.25, 0.30 at blur 2), "faces" with crop.

    Folder-style run names deliberately disagree with the parameters: the condition must come from the latter.
    """
    default = {f"crop-{seed}": _summary("default", seed, {"resize_mode": "resize"}, _auc(seed, 0.0))
               for seed in (42, 43, 44)}
    default |= {f"resize-{seed}": _summary("default", seed, {"resize_mode": "resize", **DEGRADED},
                                           _auc(seed, 0.2 + 0.05 * (seed - 42)))
                for seed in (42, 43, 44)}
    faces = {f"run-{seed}-{mode}": _summary("faces", seed, {"resize_mode": mode}, _auc(seed, 0.1 if mode == "crop" else 0))
             for seed in (42, 43, 44) for mode in ("resize", "crop")}
    return [_write_analysis(tmp_path / "default", default), _write_analysis(tmp_path / "faces", faces)]


def test_condition_comes_from_the_parameters():
    assert conditions.condition({}) == "resize"  # runs recorded before resize_mode existed were resized
    assert conditions.condition({"resize_mode": "crop"}) == "crop"
    assert conditions.condition({"resize_mode": "resize", "blur_prob": 0.5}) == "resize + degradations"
    assert conditions.condition({"resize_mode": "crop", "noise_prob": 0.1, "blur_prob": 0.0}) == "crop + degradations"


def test_runs_and_robustness_records_group_by_recorded_condition(analyses):
    records = conditions.load_analyses(analyses)
    runs = conditions.runs_frame(records)
    counts = runs.groupby(["dataset", "condition"]).size().to_dict()
    assert counts == {("default", "resize"): 3, ("default", "resize + degradations"): 3,
                      ("faces", "crop"): 3, ("faces", "resize"): 3}
    assert set(runs.loc[runs["condition"] == "resize + degradations", "run"]) == {"resize-42", "resize-43", "resize-44"}
    assert runs["roc_auc on synthetic:nearest"].notna().all()
    robustness = conditions.robustness_records(records)
    assert len(robustness) == 12 * 6  # 12 runs x 6 settings


def test_severity_table_means_intervals_and_grid_order(analyses):
    robustness = conditions.robustness_records(conditions.load_analyses(analyses))
    table = conditions.severity_table(robustness)
    default = table.loc["default"]
    # The grid's order (clean first), not sorted: rescale 1 before 0.5, JPEG 100 before 30.
    assert list(default.index) == [(t, float(s)) for t, ss in GRID.items() for s in ss]
    cell = default.loc[("blur_sigma", 2.0), "resize + degradations (n=3)"]
    values = np.array([0.55 + 0.2 + 0.05 * k + 0.01 * (k - 1) for k in range(3)])
    half = 4.302653 * values.std(ddof=1) / np.sqrt(3)
    assert cell == f"{values.mean():.3f} [{values.mean() - half:.3f}, {values.mean() + half:.3f}]"
    assert default.loc[("jpeg_quality", 100.0), "resize (n=3)"] == "0.900 [0.875, 0.925]"
    assert default.loc[("jpeg_quality", 100.0), "crop (n=3)"] == "-"  # crop was not trained on this dataset


def test_paired_severity_differences_against_the_baseline(analyses):
    paired = conditions.paired_severity(conditions.robustness_records(conditions.load_analyses(analyses)))
    blur = paired[(paired["dataset"] == "default") & (paired["metric"] == "blur_sigma 2")].iloc[0]
    assert blur["condition"] == "resize + degradations" and blur["n_pairs"] == 3
    assert blur["mean_diff"] == pytest.approx(0.25)  # gains 0.20, 0.25, 0.30 on the same seeds
    assert blur["ci_low"] > 0 and blur["min_p"] == pytest.approx(0.25)
    clean = paired[(paired["dataset"] == "default") & (paired["metric"] == "jpeg_quality 100")].iloc[0]
    assert clean["mean_diff"] == pytest.approx(0.0) and clean["p_value"] == 1.0
    crop = paired[(paired["dataset"] == "faces") & (paired["metric"] == "blur_sigma 2")].iloc[0]
    assert crop["condition"] == "crop" and crop["mean_diff"] == pytest.approx(0.1)
    assert len(conditions.paired_condition_frame(paired)) == len(paired) == 2 * 6


def test_same_seed_twice_counts_once_and_mixed_alphas_are_refused(tmp_path):
    twice = {name: _summary("d", 42, {}, _auc(42, 0.0)) for name in ("demo", "seed-42")}
    twice["seed-43"] = _summary("d", 43, {}, _auc(43, 0.0))
    robustness = conditions.robustness_records(conditions.load_analyses([_write_analysis(tmp_path / "a", twice)]))
    assert conditions.severity_table(robustness).columns.tolist() == ["resize (n=2)"]
    mixed = {"relu": _summary("d", 42, {}, _auc(42, 0.0), alpha=0.0), "leaky": _summary("d", 42, {}, _auc(42, 0.0))}
    with pytest.raises(ValueError, match="several alphas"):
        conditions.runs_frame(conditions.load_analyses([_write_analysis(tmp_path / "b", mixed)]))
    with pytest.raises(FileNotFoundError, match="analysis.json does not exist"):
        conditions.load_analyses([tmp_path / "nowhere"])


@pytest.mark.slow
@pytest.mark.kaggle_versions
def test_robustness_notebook_report(analyses, tmp_path):
    out = tmp_path / "report"
    executed = run_from_notebooks("robustness.ipynb", out, {"analysis_dirs": analyses, "baseline_condition": "resize"})
    record = json.loads((out / "robustness.json").read_text())
    assert len(record["runs"]) == 12 and len(record["paired"]) == 12
    assert {r["condition"] for r in record["runs"]} == {"resize", "resize + degradations", "crop"}
    assert_report_shows_figures(executed, out / "robustness.html", [out / "robustness_curves.png"])
    page = (out / "robustness.html").read_text()
    assert "0.900 [0.875, 0.925]" in page  # the severity table reached the report


def test_study_plan_folders_conditions_and_crop_only_above_the_training_size(tiny_dataset, tmp_path):
    from tools import robustness

    params = {"image_size": TINY_SIZE, "epochs": 1, "seed": 7, "output_dir": "ignored", "data_dir": "ignored"}
    plan = robustness.study_plan({"tiny": str(tiny_dataset)}, params, [1, 2], tmp_path)
    # The tiny images are TINY_SIZE px: a TINY_SIZE crop would be the resize run again, so crop is left out.
    assert [(r["condition"], r["seed"]) for r in plan] == [("resize", 1), ("resize", 2), ("degraded", 1), ("degraded", 2)]
    first = plan[0]["params"]
    assert first["seed"] == 1 and first["data_dir"] == str(tiny_dataset) and first["epochs"] == 1
    assert first["output_dir"] == (tmp_path / "tiny" / "resize" / "seed-1").as_posix()
    assert plan[2]["params"]["blur_prob"] == 0.5 and plan[2]["params"]["jpeg_quality"] == [30, 100]
    smaller = robustness.study_plan({"tiny": str(tiny_dataset)}, {**params, "image_size": 16}, [1], tmp_path)
    assert [r["condition"] for r in smaller] == ["resize", "degraded", "crop"]
    assert smaller[2]["params"]["resize_mode"] == "crop"
    with pytest.raises(ValueError, match="conditions must name"):
        robustness.study_plan({"tiny": str(tiny_dataset)}, params, [1], tmp_path, ["sharpen"])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        robustness.study_plan({"tiny": str(tiny_dataset)}, params, [1, 1], tmp_path)


def test_study_command_trains_analyses_and_reports(monkeypatch, tiny_dataset, tmp_path, capsys):
    """The plumbing only (notebook runs recorded, not executed): every run, one analysis per dataset, one report."""
    from tools import robustness

    calls = []
    monkeypatch.setattr(robustness, "run_notebook", lambda notebook, params: calls.append((notebook.name, params)))
    monkeypatch.setattr(robustness, "DEFAULT_DATASET", "default")
    code = robustness.robustness_cli(["--faces", str(tiny_dataset), "--seeds", "1", "2", "--conditions", "resize", "crop",
                                      "-p", "image_size", "16", "-p", "epochs", "1", "--output-root", str(tmp_path)])
    assert code == 0
    trained = [p["output_dir"] for name, p in calls if name == "train.ipynb"]
    faces = tiny_dataset.name
    assert len(trained) == 4 + 4  # the embedded default (64 px images > 16) and the tiny folder, 2 conditions x 2 seeds
    analyses = [p for name, p in calls if name == "analyze.ipynb"]
    assert [a["output_dir"] for a in analyses] == [f"{tmp_path.as_posix()}/default/analysis",
                                                   f"{tmp_path.as_posix()}/{faces}/analysis"]
    assert analyses[0]["extra_data_dirs"] == ["synthetic:nearest", "synthetic:bilinear"]
    assert analyses[1]["extra_data_dirs"] == [] and len(analyses[1]["run_dirs"]) == 4
    (name, report), = [c for c in calls if c[0] == "robustness.ipynb"]
    assert report["analysis_dirs"] == [a["output_dir"] for a in analyses]
    with pytest.raises(SystemExit):
        robustness.robustness_cli(["--faces", str(tmp_path / "missing")])
    assert "no such folder" in capsys.readouterr().err
