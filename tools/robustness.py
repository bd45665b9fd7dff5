"""Robustness study: train each dataset under each condition and seed, analyse each dataset, then compare conditions.

Conditions (CONDITIONS): "resize" (the study's protocol), "degraded" (the same plus Wang et al.'s train-time blur and
JPEG, each with probability 0.5) and "crop" (random crops at the image's own scale instead of resizing). Runs go to
<root>/<dataset>/<condition>/seed-<s>; analyze.ipynb scores every run of a dataset under the same quality grid into
<root>/<dataset>/analysis; robustness.ipynb overlays the conditions into <root>/report.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from tools.notebook import ANALYZE_NOTEBOOK, ROBUSTNESS_NOTEBOOK, TRAIN_NOTEBOOK, load_params, parse_value, run_notebook

STUDY_ROOT = "runs/robustness"  # the committed study: --output-root results/robustness
DEFAULT_SEEDS = (42, 43, 44)
# Wang et al. (CVPR 2020), "Blur+JPEG (0.5)": the augmentation their detector owes its robustness to.
WANG_DEGRADATIONS = {"blur_prob": 0.5, "blur_sigma": [0.0, 3.0], "jpeg_prob": 0.5, "jpeg_quality": [30, 100]}
CONDITIONS: dict[str, dict[str, Any]] = {
    "resize": {"resize_mode": "resize"},
    "degraded": {"resize_mode": "resize", **WANG_DEGRADATIONS},
    "crop": {"resize_mode": "crop"},
}
DEFAULT_DATASET = "synthetic-default"  # the embedded default (data_dir None), always in the study
SIZE_SAMPLE = 32  # image headers read to decide whether a dataset is larger than the training size


def images_larger_than(data_dir: str | None, image_size: int) -> bool:
    """Whether a sample of the dataset's images has a shorter side above image_size (else crop equals resize)."""
    from PIL import Image

    from utils import data

    index = data.index_dataset(data_dir, max_images=SIZE_SAMPLE)
    for path in index.pooled().paths[:SIZE_SAMPLE]:
        with Image.open(path) as image:  # reads the header only
            if min(image.size) > image_size:
                return True
    return False


def study_plan(datasets: dict[str, str | None], params: dict[str, Any], seeds: Sequence[int],
               root: str | Path, conditions: Sequence[str] = tuple(CONDITIONS)) -> list[dict[str, Any]]:
    """One entry per training run: dataset, condition, seed, folder and its parameters.

    "crop" is left out for a dataset whose images are no larger than image_size: cutting a window of the image's
    own size is resizing, so the run would repeat "resize" under another name.
    """
    unknown = set(conditions) - set(CONDITIONS)
    if unknown or not conditions:
        raise ValueError(f"conditions must name some of {', '.join(CONDITIONS)}, got {list(conditions)}")
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"seeds must be distinct integers >= 0, at least one, got {seeds}")
    base = {k: v for k, v in params.items() if k not in ("data_dir", "output_dir", "seed")}
    plan = []
    for dataset, data_dir in datasets.items():
        kept = [c for c in conditions
                if c != "crop" or images_larger_than(data_dir, int(base.get("image_size", 224)))]
        for condition in kept:
            for seed in seeds:
                folder = Path(root) / dataset / condition / f"seed-{seed}"
                plan.append({"dataset": dataset, "condition": condition, "seed": seed, "folder": folder,
                             "params": {**base, **CONDITIONS[condition], "data_dir": data_dir, "seed": seed,
                                        "output_dir": str(folder)}})
    return plan


def run_study(datasets: dict[str, str | None], params: dict[str, Any], root: str | Path = STUDY_ROOT,
              seeds: Sequence[int] = DEFAULT_SEEDS, conditions: Sequence[str] = tuple(CONDITIONS),
              extra_data_dirs: dict[str, list[str]] | None = None,
              analysis_params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the plan (finished runs are reused by the training notebook), analyse each dataset, render the report."""
    root = Path(root)
    plan = study_plan(datasets, params, seeds, root, conditions)
    for i, run in enumerate(plan, 1):
        started = time.time()
        print(f"[robustness] run {i}/{len(plan)}: {run['dataset']}, {run['condition']}, seed {run['seed']} "
              f"into {run['folder']}", flush=True)
        run_notebook(TRAIN_NOTEBOOK, run["params"])
        print(f"[robustness] run {i}/{len(plan)} done in {time.time() - started:.0f} s", flush=True)
    analysis_dirs = []
    for dataset in datasets:
        run_dirs = [str(r["folder"]) for r in plan if r["dataset"] == dataset]
        folder = root / dataset / "analysis"
        print(f"[robustness] analysing {len(run_dirs)} runs of {dataset} into {folder}", flush=True)
        run_notebook(ANALYZE_NOTEBOOK, {"per_run_figures": "none", **(analysis_params or {}), "run_dirs": run_dirs,
                                        "extra_data_dirs": (extra_data_dirs or {}).get(dataset, []),
                                        "output_dir": str(folder)})
        analysis_dirs.append(str(folder))
    report_dir = root / "report"
    run_notebook(ROBUSTNESS_NOTEBOOK, {"analysis_dirs": analysis_dirs, "baseline_condition": "resize",
                                   "output_dir": str(report_dir)})
    return {"run_dirs": [str(r["folder"]) for r in plan], "analysis_dirs": analysis_dirs,
            "report_dir": str(report_dir)}


def robustness_cli(argv: list[str] | None = None) -> int:
    """Command line: python -m tools.robustness [--faces DIR] [--seeds S ...] [-f PARAMS.yaml] [-p NAME VALUE ...]."""
    parser = argparse.ArgumentParser(prog="python -m tools.robustness", description=robustness_cli.__doc__)
    parser.add_argument("--faces", action="append", default=[], metavar="DIR",
                        help="a folder of real and fake faces (any layout the loader knows) studied beside the "
                             "embedded default; repeatable; the folder's name names it in the report")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(DEFAULT_SEEDS),
                        help=f"seeds, the same for every condition (default {' '.join(map(str, DEFAULT_SEEDS))})")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS),
                        help=f"conditions to train (default {' '.join(CONDITIONS)})")
    parser.add_argument("-f", "--parameters-file", help="YAML file of training parameters (e.g. params/cpu-demo.yaml)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one training parameter, overriding the file; repeatable")
    parser.add_argument("-a", "--analysis-parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one parameter of notebooks/analyze.ipynb (e.g. -a robustness_images 50); repeatable")
    parser.add_argument("--output-root", default=STUDY_ROOT, help=f"study folder (default {STUDY_ROOT})")
    args = parser.parse_args(argv)
    params = load_params(args.parameters_file)
    params.update({name: parse_value(value) for name, value in args.parameter})
    datasets: dict[str, str | None] = {DEFAULT_DATASET: None}
    for folder in args.faces:
        path = Path(folder).expanduser()
        if not path.is_dir():
            parser.error(f"--faces {folder}: no such folder (expected a dataset of real and fake face images)")
        name = path.resolve().name
        if name in datasets:
            parser.error(f"--faces {folder}: another dataset is already named {name!r}")
        datasets[name] = str(path.resolve())
    # The default's classes come from one generator family: its unseen generators test cross-generator transfer.
    extra = {DEFAULT_DATASET: ["synthetic:nearest", "synthetic:bilinear"]}
    try:
        result = run_study(datasets, params, args.output_root, args.seeds, args.conditions, extra,
                           {name: parse_value(value) for name, value in args.analysis_parameter})
    except ValueError as error:
        parser.error(str(error))
    print(f"[robustness] report: {result['report_dir']}/robustness.html", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(robustness_cli())
