"""Notebook runs: execute a notebook with papermill into its output folder, then render its HTML report there."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from utils.notebook_start import EXECUTED_NOTEBOOK_ENV, OUTPUT_ECHOED_ENV, cell_parameters, check_parameter_names
from utils.report import render_html
from utils.runtime import (  # noqa: F401 -- the notebooks' paths, for the commands that run them
    ANALYZE_NOTEBOOK,
    NOTEBOOKS,
    ROBUSTNESS_NOTEBOOK,
    TRAIN_NOTEBOOK,
    resolve_output_dir,
    set_quiet_log_env,
)


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


def notebook_defaults(notebook: str | os.PathLike) -> dict[str, Any] | None:
    """The names a notebook's `parameters` cell assigns and their literal defaults (None for a non-literal value);
    None when it has no such cell."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        return None
    defaults: dict[str, Any] = {}
    for cell in cells:
        try:
            defaults.update(cell_parameters(cell.source))
        except SyntaxError as exc:
            raise ValueError(f"{notebook}: the parameters cell is not plain Python: {exc}") from None
    return defaults


def check_notebook_parameters(notebook: str | os.PathLike, params: dict[str, Any]) -> None:
    """Raise a ValueError when `params` names a parameter the notebook's `parameters` cell does not assign."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise ValueError(f"notebook {notebook} does not exist")
    declared = notebook_defaults(notebook)
    if params and declared is None:
        raise ValueError(f"{notebook} has no cell tagged 'parameters', so {sorted(params)} cannot be injected")
    check_parameter_names(params, declared or {}, notebook.name)


def run_notebook(notebook: str | os.PathLike, params: dict[str, Any], kernel: str = "python3") -> Path:
    """Execute `notebook` with papermill into params['output_dir'], then render it to HTML there."""
    import papermill

    set_quiet_log_env()  # the kernel inherits this environment
    notebook = Path(notebook)
    check_notebook_parameters(notebook, params)  # before a kernel starts: a misspelt name stops in a second
    if "output_dir" not in params:
        raise ValueError("parameter output_dir is required: the folder that receives the report and its outputs")
    output_dir = resolve_output_dir(str(params["output_dir"]))
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / notebook.name
    # Executed beside the report, moved into place when done: a run refused or failing in a folder that already
    # holds a report (a finished run, or one to resume) must not overwrite that report with its own.
    attempt = output_dir / f"{notebook.stem}.running.ipynb"
    finished = False
    # For this kernel only: it renders its report from `attempt` in its last cell, and log_output below already
    # shows its output on this terminal.
    kernel_env = {EXECUTED_NOTEBOOK_ENV: str(attempt), OUTPUT_ECHOED_ENV: "1"}
    previous = {name: os.environ.get(name) for name in kernel_env}
    os.environ.update(kernel_env)
    try:
        # Started in the notebook's folder, as Jupyter and the papermill command from notebooks/ start it.
        papermill.execute_notebook(
            str(notebook), str(attempt), parameters=params, kernel_name=kernel,
            cwd=str(notebook.resolve().parent), log_output=True, progress_bar=False,
        )
        finished = True
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        # Rendered again once papermill has written the last cell (the kernel rendered all but it); a failed run is
        # rendered too: the report then shows the cell that raised.
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
    try:
        run_notebook(args.notebook, params)
    except ValueError as error:  # raised before a kernel starts: a misspelt parameter, no output_dir
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(notebook_cli())
