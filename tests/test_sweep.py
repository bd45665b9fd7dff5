"""tools.sweep: a study plan's slopes x seeds through train.ipynb (tiny), then analyze.ipynb answering the plan; the
alpha sweep's plumbing."""
import json
from pathlib import Path

import pytest
from conftest import TINY_TRAIN_PARAMS, assert_report_shows_figures


def test_run_folder_names():
    from tools.sweep import run_folder

    assert [run_folder("r", a).name for a in (0, 0.01, 0.1, 0.2)] == ["alpha-0", "alpha-0.01", "alpha-0.1", "alpha-0.2"]
    assert run_folder("r", 0.2, 7).as_posix() == "r/alpha-0.2/seed-7"


def test_seeds_give_one_run_per_alpha_and_seed(monkeypatch, tmp_path):
    """The plumbing only (notebook runs recorded, not executed): folders, each run's seed, the analysis over all."""
    from tools import sweep

    calls = []
    monkeypatch.setattr(sweep, "run_notebook", lambda notebook, params: calls.append((notebook.name, params)))
    result = sweep.sweep([0, 0.2], {"seed": 42, "epochs": 3, "output_dir": "ignored"}, tmp_path, seeds=[1, 2])
    trained = [(p["alpha"], p["seed"], p["output_dir"], p["epochs"]) for name, p in calls if name == "train.ipynb"]
    root = tmp_path.as_posix()
    assert trained == [(0.0, 1, f"{root}/alpha-0/seed-1", 3), (0.0, 2, f"{root}/alpha-0/seed-2", 3),
                       (0.2, 1, f"{root}/alpha-0.2/seed-1", 3), (0.2, 2, f"{root}/alpha-0.2/seed-2", 3)]
    (name, analysis_params), = [c for c in calls if c[0] == "analyze.ipynb"]
    assert analysis_params["run_dirs"] == result["run_dirs"] == [t[2] for t in trained]
    assert analysis_params["per_run_figures"] == "first-per-alpha"  # several seeds: one run per alpha is drawn
    calls.clear()
    sweep.sweep([0.1], {"seed": 42}, tmp_path, analyze=False)  # no seeds: the parameters' seed, no seed folder
    assert [(p["seed"], p["output_dir"]) for _, p in calls] == [(42, f"{root}/alpha-0.1")]
    for seeds in ([], [1, 1], [-1]):
        with pytest.raises(ValueError, match="seeds must be distinct integers >= 0"):
            sweep.sweep([0.1], {}, tmp_path, seeds=seeds)


@pytest.mark.parametrize("alphas, message", [([0.1, 0.1], "distinct"), ([1.5], "in \\[0, 1\\)"), ([], "at least one")])
def test_bad_alphas_are_refused(alphas, message, tmp_path):
    from tools.sweep import sweep

    with pytest.raises(ValueError, match=message):
        sweep(alphas, {}, tmp_path)


