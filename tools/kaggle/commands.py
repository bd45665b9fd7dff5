"""Kaggle from a laptop: push / status / pull / sweep / analyze over the Kaggle CLI (kaggle>=2.2.5), and a rehearsal.

This module is the command line: its parser, one cmd_* per subcommand, and kaggle_cli, which `python -m tools.kaggle`
runs (errors: one line on stderr and a non-zero exit code, tools.kaggle.cli's):

    python -m tools.kaggle push NOTEBOOK [-p NAME VALUE ...] [-f PARAMS.yaml] [--slug SLUG] [--resume-from SLUG]
                                [--internet] [--accelerator gpu|tpu|cpu] [--cpu] [--wait] [--pull]
    python -m tools.kaggle sweep NOTEBOOK --alphas 0 0.01 0.1 0.2 0.3 [--slug PREFIX] [--sessions 2] [--analyze]
                                 [-a NAME VALUE ...] [--ignore-quota] [push options]
    python -m tools.kaggle sweep --plan params/study-alpha.yaml [--slug PREFIX] [--sessions 2] [--ignore-quota]
    python -m tools.kaggle analyze KERNEL [KERNEL ...] [-f PARAMS.yaml] [-p NAME VALUE ...] [--wait] [--pull]
    python -m tools.kaggle status SLUG[/VERSION] [--wait]
    python -m tools.kaggle pull SLUG[/VERSION]
    python -m tools.kaggle rehearse NOTEBOOK [-p NAME VALUE ...] [-f PARAMS.yaml] [--data FOLDER] [--resume-from DIR]
                                    [--accelerator gpu|tpu|cpu] [--replicas N]

--accelerator (push, sweep, analyze, rehearse): the machine asked for, GPU T4 x2 ("gpu"), TPU v5e-8 ("tpu") or none
("cpu"; --cpu is short for it); by default the one the root kernel-metadata.json's machine_shape names (none: gpu).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from tools.kaggle.analyze import push_analysis
from tools.kaggle.build import (
    SLUG_RE,
    TITLE_MAX,
    TITLE_MIN,
    build_kernel,
    check_offline,
    check_parameters,
    fit_title,
    resolve_accelerator,
    variant_title,
)
from tools.kaggle.calls import (
    POLL_FIRST,
    POLL_MAX,
    RESULTS_ROOT,
    WAIT_TIMEOUT,
    follow,
    kernel_ref,
    kernel_status,
    pull,
    push_folder,
    report_status,
    wait_for,
)
from tools.kaggle.cli import KaggleError, connect
from tools.kaggle.rehearsal import rehearse
from tools.kaggle.sweep import (
    MAX_SESSIONS,
    accelerator_quota,
    check_quota,
    measured_epoch_seconds,
    pulled_records,
    run_sweep,
    sweep_state,
)
from tools.notebook import ANALYZE_NOTEBOOK, TRAIN_NOTEBOOK
from utils import study_plan
from utils.accelerator import ACCELERATORS, MACHINE_DEVICES, MACHINE_SHAPES
from utils.runtime import REPO_ROOT

ANALYZE_PARAMS = REPO_ROOT / "params" / "analyze-kaggle.yaml"  # the analysis preset of `analyze` and `sweep --analyze`


def _params(path: str | os.PathLike | None, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Parameters from a YAML file then NAME VALUE pairs (papermill's precedence), as tools.notebook reads them."""
    from tools.notebook import load_params, parse_value

    try:
        params = load_params(path)
    except (OSError, ValueError) as exc:
        raise KaggleError(str(exc)) from None
    params.update({name: parse_value(value) for name, value in pairs})
    return params


def _check_notebook(path: str | None) -> Path:
    """The notebook path, which must be given and exist."""
    if not path:
        raise KaggleError("name the notebook to run (e.g. notebooks/train.ipynb)")
    notebook = Path(path)
    if not notebook.is_file():
        raise KaggleError(f"notebook {notebook} does not exist")
    return notebook


