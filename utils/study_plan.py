"""The study plan: one file written before the runs (slopes, seeds, training preset, the primary endpoint, its test,
level and margin, the assumed spread, the exploratory metrics), loaded, checked, hashed, and held against the runs."""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from utils import study_tests

PRIMARY_METRICS = {"log_loss": True}  # endpoint -> lower is better; per-image, so the paired tests can use it
PRIMARY_TEST = "paired t-test over seeds"  # the test that decides the verdict (utils.study_tests.verdict)
# Run-level metrics the analysis can compare (utils.analysis.summary_row), and whether lower is better.
SECONDARY_METRICS = {"accuracy": False, "accuracy_real": False, "accuracy_fake": False, "precision": False,
                     "recall": False, "f1": False, "roc_auc": False, "average_precision": False, "eer": True,
                     "ece": True, "accuracy_at_val_threshold": False}
SAME_NUMBER = {"recall": "accuracy_fake"}  # recall of the fake class is accuracy on fakes: one of them per family
# What may differ between the runs of one plan: the slope and seed are the design, the folder is where it went.
VARYING = ("alpha", "seed", "output_dir", "plan_hash")
HASH_LENGTH = 12


def _fail(source: str, key: str, expected: str, value: Any) -> ValueError:
    """A ValueError naming the plan file, the key, what was expected and what it holds."""
    return ValueError(f"{source}: {key}={value!r} is invalid: expected {expected}")


def _number(plan: Mapping[str, Any], key: str, source: str, check, expected: str) -> float:
    """plan[key] as a float, checked."""
    value = plan.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not check(value):
        raise _fail(source, key, expected, value)
    return float(value)


def _mapping(plan: Mapping[str, Any], key: str, source: str) -> dict[str, Any]:
    """plan[key] as a dict (required)."""
    value = plan.get(key)
    if not isinstance(value, dict):
        raise _fail(source, key, "a mapping", value)
    return value


