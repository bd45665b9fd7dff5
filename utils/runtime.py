"""The kernel's runtime: am I on Kaggle, its input and working folders (what is attached, in either mount layout),
the push's build record, where outputs go, quiet logs, atomic records.

The bottom of the import graph: every other module may import it, it imports none of them but run_files (names).
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

from utils import run_files

KAGGLE_WORKING = Path("/kaggle/working")
KAGGLE_INPUT = Path("/kaggle/input")
# Kaggle's papermill writes the executed notebook here after every cell; it is gone once the run ends, so the
# output listing never holds it (a kernel that wants its report must render it before it ends).
EXECUTED_NOTEBOOK = "__notebook__.ipynb"
# Kaggle stops a GPU session after 12 h; some 2026 quota notices say 9 h. Plans assume the lower one, so a run
# never dies unsaved (the train notebook's time budget; the GPU hours a sweep reports it still needs).
KAGGLE_SESSION_HOURS = 9.0
# Kept free after the last epoch: evaluation of the best checkpoint, the run record, the report and Kaggle's copy
# of /kaggle/working (the train notebook's time budget; the GPU hours a sweep expects).
EVALUATION_RESERVE_HOURS = 0.5
REPO_ROOT = Path(__file__).resolve().parent.parent
# The study's notebooks, for the commands that run them (sweep, robustness study, Kaggle) and the hints that name them.
NOTEBOOKS = REPO_ROOT / "notebooks"
TRAIN_NOTEBOOK = NOTEBOOKS / "train.ipynb"
ANALYZE_NOTEBOOK = NOTEBOOKS / "analyze.ipynb"
ROBUSTNESS_NOTEBOOK = NOTEBOOKS / "robustness.ipynb"
# Written into the working folder by the generated first cell of every pushed notebook (tools.kaggle): what the push
# asked for (commit, params, notebook, slug, "accelerator": "gpu"/"tpu"/"cpu" (builds before 2026-12 wrote "none" for
# "cpu"), "keras_backend": the backend its first cell selected, "resume_from": a kernel ref or null).
BUILD_RECORD = "kaggle-build.json"
# Where Kaggle mounts what a kernel attaches, under the input folder: since 2026 datasets/<owner>/<slug> and
# notebooks/<owner>/<slug> (an earlier kernel's output), some with versions/<N> below; older kernels saw <slug>.
DATASETS_MOUNT, NOTEBOOKS_MOUNT = "datasets", "notebooks"
VERSIONS_FOLDER = "versions"

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
    """Where a relative output folder lands: under the working folder on Kaggle (its output listing returns it), else
    under the repository root, whichever folder the notebook or command was started from."""
    path = Path(output_dir)
    if path.is_absolute():
        return path
    return (working_root() if on_kaggle() else REPO_ROOT) / path


def build_record() -> dict[str, Any] | None:
    """The record the pushed notebook's generated first cell wrote (BUILD_RECORD); None off Kaggle or without one."""
    if not on_kaggle():
        return None
    path = working_root() / BUILD_RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None  # a notebook run on Kaggle by hand, not pushed by tools.kaggle
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable JSON build record: {error}") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path} holds {type(record).__name__}, expected a JSON object (the build record)")
    return record


def _subfolders(folder: Path) -> list[Path]:
    """Non-hidden subfolders (symlinked ones too, as a rehearsal mounts its dataset), sorted by name."""
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def newest_version(folder: Path) -> Path:
    """folder/versions/<N> with the highest N where a mount holds numbered versions, else the folder itself."""
    numbered = [p for p in _subfolders(folder / VERSIONS_FOLDER) if p.name.isdigit()]
    return max(numbered, key=lambda p: int(p.name)) if numbered else folder


def attached_sources(root: str | os.PathLike | None = None) -> list[Path]:
    """The folder of every source attached to the kernel, in Kaggle's 2026 layout and the older one (newest version).

    root: the input folder (default input_root()). datasets/<owner>/<slug> and notebooks/<owner>/<slug> count as one
    source each, any other top folder <slug> as one (the older layout), in name order.
    """
    root = input_root() if root is None else Path(root)
    sources = []
    for top in _subfolders(root):
        if top.name in (DATASETS_MOUNT, NOTEBOOKS_MOUNT):
            sources += [newest_version(slug) for owner in _subfolders(top) for slug in _subfolders(owner)]
        else:
            sources.append(newest_version(top))
    return sources


def parse_kernel_ref(ref: str) -> tuple[str | None, str]:
    """(owner or None, slug) of a kernel reference 'owner/slug' or 'slug', a '/<version>' suffix ignored."""
    parts = [part for part in str(ref).strip().strip("/").split("/") if part]
    if parts and parts[-1].isdigit():
        parts = parts[:-1]
    if len(parts) not in (1, 2):
        raise ValueError(f"kernel reference {ref!r} is invalid: expected 'owner/slug' or 'slug' (optionally "
                         "followed by '/<version>')")
    return (parts[0] if len(parts) == 2 else None), parts[-1]


def attached_output(ref: str) -> Path | None:
    """The folder where kernel `ref`'s attached output lies under the input folder, in either layout; None if absent.

    ref: 'owner/slug' or 'slug' (any owner), a '/<version>' suffix ignored. Looked for at notebooks/<owner>/<slug>
    (since 2026; its newest versions/<N> if it has versions), then at <slug> (older kernels).
    """
    owner, slug = parse_kernel_ref(ref)
    root = input_root()
    notebooks = root / NOTEBOOKS_MOUNT
    owners = [notebooks / owner] if owner else _subfolders(notebooks)
    found = next((folder for folder in [o / slug for o in owners] + [root / slug] if folder.is_dir()), None)
    return None if found is None else newest_version(found)


def find_run_dirs(folder: str | os.PathLike) -> list[Path]:
    """The training run folders (holding run_files.METRICS) in `folder` and below it, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: expected a kernel's output holding training run folders")
    return sorted(path.parent for path in folder.rglob(run_files.METRICS)
                  if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts))


def describe_attached(root: str | os.PathLike | None = None, entries: int = 6) -> str:
    """What is attached under the input folder, one line per source with its first few entries, for error messages."""
    root = input_root() if root is None else Path(root)
    sources = attached_sources(root)
    if not sources:
        return f"nothing is attached under {root}"
    lines = []
    for source in sources:
        try:
            names = sorted(p.name + ("/" if p.is_dir() else "") for p in source.iterdir() if not p.name.startswith("."))
        except OSError as error:
            names = [f"(unreadable: {error.strerror})"]
        more = f", ... ({len(names) - entries} more)" if len(names) > entries else ""
        lines.append(f"  {source.relative_to(root)}/: {', '.join(names[:entries]) or '(empty)'}{more}")
    return f"attached under {root}:\n" + "\n".join(lines)


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


def recorded_path(path: str | os.PathLike | None) -> str | None:
    """A path as a record names it: relative to the repository when it lies inside it (a reader's copy and a moved
    checkout still find it), else as given."""
    if path is None:
        return None
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def resolve_recorded_path(path: str | None) -> str | None:
    """The path a record names (recorded_path), absolute again: a relative one is taken from the repository root."""
    if not path:
        return path
    return path if os.path.isabs(path) else str(REPO_ROOT / path)