def _check_slug(slug: str | None, option: str = "--slug") -> None:
    """A --slug must be a slug Kaggle accepts."""
    if slug and not (SLUG_RE.fullmatch(slug) and TITLE_MIN <= len(slug) <= TITLE_MAX):
        raise KaggleError(f"{option} {slug!r} must be {TITLE_MIN} to {TITLE_MAX} lowercase letters, digits and "
                          "single hyphens")


def _title(args: argparse.Namespace, notebook: Path, params: dict[str, Any]) -> str:
    """The kernel title: --slug spelled as words, else the notebook and its variant."""
    _check_slug(args.slug)
    if args.slug:
        return args.slug.replace("-", " ")
    return variant_title(notebook, args.parameters_file, args.parameter, params)


def _accelerator(args: argparse.Namespace) -> str:
    """The accelerator of the command (--accelerator or --cpu, else the root kernel-metadata.json's machine_shape),
    kept in args for what follows; a machine_shape this tool does not know stops here, before any build."""
    args.accelerator = resolve_accelerator(args.accelerator)
    return args.accelerator


def cmd_push(args: argparse.Namespace) -> int:
    """push: build, validate and push one kernel, then optionally wait and pull."""
    notebook = _check_notebook(args.notebook)
    params = _params(args.parameters_file, args.parameter)
    title = _title(args, notebook, params)
    accelerator = _accelerator(args)
    check_parameters(notebook, params)  # before credentials: a typo needs no account to be reported
    check_offline(notebook, params, args.internet)
    api, user = connect()
    resume = kernel_ref(args.resume_from, user) if args.resume_from else None
    folder = build_kernel(notebook, params, user, title, private=not args.public, build_root=args.build_dir,
                          internet=args.internet, accelerator=accelerator, resume_from=resume)
    print(f"built {folder}" + (f", attaching the output of {resume} to continue it" if resume else ""), flush=True)
    ref = push_folder(api, folder)
    return follow(api, ref, args)


def _sweep_plan(args: argparse.Namespace) -> dict[str, Any]:
    """The --plan of a sweep, loaded and hashed; nothing given beside it that would change its runs."""
    beside = [flag for flag, given in (("--alphas", args.alphas), ("-f", args.parameters_file), ("-p", args.parameter),
                                       ("-a", args.analysis_parameter),
                                       ("--analysis-parameters-file", args.analysis_parameters_file)) if given]
    if beside:
        raise KaggleError(f"--plan fixes the slopes, seeds and parameters: drop {', '.join(beside)} (change the plan "
                          "file instead; a changed plan has a new hash)")
    try:
        return study_plan.load_plan(args.plan)
    except (OSError, ValueError) as exc:
        raise KaggleError(str(exc)) from None