def validate_plan(plan: Mapping[str, Any], source: str = "the plan") -> dict[str, Any]:
    """The plan checked key by key (a ValueError names `source` and the key), in canonical form.

    `training` must hold the resolved training parameters (resolve_plan reads the preset file into it), so a kernel
    that only has utils can check runs against it.
    """
    if not isinstance(plan, Mapping):
        raise ValueError(f"{source}: expected a mapping of plan keys, got {type(plan).__name__}")
    known = {"name", "question", "slopes", "seeds", "training", "primary", "secondary", "analysis", "cost"}
    unknown = sorted(set(plan) - known - {"hash"})
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown}; a plan has {sorted(known)}")
    name = plan.get("name")
    if not isinstance(name, str) or not name or name != name.lower() or not name.replace("-", "").isalnum():
        raise _fail(source, "name", "lowercase letters, digits and hyphens (it names the run folders and kernels)",
                    name)
    slopes = plan.get("slopes")
    if (not isinstance(slopes, list) or len(slopes) != 2 or any(isinstance(a, bool) or not isinstance(a, (int, float))
                                                                 or not 0 <= a < 1 for a in slopes)
            or slopes[0] != 0 or slopes[1] == 0):
        raise _fail(source, "slopes", "[0, a]: the ReLU baseline first, then one LeakyReLU slope in (0, 1)", slopes)
    seeds = plan.get("seeds")
    if (not isinstance(seeds, list) or not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                        for s in seeds) or len(set(seeds)) != len(seeds)):
        raise _fail(source, "seeds", "a list of distinct integers >= 0", seeds)
    training = _mapping(plan, "training", source)
    if set(training) & {"alpha", "seed", "plan_hash"}:
        raise _fail(source, "training", "no alpha, seed or plan_hash (the plan sets them per run)",
                    sorted(set(training) & {"alpha", "seed", "plan_hash"}))
    primary = _mapping(plan, "primary", source)
    metric = primary.get("metric")
    if metric not in PRIMARY_METRICS:
        raise _fail(source, "primary.metric", f"one of {sorted(PRIMARY_METRICS)} (a per-image metric)", metric)
    if primary.get("test") != PRIMARY_TEST:
        raise _fail(source, "primary.test", repr(PRIMARY_TEST), primary.get("test"))
    level = _number(primary, "significance_level", source, lambda v: 0 < v < 0.5, "a number in (0, 0.5)")
    margin = _number(primary, "margin", source, lambda v: v > 0, "a number > 0 (in the metric's units)")
    seed_sd = _number(primary, "assumed_seed_sd", source, lambda v: v > 0, "a number > 0 (an assumption)")
    image_sd = _number(primary, "assumed_image_sd", source, lambda v: v >= 0, "a number >= 0 (an assumption)")
    test_images = _number(primary, "test_images", source, lambda v: v >= 2 and v == int(v), "an integer >= 2")
    resamples = _number(primary, "bootstrap_resamples", source, lambda v: v >= 100 and v == int(v),
                        "an integer >= 100")
    secondary = plan.get("secondary")
    if not isinstance(secondary, list) or any(m not in SECONDARY_METRICS for m in secondary) \
            or len(set(secondary)) != len(secondary):
        raise _fail(source, "secondary", f"a list of distinct metrics from {sorted(SECONDARY_METRICS)}", secondary)
    for one, same in SAME_NUMBER.items():
        if one in secondary and same in secondary:
            raise _fail(source, "secondary", f"{one} or {same}, not both (the same number twice in the family)",
                        secondary)
    analysis = _mapping(plan, "analysis", source)
    if "run_dirs" in analysis or "plan" in analysis:
        raise _fail(source, "analysis", "no run_dirs or plan (the sweep gives them)", sorted(analysis))
    cost = _mapping(plan, "cost", source)
    hours = _number(cost, "hours_per_run", source, lambda v: v > 0, "a number of hours > 0 (an estimate)")
    quota = cost.get("weekly_quota_hours")
    if quota is not None:
        _number(cost, "weekly_quota_hours", source, lambda v: v > 0, "None or hours > 0")
    sessions = _number(cost, "sessions", source, lambda v: v >= 1 and v == int(v), "an integer >= 1")
    return {"name": name, "question": str(plan.get("question", "")), "slopes": [float(a) for a in slopes],
            "seeds": list(seeds), "training": dict(training),
            "primary": {"metric": metric, "test": PRIMARY_TEST, "significance_level": level, "margin": margin,
                        "assumed_seed_sd": seed_sd, "assumed_image_sd": image_sd, "test_images": int(test_images),
                        "bootstrap_resamples": int(resamples)},
            "secondary": list(secondary), "analysis": dict(analysis),
            "cost": {"hours_per_run": hours, "weekly_quota_hours": None if quota is None else float(quota),
                     "sessions": int(sessions)}}


def plan_hash(plan: Mapping[str, Any]) -> str:
    """The first 12 hex digits of the SHA-256 of the validated plan as sorted JSON (comments and layout do not count)."""
    canonical = validate_plan({k: v for k, v in plan.items() if k != "hash"})
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def resolve_plan(raw: Mapping[str, Any], source: str, root: str | os.PathLike) -> dict[str, Any]:
    """A plan file's content with its training and analysis presets read in (paths relative to `root`), checked, with
    its hash: what every run records and the analysis receives."""
    import yaml

    plan = dict(raw)
    for key in ("training", "analysis"):
        section = plan.get(key)
        if not isinstance(section, dict) or not isinstance(section.get("preset"), str):
            raise _fail(source, key, "a mapping with `preset` (a parameters file) and `parameters` (changes)", section)
        preset = Path(root) / section["preset"]
        if not preset.is_file():
            raise _fail(source, f"{key}.preset", "an existing parameters file", section["preset"])
        changes = section.get("parameters") or {}
        if not isinstance(changes, dict):
            raise _fail(source, f"{key}.parameters", "a mapping of parameter changes", changes)
        values = yaml.safe_load(preset.read_text()) or {}
        plan[key] = {**values, **changes}
    plan["training"] = {k: v for k, v in plan["training"].items() if k not in ("alpha", "seed")}
    plan["analysis"] = {k: v for k, v in plan["analysis"].items() if k != "run_dirs"}
    plan = validate_plan(plan, source)
    return {**plan, "hash": plan_hash(plan)}


