"""tools.sweep: two tiny alphas through train.ipynb (one trained, one reused), then analyze.ipynb over both."""
import json

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


def test_tiny_sweep_trains_each_alpha_and_compares_them(tiny_dataset, tiny_run, tmp_path):
    """alpha 0 is trained (1 epoch); alpha 0.2 reuses a copy of the tiny run, as the sweep reuses finished runs."""
    import shutil

    from tools import sweep

    shutil.copytree(tiny_run, tmp_path / "alpha-0.2")
    model_time = (tmp_path / "alpha-0.2" / "model.keras").stat().st_mtime_ns
    params = {**TINY_TRAIN_PARAMS, "epochs": 1, "data_dir": str(tiny_dataset), "output_dir": "ignored"}
    code = sweep.sweep_cli(["--alphas", "0", "0.2", "--output-root", str(tmp_path),
                            *[x for k, v in params.items() for x in ("-p", k, json.dumps(v))],
                            "-a", "robustness", json.dumps({"jpeg_quality": [100, 30]}), "-a", "robustness_images", "2",
                            "-a", "gradcam_samples", "1"])
    assert code == 0
    trained = json.loads((tmp_path / "alpha-0" / "metrics.json").read_text())
    assert trained["params"]["alpha"] == 0.0 and trained["epochs_run"] == 1
    reused = json.loads((tmp_path / "alpha-0.2" / "metrics.json").read_text())
    assert reused["params"]["alpha"] == 0.2 and reused["epochs_run"] == TINY_TRAIN_PARAMS["epochs"]
    assert (tmp_path / "alpha-0.2" / "model.keras").stat().st_mtime_ns == model_time  # not retrained
    record = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    table = record["alpha_table"]
    assert [row["alpha"] for row in table] == [0.0, 0.2] and [row["baseline"] for row in table] == [True, False]
    by_alpha = record["alpha_summary"]
    assert [(row["alpha"], row["runs"]) for row in by_alpha] == [(0.0, 1), (0.2, 1)]
    assert by_alpha[1]["accuracy"] == table[1]["accuracy"] and by_alpha[1]["accuracy_std"] is None  # one seed
    assert (tmp_path / "analysis" / "alpha.png").is_file() and (tmp_path / "analysis" / "analyze.html").is_file()
    analysis_dir = tmp_path / "analysis"
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