def cmd_sweep(args: argparse.Namespace) -> int:
    """sweep: one kernel per alpha (a plan: per slope and seed), all built and validated first, at most --sessions
    running, each pulled; with --analyze or a plan, then the analysis on Kaggle."""
    plan = _sweep_plan(args) if args.plan else None
    notebook = _check_notebook(args.notebook or (str(TRAIN_NOTEBOOK) if plan else None))
    if plan:
        base = {**plan["training"], "plan_hash": plan["hash"]}
        runs = [(f"{alpha:g}", seed) for alpha in plan["slopes"] for seed in plan["seeds"]]
    else:
        if not args.alphas:
            raise KaggleError("give the slopes with --alphas, or a study plan with --plan")
        if any(name == "alpha" for name, _ in args.parameter):
            raise KaggleError("give alphas with --alphas, not -p alpha")
        for text in args.alphas:
            try:
                float(text)
            except ValueError:
                raise KaggleError(f"--alphas takes numbers, got {text!r}") from None
        base = _params(args.parameters_file, args.parameter)
        runs = [(text, None) for text in args.alphas]
    _check_slug(args.slug)
    if args.sessions < 1:
        raise KaggleError(f"--sessions must be at least 1, got {args.sessions}")
    accelerator = _accelerator(args)
    check_parameters(notebook, {**base, "alpha": 0.0})
    check_offline(notebook, base, args.internet)
    api, user = connect()
    prefix = args.slug or (plan["name"] if plan else None)
    variants = []
    for text, seed in runs:
        params = {**base, "alpha": float(text), **({} if seed is None else {"seed": seed})}
        if prefix:
            words = [prefix.replace("-", " "), f"alpha {text}", *([] if seed is None else [f"seed {seed}"])]
            title = fit_title(words, {"slug": prefix, "params": params})
        else:
            title = variant_title(notebook, args.parameters_file, [*args.parameter, ("alpha", text)], params)

        def build(resume: str | None, params: dict[str, Any] = params, title: str = title) -> Path:
            return build_kernel(notebook, params, user, title, private=not args.public, build_root=args.build_dir,
                                internet=args.internet, accelerator=accelerator, resume_from=resume)

        variants.append({"slug": build(None).name, "build": build})
    slugs = [v["slug"] for v in variants]
    if len(set(slugs)) != len(slugs):
        raise KaggleError(f"--alphas {args.alphas} give the same kernel slug twice ({slugs}): list each alpha once")
    # A bad analysis parameter stops here, before any push.
    if plan:
        analysis = {**plan["analysis"], "plan": plan}
        check_parameters(ANALYZE_NOTEBOOK, {**analysis, "run_dirs": slugs})
    else:
        analysis = _analysis_params(args.analysis_parameters_file, args.analysis_parameter) if args.analyze else None
    results = Path(args.results_dir or RESULTS_ROOT)
    # Kaggle's state of each variant, read once: the quota check counts exactly what run_sweep is left to run.
    queue, running, done = sweep_state(api, user, variants, results)
    # The weekly quota of the sweep's pool (GPU and TPU hours are separate; a CPU sweep spends none), read once.
    pushing = len(done) < len(variants) and accelerator != "cpu"
    quota = accelerator_quota(api, accelerator) if pushing else None
    if plan:  # what the plan costs and can detect, before anything is pushed (hours measured on this accelerator)
        measured = study_plan.measured_hours(plan, list(pulled_records(results, slugs, accelerator).values()))
        for line in study_plan.cost_lines(plan, measured, accelerator, quota[1] if quota else None):
            print(line, flush=True)
    if pushing:
        # A plan is meant to span quota weeks: what does not fit is refused by Kaggle and pushed by the next run.
        check_quota(quota, base, len(variants) - len(done), measured_epoch_seconds(results, slugs, accelerator),
                    args.ignore_quota or bool(plan), accelerator)
    if plan and len(done) < len(variants):
        print("a plan continues across quota weeks: when Kaggle refuses a push for the quota, run the same command "
              "next week; finished runs are not pushed again", flush=True)
    code = run_sweep(api, variants, queue, running, done, args)
    if analysis is None or code:
        return code
    if plan:  # the analysis would refuse them on Kaggle: say so here, before a session is spent on it
        records = pulled_records(results, slugs)
        try:
            study_plan.check_runs(plan, {slug: record.get("params", {}) for slug, record in records.items()})
            study_plan.check_same_protocol({slug: record.get("training") for slug, record in records.items()})
        except ValueError as exc:
            raise KaggleError(f"the analysis refuses the sweep's runs: {exc}") from None
    print(f"analysing the sweep's {len(slugs)} runs on Kaggle", flush=True)
    slug = f"{prefix}-analysis" if plan else None
    return push_analysis(api, user, slugs, analysis, argparse.Namespace(**{**vars(args), "wait": True, "pull": True,
                                                                           "slug": slug}))