def load_plan(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read a plan YAML file (e.g. params/study-demo.yaml), resolve its presets (relative to the repository) and
    hash it."""
    import yaml

    from utils.runtime import REPO_ROOT

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study plan {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of plan keys, got {type(raw).__name__}")
    return resolve_plan(raw, str(path), REPO_ROOT if root is None else root)


def checked_plan(plan: Mapping[str, Any], source: str = "parameter plan") -> dict[str, Any]:
    """A resolved plan as passed to the analysis, checked and its recorded hash verified against its content."""
    canonical = validate_plan({k: v for k, v in plan.items() if k != "hash"}, source)
    digest = plan_hash(canonical)
    if plan.get("hash") not in (None, digest):
        raise ValueError(f"{source}: hash {plan.get('hash')!r} does not match its content ({digest}): the plan was "
                         "changed after it was hashed")
    return {**canonical, "hash": digest}


def run_parameters(plan: Mapping[str, Any], alpha: float, seed: int) -> dict[str, Any]:
    """One run's training parameters: the plan's, its slope and seed, and the plan's hash."""
    return {**plan["training"], "alpha": float(alpha), "seed": int(seed), "plan_hash": plan["hash"]}


def _same(a: Any, b: Any) -> bool:
    """Two parameter values equal as recorded (ints and floats alike, lists and tuples alike)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return a == b


def check_runs(plan: Mapping[str, Any], runs: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse (ValueError naming the run and the parameter) a run of another plan, or whose parameters differ from the
    plan's other than alpha, seed and output_dir, or whose slope or seed the plan does not list."""
    from utils.parameters import PARAMETERS

    expected = {name: default for name, (default, *_rest) in PARAMETERS.items()} | dict(plan["training"])
    for name, params in runs.items():
        recorded = params.get("plan_hash")
        if recorded != plan["hash"]:
            raise ValueError(f"run {name} belongs to another plan: its plan_hash is {recorded!r}, the plan "
                             f"{plan['name']!r} has {plan['hash']!r}")
        if not any(_same(params.get("alpha"), a) for a in plan["slopes"]):
            raise ValueError(f"run {name}: alpha {params.get('alpha')!r} is not one of the plan's slopes "
                             f"{plan['slopes']}")
        if params.get("seed") not in plan["seeds"]:
            raise ValueError(f"run {name}: seed {params.get('seed')!r} is not one of the plan's seeds {plan['seeds']}")
        for key, value in expected.items():
            if key not in VARYING and key in params and not _same(params[key], value):
                raise ValueError(f"run {name}: parameter {key}={params[key]!r} differs from the plan's {value!r}")


# The effective values a run trained with (metrics.json "training"), which its parameters alone do not fix: they follow
# the machine (replicas: 2 on GPU T4 x2, 8 on a TPU v5e-8) and its precision.
PROTOCOL_VALUES = ("replicas", "global_batch", "effective_learning_rate", "precision", "keras_backend")


def check_same_protocol(trainings: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Refuse (ValueError naming both runs and the value) a plan's runs that trained with different effective values:
    e.g. runs of T4 x2 (global batch 2 x batch_size, mixed_float16) beside runs of a TPU (8 x, mixed_bfloat16), which
    would confound the slope with the machine. Values a run did not record (older runs) are not compared."""
    first: dict[str, tuple[str, Any]] = {}
    for name, training in trainings.items():
        for key in PROTOCOL_VALUES:
            value = (training or {}).get(key)
            if value is None:
                continue
            if key not in first:
                first[key] = (name, value)
            elif not _same(first[key][1], value):
                raise ValueError(f"run {name} trained with {key}={value!r} but run {first[key][0]} with "
                                 f"{first[key][1]!r}: a plan's runs must share one protocol, so run them all on one "
                                 "machine (one --accelerator)")


def measured_hours(plan: Mapping[str, Any], records: list[Mapping[str, Any]]) -> float | None:
    """Mean training hours of the finished runs of this plan among metrics.json records; None before any."""
    hours = [float(r["training_seconds"]) / 3600 for r in records
             if (r.get("params") or {}).get("plan_hash") == plan["hash"] and r.get("finished") is not False
             and isinstance(r.get("training_seconds"), (int, float))]
    return sum(hours) / len(hours) if hours else None


def cost_lines(plan: Mapping[str, Any], measured_hours: float | None = None, accelerator: str = "gpu",
               weekly_quota_hours: float | None = None) -> list[str]:
    """What the plan costs and can detect, said before its first run: runs, hours per run (measured when a run of
    the plan finished, else the plan's estimate), weeks of quota at the plan's sessions, and the detectable
    difference at 80% power under the assumed spread.

    The quota is the accelerator's pool ("gpu" or "tpu": separate weekly quotas; "cpu" spends none): its weekly hours
    as Kaggle reported them (`weekly_quota_hours`), else the plan's cost.weekly_quota_hours, which is the GPU pool's.
    """
    runs = len(plan["slopes"]) * len(plan["seeds"])
    cost, primary = plan["cost"], plan["primary"]
    per_run = measured_hours if measured_hours is not None else cost["hours_per_run"]
    how = "measured from a finished run of this plan" if measured_hours is not None else "estimated, not measured"
    total = per_run * runs
    lines = [f"plan {plan['name']} ({plan['hash']}): {len(plan['slopes'])} slopes x {len(plan['seeds'])} seeds = "
             f"{runs} runs, {per_run:.2f} h per run ({how}), {total:.1f} h in all"]
    pool = accelerator.upper()
    quota = weekly_quota_hours or (cost["weekly_quota_hours"] if accelerator == "gpu" else None)
    if quota:
        sessions = cost["sessions"]
        per_week = max(1, math.floor(quota / per_run))
        lines.append(f"quota: {total:.0f} h is {total / quota:.1f} weeks of a {quota:g} {pool} h weekly quota; at "
                     f"{per_week} whole run(s) a week the plan takes {math.ceil(runs / per_week)} week(s), "
                     f"{sessions} session(s) at once running each week's share in about "
                     f"{math.ceil(min(per_week, runs) / sessions) * per_run:.0f} h")
    elif accelerator == "tpu":
        lines.append("quota: Kaggle did not report the weekly TPU quota (a pool apart from the GPU hours the plan's "
                     "cost.weekly_quota_hours gives), so the weeks the plan takes on a TPU are not known")
    sd = study_tests.pair_sd(primary["assumed_seed_sd"], primary["assumed_image_sd"], primary["test_images"])
    mde = study_tests.detectable_difference(len(plan["seeds"]), sd, 1 - primary["significance_level"])
    lines.append(f"power: with {len(plan['seeds'])} seed pairs and {primary['test_images']} test images, the "
                 f"{primary['test']} at {primary['significance_level']:g} detects a true difference in "
                 f"{primary['metric']} of {mde:.3g} with {study_tests.POWER:.0%} power, assuming a seed-to-seed SD "
                 f"of {primary['assumed_seed_sd']:g} and a per-image SD of {primary['assumed_image_sd']:g} "
                 f"(assumptions, not measured); the equivalence margin is {primary['margin']:g}")
    return lines
