"""Alpha sweep: train the same protocol for several LeakyReLU slopes (or a study plan's slopes x seeds), then analyse
all runs together."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tools.notebook import (
    ANALYZE_NOTEBOOK,
    TRAIN_NOTEBOOK,
    check_notebook_parameters,
    load_params,
    parse_value,
    run_notebook,
)
from utils import run_files, study_plan

DEFAULT_ALPHAS = (0.0, 0.01, 0.1, 0.2, 0.3)  # 0 is the ReLU baseline; 0.2 the study's a = 5
SWEEP_ROOT = "runs/sweep"  # where an --alphas/--seeds sweep goes by default


def run_folder(root: str | Path, alpha: float, seed: int | None = None) -> Path:
    """<root>/alpha-<alpha> (shortest decimal form: alpha-0, alpha-0.01, ...), with /seed-<seed> below when given."""
    folder = Path(root) / f"alpha-{float(alpha):g}"
    return folder if seed is None else folder / f"seed-{int(seed)}"


def sweep(alphas: Sequence[float] = DEFAULT_ALPHAS, params: dict[str, Any] | None = None,
          output_root: str | Path = SWEEP_ROOT, analysis_params: dict[str, Any] | None = None,
          analyze: bool = True, seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Train notebooks/train.ipynb per alpha (and per seed) into its own folder, then analyze.ipynb over all runs.

    Without `seeds` each alpha is trained once with the parameters' seed into <root>/alpha-<a>; with seeds, once per
    seed into <root>/alpha-<a>/seed-<s>, so the analysis can show the spread between seeds next to the alpha effect.
    A run folder already holding a finished run with the same parameters is reused by the training notebook itself;
    one with other parameters makes it stop with an error rather than overwrite.
    """
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ValueError("alphas must list at least one LeakyReLU slope")
    if len(set(alphas)) != len(alphas):
        raise ValueError(f"alphas must be distinct, got {alphas}")
    bad = [a for a in alphas if not 0 <= a < 1]
    if bad:
        raise ValueError(f"every alpha must be a LeakyReLU slope in [0, 1), got {bad}")
    if seeds is not None:
        seeds = [int(s) for s in seeds]
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0, at least one, got {seeds}")
    params = {k: v for k, v in (params or {}).items() if k not in ("alpha", "output_dir")}
    # Before the first run: a misspelt name would silently train its default in every run of the sweep.
    check_notebook_parameters(TRAIN_NOTEBOOK, params)
    check_notebook_parameters(ANALYZE_NOTEBOOK, analysis_params or {})
    root = Path(output_root)
    runs = [(alpha, seed) for alpha in alphas for seed in (seeds or [None])]
    run_dirs = []
    for i, (alpha, seed) in enumerate(runs, 1):
        folder = run_folder(root, alpha, seed)
        run_params = {**params, "alpha": alpha, "output_dir": str(folder), **({} if seed is None else {"seed": seed})}
        started = time.time()
        print(f"[sweep] run {i}/{len(runs)}: alpha {alpha:g}, seed {run_params.get('seed', 'default')} "
              f"into {folder}", flush=True)
        run_notebook(TRAIN_NOTEBOOK, run_params)
        print(f"[sweep] run {i}/{len(runs)} done in {time.time() - started:.0f} s", flush=True)
        run_dirs.append(str(folder))
    analysis_dir = root / "analysis"
    if analyze:
        print(f"[sweep] analysing {len(run_dirs)} runs into {analysis_dir}", flush=True)
        # Several seeds per alpha: one run per alpha gets the per-run figures, every run is in the tables.
        defaults = {"per_run_figures": "first-per-alpha"} if seeds is not None and len(seeds) > 1 else {}
        run_notebook(ANALYZE_NOTEBOOK, {**defaults, **(analysis_params or {}), "run_dirs": run_dirs,
                                        "output_dir": str(analysis_dir)})
    return {"run_dirs": run_dirs, "analysis_dir": str(analysis_dir) if analyze else None}


