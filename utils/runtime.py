"""The kernel's runtime: am I on Kaggle, its input and working folders, where outputs go, quiet logs, atomic records.

The bottom of the import graph: every other module may import it, it imports none of them.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

KAGGLE_WORKING = Path("/kaggle/working")
KAGGLE_INPUT = Path("/kaggle/input")
# Kaggle's papermill writes the executed notebook here after every cell; it is gone once the run ends, so the
# output listing never holds it (a kernel that wants its report must render it before it ends).
EXECUTED_NOTEBOOK = "__notebook__.ipynb"
# Kaggle stops a GPU session after 12 h; some 2026 quota notices say 9 h. Plans assume the lower one, so a run
# never dies unsaved (the train notebook's time budget; the GPU hours a sweep reports it still needs).
KAGGLE_SESSION_HOURS = 9.0
# Set by the rehearsal (python -m tools.kaggle rehearse): the train notebook splits the CPU into this many logical
# devices and trains with MirroredStrategy and mixed_float16 over them, the path two T4 GPUs take.
REHEARSAL_REPLICAS_ENV = "KAGGLE_REHEARSAL_REPLICAS"
REPO_ROOT = Path(__file__).resolve().parent.parent

# TensorFlow's C++ logging (oneDNN notices, cudart/cuInit probes on a CPU machine, absl's pre-init warning) goes
# to the process' stderr and lands in reports as red blocks. 3 keeps only FATAL; Python-level warnings and errors
# (the ones that matter to the user) are not affected.
QUIET_LOG_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}


def on_kaggle() -> bool:
    """True inside a Kaggle kernel (its runtime sets KAGGLE_KERNEL_RUN_TYPE)."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ


def input_root() -> Path:
    """Where attached datasets appear: /kaggle/input, or $KAGGLE_INPUT_ROOT in a rehearsal."""
    return Path(os.environ.get("KAGGLE_INPUT_ROOT", KAGGLE_INPUT))


def working_root() -> Path:
    """The folder Kaggle returns as the run's output: /kaggle/working, or $KAGGLE_WORKING_ROOT in a rehearsal."""
    return Path(os.environ.get("KAGGLE_WORKING_ROOT", KAGGLE_WORKING))


def resolve_output_dir(output_dir: str | os.PathLike) -> Path:
    """Relative output folders land under the working folder on Kaggle, so the run's output listing returns them."""
    path = Path(output_dir)
    if on_kaggle() and not path.is_absolute():
        path = working_root() / path
    return path


def executed_notebook() -> Path | None:
    """This run's executed notebook as Kaggle saves it while the run goes, None off Kaggle or when it is absent."""
    path = working_root() / EXECUTED_NOTEBOOK
    return path if on_kaggle() and path.is_file() else None


def set_quiet_log_env() -> None:
    """Ask TensorFlow for FATAL-only C++ logging in this process and the kernels it starts (a user's value wins)."""
    for name, value in QUIET_LOG_ENV.items():
        os.environ.setdefault(name, value)


def quiet_logs() -> None:
    """Load TensorFlow without its C++ start-up lines in the notebook; call in a notebook's first code cell.

    The log level alone does not silence the lines printed while the library loads (absl's pre-init warning, the
    cudart stub), so the process' stderr is parked in a temporary file for the import and shown only if it fails.
    """
    set_quiet_log_env()
    if "tensorflow" not in sys.modules:
        _import_tensorflow_quietly()
    # Under Jupyter TensorFlow's Python logger runs at INFO: MirroredStrategy would print its reduce plan per step.
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with the process' stderr parked; shown only if the import fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as parked:
        os.dup2(parked.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            parked.seek(0)
            sys.stderr.write(parked.read().decode("utf-8", "replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


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
