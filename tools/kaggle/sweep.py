"""The sweep on Kaggle within its limits: one kernel per variant, at most --sessions running at once, each waited
for and pulled, continued by running the same command again; and the hours it expects against the weekly quota of its
accelerator's pool (GPU and TPU hours are separate quotas)."""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tools.kaggle.calls import RESULTS_ROOT, RUNNING_STATES, api_call, kernel_status, pull, push_folder, report_status
from tools.kaggle.cli import EXIT_ERROR, KaggleError
from utils import run_files
from utils.accelerator import recorded_accelerator
from utils.runtime import BUILD_RECORD, EVALUATION_RESERVE_HOURS, KAGGLE_SESSION_HOURS

MAX_SESSIONS = 2  # Kaggle runs at most 2 batch GPU sessions per user at once
# Kaggle's words (the `error` of a refused SaveKernel) for "Maximum batch GPU session count of 2 reached." (try
# again when one ends) and "Maximum weekly GPU quota of 30.00 hours reached." (stop until the quota resets; a TPU
# push's refusal is assumed to read alike, with "TPU").
SESSION_LIMIT_RE = re.compile(r"session count", re.I)
QUOTA_RE = re.compile(r"\bquota\b", re.I)


def run_finished(dest: Path) -> bool:
    """False when a pulled run's metrics.json says a time budget ended it early (a later session continues it)."""
    for metrics in dest.rglob(run_files.METRICS):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if json.loads(metrics.read_text()).get("finished") is False:
                return False
    return True


def _variant_seconds(dest: Path) -> float | None:
    """GPU seconds a pulled run took by its own record (training plus this execution's wall time), None unknown."""
    for metrics in dest.rglob(run_files.METRICS):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            return float(json.loads(metrics.read_text()).get("wall_time_seconds"))
    return None


def run_accelerator(dest: Path) -> str:
    """The accelerator a pulled run ran on, by its build record (kaggle-build.json, the kernel's KAGGLE_BUILD): "gpu"
    without one (every run before the TPU path was pushed for the T4s), "cpu" for the "none" of builds before 2026-12."""
    for path in sorted(Path(dest).rglob(BUILD_RECORD)):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            return recorded_accelerator(json.loads(path.read_text()).get("accelerator") or "gpu")
    return "gpu"


def sweep_summary(done: list[str], left: list[str], seconds: list[float], accelerator: str = "gpu") -> str:
    """What ran, what is left and the hours of the accelerator's pool the rest needs (measured per run if possible)."""
    pool = accelerator.upper()
    if seconds:
        per_run = sum(seconds) / len(seconds) / 3600
        need = f"about {per_run * len(left):.1f} {pool} hours ({per_run:.2f} h per run, as measured so far)"
    else:
        need = (f"up to {KAGGLE_SESSION_HOURS * len(left):.0f} {pool} hours (one {KAGGLE_SESSION_HOURS:g} h session "
                "each; no run measured yet)")
    return (f"ran: {', '.join(done) or 'none'}; left: {', '.join(left) or 'none'}; the rest needs {need}. Run the "
            "same command again once the quota allows: finished variants are not pushed again")


def sweep_state(api: Any, user: str, variants: list[dict[str, Any]],
                results: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[str]]:
    """What an earlier run of this sweep left, by Kaggle's latest version of each slug: the variants to push (never
    pushed, or stopped by their time budget), those still running, and the slugs that finished (pulled if needed)."""
    queue, running, done = [], {}, []
    for variant in variants:
        ref = f"{user}/{variant['slug']}"
        try:
            state, _ = kernel_status(api, ref, reauth=False)
        except KaggleError as exc:
            if exc.transient:
                raise  # unreachable is not "never pushed": pushing again could repeat a finished run
            state = None  # never pushed (Kaggle answers 404, or 403 for an unknown private kernel)
        if state in RUNNING_STATES:
            print(f"{ref}: already {state}; waiting for it", flush=True)
            running[variant["slug"]] = {**variant, "ref": ref, "pushed": time.monotonic()}
        elif state == "COMPLETE":
            dest = results / variant["slug"]
            if not (dest / f"{variant['slug']}.html").is_file():
                pull(api, ref, results, state)
            if run_finished(dest):
                print(f"{ref}: finished before; not pushed again", flush=True)
                done.append(variant["slug"])
            else:
                print(f"{ref}: stopped by its time budget; continuing it from its output", flush=True)
                queue.append({**variant, "resume": ref})
        else:
            queue.append(variant)
    return queue, running, done