def plan_root(plan: dict[str, Any]) -> Path:
    """Where a plan's runs go by default: runs/<plan name>."""
    return Path("runs") / plan["name"]


def plan_sweep(plan: dict[str, Any], output_root: str | Path | None = None, analyze: bool = True) -> dict[str, Any]:
    """A study plan from runs to answer: say its cost and detectable difference, then sweep its slopes x seeds with
    its parameters and hash, and analyse them against it. Finished runs are reused, so the same command continues."""
    root = Path(output_root) if output_root is not None else plan_root(plan)
    records = []
    for metrics in root.glob(f"alpha-*/seed-*/{run_files.METRICS}"):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(metrics.read_text()))
    for line in study_plan.cost_lines(plan, study_plan.measured_hours(plan, records)):
        print(f"[sweep] {line}", flush=True)
    params = {**plan["training"], "plan_hash": plan["hash"]}
    return sweep(plan["slopes"], params, root, {**plan["analysis"], "plan": plan}, analyze, seeds=plan["seeds"])


def sweep_cli(argv: list[str] | None = None) -> int:
    """Command line: python -m tools.sweep --plan PLAN.yaml | [--alphas A ...] [--seeds S ...] [-f PARAMS.yaml]
    [-p NAME VALUE ...]."""
    parser = argparse.ArgumentParser(prog="python -m tools.sweep", description=sweep_cli.__doc__)
    parser.add_argument("--plan", help="a study plan (e.g. params/study-demo.yaml): its slopes x seeds with its "
                                       "parameters, then the analysis that answers it; alone, or with --output-root "
                                       "(default runs/<plan name>) and --no-analysis")
    parser.add_argument("--alphas", nargs="+", type=float, default=None,
                        help=f"LeakyReLU slopes to train (default {' '.join(f'{a:g}' for a in DEFAULT_ALPHAS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="train every alpha once per seed (default: once, with the parameters' seed)")
    parser.add_argument("-f", "--parameters-file", help="YAML file of training parameters (e.g. params/cpu-demo.yaml)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one training parameter, overriding the file; repeatable (alpha and output_dir are set "
                             "by the sweep)")
    parser.add_argument("-a", "--analysis-parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one parameter of notebooks/analyze.ipynb (e.g. -a robustness_images 50); repeatable")
    parser.add_argument("--output-root", default=None,
                        help=f"folder of the run folders alpha-<a> and of analysis/ (default {SWEEP_ROOT}; with "
                             "--plan runs/<plan name>)")
    parser.add_argument("--no-analysis", action="store_true", help="train only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.plan:
        # The plan fixes every parameter: anything given beside it would make runs that differ from the plan.
        beside = [flag for flag, given in (("--alphas", args.alphas), ("--seeds", args.seeds),
                                           ("-f", args.parameters_file), ("-p", args.parameter),
                                           ("-a", args.analysis_parameter)) if given]
        if beside:
            parser.error(f"--plan fixes the slopes, seeds and parameters: drop {', '.join(beside)} (change the plan "
                         "file instead; a changed plan has a new hash)")
        try:
            result = plan_sweep(study_plan.load_plan(args.plan), args.output_root, analyze=not args.no_analysis)
        except (OSError, ValueError) as error:
            parser.error(str(error))
    else:
        params = load_params(args.parameters_file)
        params.update({name: parse_value(value) for name, value in args.parameter})
        analysis_params = {name: parse_value(value) for name, value in args.analysis_parameter}
        try:
            result = sweep(args.alphas or DEFAULT_ALPHAS, params, args.output_root or SWEEP_ROOT, analysis_params,
                           analyze=not args.no_analysis, seeds=args.seeds)
        except ValueError as error:
            parser.error(str(error))
    print(f"[sweep] runs: {' '.join(result['run_dirs'])}", flush=True)
    if result["analysis_dir"]:
        print(f"[sweep] analysis: {result['analysis_dir']}/analysis.json and analyze.html", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(sweep_cli())
