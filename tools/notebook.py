"""Notebook runs: execute a notebook with papermill into its output folder, then render its HTML report there."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from utils.report import render_html
from utils.runtime import REPO_ROOT, resolve_output_dir, set_quiet_log_env

# The study's notebooks, for the commands that run them (sweep, robustness study, Kaggle).
NOTEBOOKS = REPO_ROOT / "notebooks"
TRAIN_NOTEBOOK = NOTEBOOKS / "train.ipynb"
ANALYZE_NOTEBOOK = NOTEBOOKS / "analyze.ipynb"
ROBUSTNESS_NOTEBOOK = NOTEBOOKS / "robustness.ipynb"


def parse_value(text: str) -> Any:
    """Read a command-line parameter value the way papermill's `-p` does (numbers, bools, None, lists)."""
    if text in ("None", "none", "null"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_params(path: str | os.PathLike | None) -> dict[str, Any]:
    """Parameters from a YAML file (papermill's `-f`), an empty dict for None."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"parameter file {path} does not exist")
    params = yaml.safe_load(path.read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"parameter file {path} must hold a mapping of name: value, found {type(params).__name__}")
    return params


def run_notebook(notebook: str | os.PathLike, params: dict[str, Any], kernel: str = "python3") -> Path:
    """Execute `notebook` with papermill into params['output_dir'], then render it to HTML there."""
    import papermill

    set_quiet_log_env()  # the kernel inherits this environment
    notebook = Path(notebook)
    if "output_dir" not in params:
        raise ValueError("parameter output_dir is required: the folder that receives the report and its outputs")
    output_dir = resolve_output_dir(str(params["output_dir"]))
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / notebook.name
    # Executed beside the report, moved into place when done: a run refused or failing in a folder that already
    # holds a report (a finished run, or one to resume) must not overwrite that report with its own.
    attempt = output_dir / f"{notebook.stem}.running.ipynb"
    finished = False
    try:
        papermill.execute_notebook(
            str(notebook), str(attempt), parameters=params, kernel_name=kernel,
            cwd=str(REPO_ROOT), log_output=True, progress_bar=False,
        )
        finished = True
    finally:
        # A failed run is rendered too: the report then shows the cell that raised.
        if attempt.exists():
            target = executed if finished or not executed.exists() else output_dir / f"{notebook.stem}-failed.ipynb"
            os.replace(attempt, target)
            report = render_html(target)
            print(f"report: {report}", flush=True)
    return executed


def notebook_cli(argv: list[str] | None = None) -> int:
    """Command line: python -m tools.notebook NOTEBOOK [-f PARAMS.yaml] [-p NAME VALUE ...]."""
    parser = argparse.ArgumentParser(prog="python -m tools.notebook", description=notebook_cli.__doc__)
    parser.add_argument("notebook", help="notebook to execute, e.g. notebooks/train.ipynb")
    parser.add_argument("-f", "--parameters-file", help="YAML file of parameters (e.g. params/cpu-demo.yaml)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="one parameter, overriding the file; repeatable")
    args = parser.parse_args(argv)
    # papermill reports cell output through logging; show it as the run goes.
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = load_params(args.parameters_file)
    params.update({name: parse_value(value) for name, value in args.parameter})
    run_notebook(args.notebook, params)
    return 0


if __name__ == "__main__":
    sys.exit(notebook_cli())