def run_sweep(api: Any, variants: list[dict[str, Any]], queue: list[dict[str, Any]], running: dict[str, dict[str, Any]],
              done: list[str], args: argparse.Namespace, sleep: Callable[[float], None] = time.sleep) -> int:
    """Run what sweep_state left with at most args.sessions at once: push when a session is free, wait, pull (a run
    its time budget stopped is pushed again to continue it); stop pushing at a quota refusal."""
    results = Path(args.results_dir or RESULTS_ROOT)
    codes, seconds = [0], []
    delay, quota, waiting_since = args.poll, None, None
    while running or (queue and quota is None):
        while queue and quota is None and len(running) < args.sessions:
            variant = queue[0]
            folder = variant["build"](variant.get("resume"))
            try:
                ref = push_folder(api, folder)
            except KaggleError as exc:
                if SESSION_LIMIT_RE.search(str(exc)):
                    print(f"{exc}: pushing it again when a session ends", file=sys.stderr, flush=True)
                    break
                if QUOTA_RE.search(str(exc)):
                    quota = str(exc)
                    break
                raise
            queue.pop(0)
            running[variant["slug"]] = {**variant, "ref": ref, "pushed": time.monotonic()}
            delay = args.poll
        if not running:
            if queue and quota is None:  # sessions taken elsewhere: try again later
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > args.timeout:
                    raise KaggleError(f"Kaggle refused every push for the session count for {args.timeout:.0f} s: "
                                      f"left: {', '.join(v['slug'] for v in queue)}; run the same command later")
                sleep(delay)
                delay = min(delay * 2, args.poll_max)
            continue
        waiting_since = None
        sleep(delay)
        delay = min(delay * 2, args.poll_max)
        for slug, variant in list(running.items()):
            try:
                state, message = kernel_status(api, variant["ref"])
            except KaggleError as exc:
                if not exc.transient:
                    raise
                print(f"{variant['ref']}: {exc} (retrying)", file=sys.stderr, flush=True)
                continue
            if state in RUNNING_STATES:
                if time.monotonic() - variant["pushed"] > args.timeout:
                    raise KaggleError(f"{variant['ref']} is still {state} after {args.timeout:.0f} s")
                continue
            del running[slug]
            codes.append(report_status(api, variant["ref"], state, message))
            delay = args.poll
            if state not in ("COMPLETE", "ERROR"):
                continue
            try:
                pull(api, variant["ref"], results, state)
            except KaggleError as exc:  # the others go on; the same command later pulls it again
                print(f"error: {exc}", file=sys.stderr, flush=True)
                codes.append(EXIT_ERROR)
                continue
            measured = _variant_seconds(results / slug)
            seconds += [measured] if measured else []
            if state == "COMPLETE" and not run_finished(results / slug):
                print(f"{variant['ref']}: stopped by its time budget; pushing it again to continue", flush=True)
                queue.append({**variant, "resume": "/".join(variant["ref"].split("/")[:2])})  # its latest output
            elif state == "COMPLETE":
                done.append(slug)
    if quota is not None:
        order = [v["slug"] for v in variants]
        ran = sorted(done, key=order.index)
        summary = sweep_summary(ran, [v["slug"] for v in queue], seconds, getattr(args, "accelerator", None) or "gpu")
        print(f"error: {quota}\n{summary}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    print(f"sweep done: {', '.join(done)} in {results}", flush=True)
    return max(codes)


# ---------------------------------------------------------------------------------------------- quota


def accelerator_quota(api: Any, accelerator: str = "gpu") -> tuple[float, float] | None:
    """This week's hours (left, allowed) of the accelerator's pool, as `kaggle quota` reports them (one answer holds
    gpu_quota and tpu_quota: separate pools); None for "cpu" or when Kaggle does not say."""
    if accelerator not in ("gpu", "tpu"):
        return None
    pool = accelerator.upper()
    try:
        response = api_call(api, f"cannot read the {pool} quota", api.quota_view)
    except KaggleError as exc:
        print(f"warning: {exc}; going on without the quota check", file=sys.stderr, flush=True)
        return None
    quota = getattr(response, f"{accelerator}_quota", None)
    if quota is None or quota.total_time_allowed is None:
        return None
    allowed = quota.total_time_allowed.total_seconds() / 3600
    used = quota.time_used.total_seconds() / 3600 if quota.time_used is not None else 0.0
    return max(0.0, allowed - used), allowed


def pulled_records(results: Path, slugs: list[str], accelerator: str | None = None) -> dict[str, dict[str, Any]]:
    """The metrics.json record of each pulled slug that holds one (the first found under results/<slug>/); with
    `accelerator`, only of the runs that ran on it (run_accelerator)."""
    records = {}
    for slug in slugs:
        if accelerator is not None and run_accelerator(Path(results) / slug) != accelerator:
            continue
        for metrics in sorted((Path(results) / slug).rglob(run_files.METRICS)):
            with contextlib.suppress(OSError, ValueError):
                records[slug] = json.loads(metrics.read_text())
                break
    return records


def measured_epoch_seconds(results: Path, slugs: list[str], accelerator: str = "gpu") -> float | None:
    """Seconds per training epoch as this sweep's pulled runs on `accelerator` recorded them (their mean; a T4 x2
    epoch says nothing of a TPU's), None before any."""
    rates = []
    for slug in slugs:
        if run_accelerator(Path(results) / slug) != accelerator:
            continue
        for metrics in (Path(results) / slug).rglob(run_files.METRICS):
            with contextlib.suppress(OSError, ValueError, AttributeError, TypeError, KeyError, ZeroDivisionError):
                record = json.loads(metrics.read_text())
                rates.append(float(record["training_seconds"]) / int(record["epochs_run"]))
    return sum(rates) / len(rates) if rates else None


def expected_gpu_hours(params: dict[str, Any], runs: int, epoch_seconds: float | None) -> tuple[float, str]:
    """Accelerator hours (GPU or TPU) `runs` trainings with these parameters need, and how that was estimated."""
    if epoch_seconds is not None:
        epochs = int(params.get("epochs") or 1)
        per_run = epoch_seconds * epochs / 3600 + EVALUATION_RESERVE_HOURS
        return per_run * runs, f"{per_run:.1f} h per run from a measured {epoch_seconds:.0f} s per epoch"
    budget = params.get("time_budget_hours")
    per_run = (float(budget) + EVALUATION_RESERVE_HOURS) if budget else KAGGLE_SESSION_HOURS
    source = f"time_budget_hours {budget:g}" if budget else f"one {KAGGLE_SESSION_HOURS:g} h session each"
    return per_run * runs, f"{per_run:.1f} h per run ({source}; no epoch measured yet, so a first session only)"


def check_quota(quota: tuple[float, float] | None, params: dict[str, Any], runs: int, epoch_seconds: float | None,
                force: bool, accelerator: str = "gpu") -> None:
    """Say the hours a sweep expects beside the weekly quota left in its accelerator's pool (accelerator_quota's
    answer); refuse one that cannot finish this week. A CPU sweep spends no quota."""
    if accelerator == "cpu":
        return
    pool = accelerator.upper()
    need, how = expected_gpu_hours(params, runs, epoch_seconds)
    if quota is None:
        print(f"this sweep expects about {need:.1f} {pool} hours for {runs} run(s) ({how}); Kaggle did not report the "
              f"{pool} quota left (`kaggle quota`)", flush=True)
        return
    left, allowed = quota
    print(f"this sweep expects about {need:.1f} {pool} hours for {runs} run(s) ({how}); {pool} quota left this week: "
          f"{left:.1f} of {allowed:.0f} h", flush=True)
    if need > left and not force:
        raise KaggleError(f"{runs} run(s) need about {need:.1f} {pool} hours but {left:.1f} h of the {pool} quota are "
                          "left this week: the sweep would stop part-way. Sweep fewer alphas now, or pass "
                          "--ignore-quota to start anyway (a quota refusal stops pushing; running the same command "
                          "next week continues it)")
