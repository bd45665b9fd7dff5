"""Notebook runs: execute a notebook with papermill into its output folder, render the HTML report, write records."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent


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


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a file through a temporary sibling and a rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode) as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_jsonable(value: Any) -> Any:
    """Numpy scalars/arrays, paths and missing values made JSON-ready (NaN, inf and pd.NA become None)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, float) and not np.isfinite(value):
        return None  # json.dumps would write NaN/Infinity, which strict JSON readers reject
    if type(value).__name__ == "NAType":  # pandas' missing value, without importing pandas here
        return None
    return value


def write_json(path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write a JSON record atomically, made JSON-ready by to_jsonable (other objects as their str)."""
    return write_atomic(path, json.dumps(to_jsonable(record), indent=2, default=str) + "\n")


def render_html(ipynb: str | os.PathLike, html: str | os.PathLike | None = None) -> Path:
    """Render an executed notebook to a standalone HTML report beside it (or at `html`)."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb = Path(ipynb)
    html = Path(html) if html else ipynb.with_suffix(".html")
    body, _ = HTMLExporter().from_notebook_node(nbformat.read(ipynb, as_version=4))
    return write_atomic(html, body)


def run_notebook(notebook: str | os.PathLike, params: dict[str, Any], kernel: str = "python3") -> Path:
    """Execute `notebook` with papermill into params['output_dir'], then render it to HTML there."""
    import papermill

    from utils.kaggle import resolve_output_dir

    notebook = Path(notebook)
    if "output_dir" not in params:
        raise ValueError("parameter output_dir is required: the folder that receives the report and its outputs")
    output_dir = resolve_output_dir(str(params["output_dir"]))
    output_dir.mkdir(parents=True, exist_ok=True)
    executed = output_dir / notebook.name
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, kernel_name=kernel,
            cwd=str(REPO_ROOT), log_output=True, progress_bar=False,
        )
    finally:
        # A failed run is rendered too: the report then shows the cell that raised.
        if executed.exists():
            report = render_html(executed)
            print(f"report: {report}", flush=True)
    return executed


def main(argv: list[str] | None = None) -> int:
    """Command line: python -m utils.notebook NOTEBOOK [-f PARAMS.yaml] [-p NAME VALUE ...]."""
    parser = argparse.ArgumentParser(prog="python -m utils.notebook", description=main.__doc__)
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
    sys.exit(main())
