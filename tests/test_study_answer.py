"""utils.analysis.study_answer: the runs held against the plan (refused by name), the primary endpoint's tests on the
shared test images per seed pair, the verdict, and the secondary family alone under Holm."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from utils import analysis, comparison, study_plan, study_tests
from utils.data import Split

REPO_ROOT = Path(__file__).resolve().parent.parent


def _runs(plan: dict, gain: float) -> list[analysis.Run]:
    """A Run per slope and seed scored on the same 40 test images: LeakyReLU's P(label) higher by `gain`."""
    paths = [f"test/{'fake' if i % 2 else 'real'}/{i}.png" for i in range(40)]
    y = np.array([i % 2 for i in range(40)])
    runs = []
    for alpha in plan["slopes"]:
        for seed in plan["seeds"]:
            rng = np.random.default_rng(seed)
            right = np.clip(0.7 + rng.normal(0, 0.05) + rng.normal(0, 0.05, 40) + (gain if alpha else 0), 0.01, 0.99)
            p = np.where(y == 1, right, 1 - right)
            params = {**study_plan.run_parameters(plan, alpha, seed), "output_dir": f"runs/{alpha}/{seed}"}
            root = f"/mount-{alpha:g}-{seed}/faces"  # each run's own mount of the same dataset, as on Kaggle
            runs.append(analysis.Run(f"alpha-{alpha:g}-seed-{seed}", Path("."), {"params": params}, None,
                                     SimpleNamespace(root=root), "test",
                                     {"test": Split([f"{root}/{path}" for path in paths], list(y))}, y={"test": y},
                                     p={"test": p}))
    return runs


def _table(runs: list[analysis.Run]):
    return comparison.alpha_table([{"run": r.name, "alpha": r.params["alpha"], "seed": r.params["seed"],
                                    "accuracy": float(np.mean((r.p["test"] > 0.5) == r.y["test"])), "roc_auc": 0.9,
                                    "average_precision": 0.9, "eer": 0.1, "ece": 0.05, "recall": 0.8} for r in runs])


def test_study_answer_tests_the_primary_endpoint_and_gives_the_verdict():
    plan = study_plan.load_plan(REPO_ROOT / "params" / "study-demo.yaml")
    runs = _runs(plan, gain=0.15)
    answer = analysis.study_answer(plan, runs, _table(runs))
    assert answer["verdict"] == "LeakyReLU better" and answer["n_pairs"] == 6 and not answer["missing_runs"]
    relu = [study_tests.per_image_log_loss(r.y["test"], r.p["test"]).mean() for r in runs[:6]]
    leaky = [study_tests.per_image_log_loss(r.y["test"], r.p["test"]).mean() for r in runs[6:]]
    assert answer["t_test"] == study_tests.seed_t_test(leaky, relu)
    assert answer["sign_flip"]["p_value"] == pytest.approx(2 / 64)  # every pair favours LeakyReLU
    assert [p["seed"] for p in answer["per_pair"]] == plan["seeds"] and answer["per_pair"][0]["n_images"] == 40
    assert answer["hierarchical_bootstrap"]["mean_diff"] == pytest.approx(np.mean(np.subtract(leaky, relu)))
    assert list(answer["secondary"]["metric"]) == plan["secondary"]  # recall is not in the family
    assert answer["secondary"]["p_holm"].tolist() == pytest.approx(
        comparison.holm(answer["secondary"]["p_value"].tolist()), nan_ok=True)
    heading = analysis.study_heading(answer)
    assert "VERDICT: LeakyReLU better" in heading and plan["hash"] in heading
    primary, pairs = analysis.study_frames(answer)
    assert primary["test"].iloc[0].startswith("paired t-test over seeds (primary)") and len(pairs) == 6
    partial = analysis.study_answer(plan, runs[:5] + runs[6:], _table(runs))  # ReLU seed 47 missing
    assert partial["n_pairs"] == 5 and "missing: alpha 0 seed 47" in partial["why"]


def test_study_answer_refuses_runs_of_another_plan_or_parameters():
    plan = study_plan.load_plan(REPO_ROOT / "params" / "study-demo.yaml")
    runs = _runs(plan, gain=0.0)
    runs[3].record["params"]["plan_hash"] = "0123456789ab"
    with pytest.raises(ValueError, match="run alpha-0-seed-45 belongs to another plan"):
        analysis.study_answer(plan, runs, _table(runs))
    runs = _runs(plan, gain=0.0)
    runs[7].record["params"]["image_size"] = 32
    with pytest.raises(ValueError, match="run alpha-0.2-seed-43: parameter image_size=32 differs from the plan's 64"):
        analysis.study_answer(plan, runs, _table(runs))
    runs = _runs(plan, gain=0.0)
    runs[7].splits["test"] = Split(list(reversed(runs[7].splits["test"].paths)), runs[7].splits["test"].labels)
    with pytest.raises(ValueError, match="not scored on the same images"):
        analysis.study_answer(plan, runs, _table(runs))


def test_descriptive_comparison_tests_no_metric_twice():
    """Without a plan the paired table still leaves recall out: it is accuracy_fake under another name."""
    plan = study_plan.load_plan(REPO_ROOT / "params" / "study-demo.yaml")
    table = _table(_runs(plan, gain=0.0)).assign(accuracy_fake=0.8)
    assert "recall" not in analysis.tested_metrics(table) and "accuracy_fake" in analysis.tested_metrics(table)