def _tiny_plan(tmp_path: Path, training: dict, seeds: list[int], analysis: dict | None = None) -> Path:
    """A plan file with the demo plan's design, these seeds and a training preset of these parameters."""
    import yaml

    preset = tmp_path / "tiny-preset.yaml"
    preset.write_text(yaml.safe_dump(training))
    plan = yaml.safe_load((Path(__file__).resolve().parent.parent / "params" / "study-demo.yaml").read_text())
    plan.update(name="tiny-plan", seeds=seeds, training={"preset": str(preset), "parameters": {}})
    plan["analysis"]["parameters"] = {**plan["analysis"]["parameters"], **(analysis or {})}
    path = tmp_path / "tiny-plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def test_plan_runs_its_slopes_times_seeds_after_saying_its_cost(monkeypatch, tmp_path, capsys):
    """The plumbing only (notebook runs recorded, not executed): the cost and power lines first, then each slope x
    seed with the plan's parameters and hash into alpha-<a>/seed-<s>, then the analysis given the plan."""
    from tools import sweep
    from utils import study_plan

    calls = []
    monkeypatch.setattr(sweep, "run_notebook", lambda notebook, params: calls.append((notebook.name, params)) or
                        print(f"ran {notebook.name}"))
    path = _tiny_plan(tmp_path, {"epochs": 3, "image_size": 32, "output_dir": "ignored"}, [1, 2])
    assert sweep.sweep_cli(["--plan", str(path), "--output-root", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    plan = study_plan.load_plan(path)
    assert out.index("2 slopes x 2 seeds = 4 runs") < out.index("power: with 2 seed pairs") < out.index("ran train")
    trained = [(p["alpha"], p["seed"], p["output_dir"], p["epochs"], p["plan_hash"]) for n, p in calls
               if n == "train.ipynb"]
    root = (tmp_path / "out").as_posix()
    assert trained == [(a, s, f"{root}/alpha-{a:g}/seed-{s}", 3, plan["hash"]) for a in (0.0, 0.2) for s in (1, 2)]
    (_, analysis_params), = [c for c in calls if c[0] == "analyze.ipynb"]
    assert analysis_params["plan"] == plan and analysis_params["run_dirs"] == [t[2] for t in trained]
    assert analysis_params["per_run_figures"] == "first-per-alpha" and analysis_params["extra_data_dirs"] == []
    with pytest.raises(SystemExit):
        sweep.sweep_cli(["--plan", str(path), "--seeds", "3"])
    assert "--plan fixes the slopes, seeds and parameters: drop --seeds" in capsys.readouterr().err


@pytest.mark.slow  # four training runs and an analysis, end to end
def test_tiny_plan_trains_each_slope_and_seed_and_answers_it(tiny_dataset, tmp_path):
    """`python -m tools.sweep --plan`: 2 slopes x 2 seeds trained (1 epoch), then the analysis answers in the plan's
    words: the primary endpoint's tests and one of the four verdicts, the plan and its hash in the record."""
    from tools import sweep
    from utils import study_plan, study_tests

    training = {**TINY_TRAIN_PARAMS, "epochs": 1, "data_dir": str(tiny_dataset)}
    training = {k: v for k, v in training.items() if k not in ("alpha", "seed")}
    path = _tiny_plan(tmp_path, training, [1, 2], {"robustness": {"jpeg_quality": [100, 30]}, "robustness_images": 2,
                                                   "gradcam_samples": 1, "bootstrap_resamples": 100,
                                                   "baseline_train_images": 4})
    assert sweep.sweep_cli(["--plan", str(path), "--output-root", str(tmp_path / "out")]) == 0
    plan = study_plan.load_plan(path)
    for alpha in ("0", "0.2"):
        for seed in (1, 2):
            record = json.loads((tmp_path / "out" / f"alpha-{alpha}" / f"seed-{seed}" / "metrics.json").read_text())
            assert record["params"]["plan_hash"] == plan["hash"] and record["params"]["seed"] == seed
            assert record["params"]["alpha"] == float(alpha) and record["epochs_run"] == 1
    analysis_dir = tmp_path / "out" / "analysis"
    record = json.loads((analysis_dir / "analysis.json").read_text())
    study = record["study"]
    assert study["plan"]["hash"] == plan["hash"] and study["n_pairs"] == 2
    assert study["verdict"] in study_tests.VERDICTS and study["t_test"]["n_pairs"] == 2
    assert [row["metric"] for row in study["secondary"]] == plan["secondary"]
    report = (analysis_dir / "analyze.html").read_text()
    assert f"VERDICT: {study['verdict']}" in report and "Exploratory" in report
    assert_report_shows_figures(analysis_dir / "analyze.ipynb", analysis_dir / "analyze.html",
                                sorted(analysis_dir.rglob("*.png")))


def test_a_misspelt_parameter_stops_the_sweep_before_its_first_run(monkeypatch, tmp_path, capsys):
    """`-p alpah 0` would train the default slope in every run: the sweep names it and the closest real name first."""
    from tools import sweep

    calls = []
    monkeypatch.setattr(sweep, "run_notebook", lambda notebook, params: calls.append(notebook))
    with pytest.raises(SystemExit) as stopped:
        sweep.sweep_cli(["--alphas", "0", "0.2", "-p", "alpah", "0", "--output-root", str(tmp_path)])
    assert stopped.value.code == 2 and calls == []
    assert "alpah: no such parameter of train.ipynb; did you mean alpha?" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sweep.sweep_cli(["--alphas", "0", "-a", "robustnes_images", "5", "--output-root", str(tmp_path)])
    assert "robustnes_images: no such parameter of analyze.ipynb; did you mean robustness_images?" in \
        capsys.readouterr().err and calls == []
