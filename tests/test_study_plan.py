"""The study plan: the committed plans load, the hash follows the content only, bad input names the file and key,
runs of another plan or other parameters are refused by name, and the cost / power statement."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from utils import study_plan, study_tests

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name, preset, seeds", [("study-alpha", "kaggle-t4x2", 6), ("study-demo", "cpu-demo", 6)])
def test_committed_plans_load(name, preset, seeds):
    plan = study_plan.load_plan(REPO_ROOT / "params" / f"{name}.yaml")
    assert plan["slopes"] == [0.0, 0.2] and len(plan["seeds"]) >= seeds
    assert plan["primary"]["metric"] == "log_loss" and plan["primary"]["test"] == study_plan.PRIMARY_TEST
    assert plan["training"] == {k: v for k, v in yaml.safe_load((REPO_ROOT / "params" / f"{preset}.yaml").read_text())
                                .items() if k not in ("alpha", "seed")}
    assert "recall" not in plan["secondary"] and plan["primary"]["metric"] not in plan["secondary"]
    assert len(plan["hash"]) == 12 and study_plan.checked_plan(plan) == plan


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    return path


PLAN = (REPO_ROOT / "params" / "study-demo.yaml").read_text()


def test_hash_follows_the_content_not_the_layout(tmp_path):
    original = study_plan.load_plan(REPO_ROOT / "params" / "study-demo.yaml")
    reordered = yaml.safe_load(PLAN)
    reordered = dict(reversed(list(reordered.items())))
    same = study_plan.load_plan(_write(tmp_path, "# another comment\n" + yaml.safe_dump(reordered)))
    assert same["hash"] == original["hash"]
    other = study_plan.load_plan(_write(tmp_path, PLAN.replace("margin: 0.05", "margin: 0.04")))
    assert other["hash"] != original["hash"]
    with pytest.raises(ValueError, match="does not match its content"):
        study_plan.checked_plan({**original, "seeds": [1, 2]})


@pytest.mark.parametrize("change, key", [
    (("slopes: [0, 0.2]", "slopes: [0.2, 0]"), "slopes"),
    (("seeds: [42, 43, 44, 45, 46, 47]", "seeds: [42, 42]"), "seeds"),
    (("metric: log_loss", "metric: accuracy"), "primary.metric"),
    (("margin: 0.05", "margin: -1"), "margin"),
    (("secondary: [accuracy,", "secondary: [recall, accuracy_fake, accuracy,"), "secondary"),
    (("preset: params/cpu-demo.yaml", "preset: params/nope.yaml"), "training.preset"),
    (("hours_per_run: 0.07", "hours_per_run: soon"), "hours_per_run"),
])
def test_bad_plans_name_the_file_and_key(tmp_path, change, key):
    path = _write(tmp_path, PLAN.replace(*change))
    with pytest.raises(ValueError, match=rf"{path}: {key}="):
        study_plan.load_plan(path)


def test_check_runs_refuses_another_plan_or_other_parameters():
    plan = study_plan.load_plan(REPO_ROOT / "params" / "study-demo.yaml")
    good = {f"r{a}-{s}": {**study_plan.run_parameters(plan, a, s), "output_dir": f"x/{a}/{s}"}
            for a in plan["slopes"] for s in plan["seeds"]}
    study_plan.check_runs(plan, good)
    with pytest.raises(ValueError, match=r"run r0.2-43 belongs to another plan: its plan_hash is 'abcdef123456'"):
        study_plan.check_runs(plan, {**good, "r0.2-43": {**good["r0.2-43"], "plan_hash": "abcdef123456"}})
    with pytest.raises(ValueError, match="run r0.0-42 belongs to another plan: its plan_hash is None"):
        study_plan.check_runs(plan, {"r0.0-42": {k: v for k, v in good["r0.0-42"].items() if k != "plan_hash"}})
    with pytest.raises(ValueError, match=r"run r0.0-44: parameter epochs=1 differs from the plan's 6"):
        study_plan.check_runs(plan, {**good, "r0.0-44": {**good["r0.0-44"], "epochs": 1}})
    with pytest.raises(ValueError, match=r"run r0.0-44: parameter blur_prob=0.5 differs from the plan's 0.0"):
        study_plan.check_runs(plan, {"r0.0-44": {**good["r0.0-44"], "blur_prob": 0.5}})  # a default the plan keeps
    with pytest.raises(ValueError, match="seed 7 is not one of the plan's seeds"):
        study_plan.check_runs(plan, {"r": {**good["r0.0-44"], "seed": 7}})


def test_cost_and_power_statement():
    plan = study_plan.load_plan(REPO_ROOT / "params" / "study-alpha.yaml")
    lines = study_plan.cost_lines(plan)
    assert "12 runs, 8.00 h per run (estimated, not measured), 96.0 h in all" in lines[0]
    assert "3.2 weeks of a 30 GPU h weekly quota" in lines[1] and "takes 4 week(s)" in lines[1]
    sd = study_tests.pair_sd(0.003, 0.2, 20000)
    assert f"{study_tests.detectable_difference(6, sd):.3g}" in lines[2] and "80% power" in lines[2]
    assert "assumptions, not measured" in lines[2]
    measured = study_plan.measured_hours(plan, [
        {"params": {"plan_hash": plan["hash"]}, "finished": True, "training_seconds": 5 * 3600},
        {"params": {"plan_hash": "another"}, "finished": True, "training_seconds": 1.0},
        {"params": {"plan_hash": plan["hash"]}, "finished": False, "training_seconds": 1.0}])
    assert measured == 5.0
    assert "5.00 h per run (measured from a finished run of this plan)" in study_plan.cost_lines(plan, measured)[0]
    assert "takes 2 week(s)" in study_plan.cost_lines(plan, measured)[1]  # 6 runs a week


def test_cost_names_the_accelerators_quota_pool():
    """GPU and TPU hours are separate weekly quotas: the quota line names the pool; a TPU plan uses the TPU hours
    Kaggle reported (the plan's weekly_quota_hours is the GPU pool's), and says so when none were reported."""
    plan = study_plan.load_plan(REPO_ROOT / "params" / "study-alpha.yaml")
    assert "of a 30 GPU h weekly quota" in study_plan.cost_lines(plan, None, "gpu")[1]
    tpu = study_plan.cost_lines(plan, None, "tpu", weekly_quota_hours=20.0)[1]
    assert "4.8 weeks of a 20 TPU h weekly quota" in tpu and "GPU" not in tpu
    assert "did not report the weekly TPU quota" in study_plan.cost_lines(plan, None, "tpu")[1]
    cpu = study_plan.cost_lines(plan, None, "cpu")
    assert len(cpu) == 2 and not any(line.startswith("quota:") for line in cpu)  # a CPU plan spends no quota


def test_a_plans_runs_must_share_the_machines_effective_values():
    """Runs of T4 x2 beside runs of a TPU: the global batch, learning rate and precision differ, and the slope's
    effect would be confounded with the machine; runs recorded before these values existed are not compared."""
    gpu = {"replicas": 2, "global_batch": 64, "effective_learning_rate": 0.001 * 2 ** 0.5,
           "precision": "mixed_float16", "keras_backend": "tensorflow"}
    tpu = {**gpu, "replicas": 8, "global_batch": 256, "effective_learning_rate": 0.001 * 8 ** 0.5,
           "precision": "mixed_bfloat16", "keras_backend": "jax"}
    study_plan.check_same_protocol({"a": gpu, "b": dict(gpu), "old": None, "older": {"replicas": 2}})
    with pytest.raises(ValueError, match="run b trained with replicas=8 but run a with 2.*one --accelerator"):
        study_plan.check_same_protocol({"a": gpu, "b": tpu})
    with pytest.raises(ValueError, match="precision='mixed_bfloat16'"):
        study_plan.check_same_protocol({"a": gpu, "b": {**gpu, "precision": "mixed_bfloat16"}})