def _analysis_params(path: str | None, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """The analysis notebook's parameters: the Kaggle preset (or the file given), then each NAME VALUE pair."""
    params = _params(path or ANALYZE_PARAMS, pairs)
    if "run_dirs" in params and params.pop("run_dirs") not in (None, []):
        raise KaggleError("the analysis' run_dirs are the kernels it is given: name them, not -a run_dirs")
    check_parameters(ANALYZE_NOTEBOOK, params)
    return params


def cmd_analyze(args: argparse.Namespace) -> int:
    """analyze: push notebooks/analyze.ipynb with the given training kernels' outputs attached; it runs there."""
    params = _analysis_params(args.parameters_file, args.parameter)
    _check_slug(args.slug)
    _accelerator(args)
    api, user = connect()
    return push_analysis(api, user, args.kernels, params, args)


def cmd_status(args: argparse.Namespace) -> int:
    """status: the state of a kernel's latest version (or OWNER/SLUG/VERSION); with --wait, poll until it ends."""
    api, user = connect()
    ref = kernel_ref(args.slug, user)
    if args.wait:
        state, message = wait_for(api, ref, args.poll, args.poll_max, args.timeout)
    else:
        state, message = kernel_status(api, ref)
    return report_status(api, ref, state, message)


def cmd_pull(args: argparse.Namespace) -> int:
    """pull: outputs into results/<slug>/ and its HTML report there."""
    api, user = connect()
    pull(api, kernel_ref(args.slug, user), args.results_dir)
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    """rehearse: build the kernel push would send and run it here in a simulated /kaggle (the accelerator's devices
    as CPU devices: 2 for T4 x2, 8 for a TPU v5e-8)."""
    notebook = _check_notebook(args.notebook)
    params = _params(args.parameters_file, args.parameter)
    title = _title(args, notebook, params)
    accelerator = _accelerator(args)
    check_parameters(notebook, params)
    code, _ = rehearse(notebook, params, title, args.data, args.resume_from, accelerator, args.internet,
                       args.rehearsal_dir, devices=args.replicas)
    return code


def kaggle_parser() -> argparse.ArgumentParser:
    """The command line of python -m tools.kaggle."""
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--wait", action="store_true", help="poll the status until the run ends")
    waiting.add_argument("--poll", type=float, default=POLL_FIRST, help="first poll interval in s (doubles)")
    waiting.add_argument("--poll-max", type=float, default=POLL_MAX, help="longest poll interval in s")
    waiting.add_argument("--timeout", type=float, default=WAIT_TIMEOUT, help="give up waiting after this many s")
    waiting.add_argument("--results-dir", type=Path, default=None, help="where pull writes <slug>/ (default results/)")

    building = argparse.ArgumentParser(add_help=False)
    building.add_argument("notebook", nargs="?", default=None,
                          help="notebook to run on Kaggle, e.g. notebooks/train.ipynb (sweep --plan: train.ipynb)")
    building.add_argument("-f", "--parameters-file", help="YAML file of parameters")
    building.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                          help="one parameter, overriding the file; repeatable")
    building.add_argument("--internet", action="store_true",
                          help="switch the kernel's internet on (needed for weights=imagenet; default off)")
    accelerator = argparse.ArgumentParser(add_help=False)
    machines = accelerator.add_mutually_exclusive_group()
    shapes = ", ".join(f"{name} {shape}" for name, shape in MACHINE_SHAPES.items())
    machines.add_argument("--accelerator", choices=ACCELERATORS, default=None,
                          help=f"the machine to ask Kaggle for ({shapes}, cpu none; default: the root "
                               "kernel-metadata.json's machine_shape, else gpu); a kernel that does not get it stops "
                               "at once")
    machines.add_argument("--cpu", dest="accelerator", action="store_const", const="cpu",
                          help="short for --accelerator cpu: run without an accelerator, on purpose")

    sending = argparse.ArgumentParser(add_help=False, parents=[waiting, accelerator])
    sending.add_argument("--public", action="store_true", help="make the kernel public (default: private)")
    sending.add_argument("--pull", action="store_true", help="wait for the run, then pull its outputs")
    sending.add_argument("--build-dir", type=Path, default=None, help="where builds go (default build/kaggle/)")
    pushing = argparse.ArgumentParser(add_help=False, parents=[sending, building])

    main_parser = argparse.ArgumentParser(prog="python -m tools.kaggle", description=__doc__.splitlines()[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", parents=[pushing], help=cmd_push.__doc__)
    push.add_argument("--slug", help="kernel slug (default: notebook stem + parameters, e.g. train-alpha-0-1)")
    push.add_argument("--resume-from", metavar="SLUG",
                      help="attach this kernel's output (SLUG, OWNER/SLUG[/VERSION]) and continue its run from it")
    push.set_defaults(func=cmd_push)
    sweep = commands.add_parser("sweep", parents=[pushing], help=cmd_sweep.__doc__)
    sweep.add_argument("--plan", metavar="YAML",
                       help="a study plan (e.g. params/study-alpha.yaml): one kernel per slope and seed with its "
                            "parameters and hash, its cost said before any push, then its analysis pulled")
    sweep.add_argument("--alphas", nargs="+", help="LeakyReLU negative slopes, one kernel each")
    sweep.add_argument("--slug", help="slug prefix of the sweep's kernels (default: notebook stem + parameters)")
    sweep.add_argument("--sessions", type=int, default=MAX_SESSIONS,
                       help=f"kernels running at once (Kaggle allows {MAX_SESSIONS} GPU sessions)")
    sweep.add_argument("--ignore-quota", action="store_true",
                       help="start even when the hours the sweep expects exceed the weekly quota left in its "
                            "accelerator's pool (GPU or TPU)")
    sweep.add_argument("--analyze", action="store_true",
                       help="once every run finished, push notebooks/analyze.ipynb over them and pull its report")
    sweep.add_argument("--analysis-parameters-file", metavar="YAML",
                       help=f"parameters of the analysis (default {ANALYZE_PARAMS.relative_to(REPO_ROOT)})")
    sweep.add_argument("-a", "--analysis-parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                       help="one parameter of the analysis, overriding the file; repeatable")
    sweep.set_defaults(func=cmd_sweep)
    analyze = commands.add_parser("analyze", parents=[sending], help=cmd_analyze.__doc__)
    analyze.add_argument("kernels", nargs="+", metavar="KERNEL",
                         help="training kernels to compare (SLUG, OWNER/SLUG or OWNER/SLUG/VERSION)")
    analyze.add_argument("-f", "--parameters-file", metavar="YAML",
                         help=f"parameters of notebooks/analyze.ipynb (default {ANALYZE_PARAMS.relative_to(REPO_ROOT)})")
    analyze.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                         help="one parameter, overriding the file; repeatable")
    analyze.add_argument("--internet", action="store_true", help="switch the kernel's internet on (default off)")
    analyze.add_argument("--slug", help="kernel slug (default: the kernels' shared name + analysis)")
    analyze.set_defaults(func=cmd_analyze)
    status = commands.add_parser("status", parents=[waiting], help=cmd_status.__doc__)
    status.add_argument("slug", help="SLUG, OWNER/SLUG or OWNER/SLUG/VERSION")
    status.set_defaults(func=cmd_status)
    pulling = commands.add_parser("pull", help=cmd_pull.__doc__)
    pulling.add_argument("slug", help="SLUG, OWNER/SLUG or OWNER/SLUG/VERSION")
    pulling.add_argument("--results-dir", type=Path, default=None, help="where <slug>/ goes (default results/)")
    pulling.set_defaults(func=cmd_pull)
    rehearsal = commands.add_parser("rehearse", parents=[building, accelerator], help=cmd_rehearse.__doc__)
    rehearsal.add_argument("--slug", help="kernel slug (default: as push names it)")
    rehearsal.add_argument("--data", type=Path, default=None,
                           help="dataset folder to attach (default: the embedded synthetic one, in the 140k layout)")
    rehearsal.add_argument("--resume-from", type=Path, default=None,
                           help="an earlier rehearsal's output/ (or a pulled run) to attach read-only and continue")
    rehearsal.add_argument("--replicas", type=int, default=None, metavar="N",
                           help="CPU devices standing for the accelerator's (default: gpu "
                                f"{MACHINE_DEVICES['gpu']}, tpu {MACHINE_DEVICES['tpu']}; at least 2; the "
                                "single-device path is --cpu)")
    rehearsal.add_argument("--rehearsal-dir", type=Path, default=None,
                           help="where the simulated /kaggle folders go (default build/kaggle-rehearsal/)")
    rehearsal.set_defaults(func=cmd_rehearse)
    return main_parser


def kaggle_cli(argv: list[str] | None = None) -> int:
    """Command line: push / sweep / analyze / status / pull / rehearse; errors: one line on stderr, a non-zero exit."""
    args = kaggle_parser().parse_args(argv)
    try:
        return args.func(args)
    except KaggleError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

