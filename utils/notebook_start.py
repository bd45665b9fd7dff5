"""How a notebook starts, whoever started it (papermill from any folder, our runner, Jupyter, a Kaggle kernel): the
parameters papermill injected checked against its `parameters` cell, relative paths taken from the repository root,
and where its executed copy is being written, so that its last cell can render the report from it."""
from __future__ import annotations

import ast
import difflib
import os
import shlex
from pathlib import Path
from typing import Any, Iterable

from utils import runtime

# papermill's injected cell starts with this comment (papermill/translators.py: translate_parameters(..., "Parameters")).
INJECTED_HEADER = "# Parameters"
# Set by tools.notebook for the kernel it starts: the executed notebook papermill writes there, and that papermill
# already echoes the notebook's output to the terminal (so lines meant for the terminal are not written twice).
EXECUTED_NOTEBOOK_ENV = "NOTEBOOK_EXECUTED_PATH"
OUTPUT_ECHOED_ENV = "NOTEBOOK_OUTPUT_ECHOED"


def cell_parameters(source: str) -> dict[str, Any]:
    """The names a parameters cell assigns and their literal values (None for a value that is not a literal)."""
    defaults: dict[str, Any] = {}
    for node in ast.parse(source).body:  # ast, not papermill's parser: that one skips lines with '=' in their comment
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        try:
            value = ast.literal_eval(node.value) if node.value is not None else None
        except ValueError:
            value = None
        for target in targets:
            defaults.update({n.id: value for n in ast.walk(target) if isinstance(n, ast.Name)})
    return defaults


def check_parameter_names(given: Iterable[str], declared: Iterable[str], notebook: str) -> None:
    """Raise a ValueError naming each given parameter the notebook does not declare, with the closest declared name."""
    declared = sorted(declared)
    unknown = [name for name in given if name not in declared]
    if not unknown:
        return
    lines = []
    for name in unknown:
        match = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        hint = f"did you mean {match[0]}?" if match else f"its parameters are {', '.join(declared)}"
        lines.append(f"{name}: no such parameter of {notebook}; {hint}")
    raise ValueError("\n".join(lines))


def check_injected_parameters(notebook: str = "this notebook") -> None:
    """In a kernel papermill started: stop when its injected cell assigns a name the parameters cell does not.

    papermill itself only warns ("Passed unknown parameter") and runs the default. The kernel's input history holds
    both cells: the injected one (INJECTED_HEADER) right after the parameters cell. Outside IPython, or when nothing
    was injected (Jupyter), there is nothing to check.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    history = list(shell.user_ns.get("In", [])) if shell is not None else []
    for position, source in enumerate(history[1:], start=1):
        if source.lstrip().startswith(INJECTED_HEADER):
            check_parameter_names(cell_parameters(source), cell_parameters(history[position - 1]), notebook)
            return


_started_in: Path | None = None  # the working folder the kernel was started in, before start_notebook moved it


def started_in() -> Path:
    """The folder the notebook was started from (papermill's or Jupyter's), for commands printed to its user."""
    return _started_in or Path.cwd()


def start_notebook(notebook: str = "this notebook") -> Path:
    """A notebook's first call: check the injected parameters, then take relative paths from the repository root.

    Off Kaggle the working folder becomes the repository root, so `data_dir`, `run_dirs` and `output_dir` mean the
    same folders whether the notebook was started from the root, from notebooks/ or by Jupyter; on Kaggle relative
    output folders land under /kaggle/working (runtime.resolve_output_dir). Returns the working folder.
    """
    global _started_in
    check_injected_parameters(notebook)
    _started_in = _started_in or Path.cwd()
    if not runtime.on_kaggle():
        os.chdir(runtime.REPO_ROOT)
    return Path.cwd()


def executed_notebook() -> Path | None:
    """The executed notebook of this run as it is being written (every cell before the running one), None if unknown.

    On Kaggle its __notebook__.ipynb; under tools.notebook the path it passes (EXECUTED_NOTEBOOK_ENV); under the
    papermill command the OUTPUT_PATH on its command line, read off the kernel's parent process. Jupyter's own kernels
    have none until the user saves.
    """
    if runtime.on_kaggle():
        path = runtime.working_root() / runtime.EXECUTED_NOTEBOOK
        return path if path.is_file() else None
    if os.environ.get(EXECUTED_NOTEBOOK_ENV):
        path = Path(os.environ[EXECUTED_NOTEBOOK_ENV])
        return path if path.is_file() else None
    return papermill_output()


def papermill_output() -> Path | None:
    """The output notebook of the papermill command that started this kernel (its parent process), None otherwise."""
    try:
        import psutil
        from papermill.cli import papermill as papermill_command
    except ImportError:
        return None
    try:
        parent = psutil.Process().parent()
        argv, cwd = parent.cmdline(), parent.cwd()
    except (AttributeError, OSError, psutil.Error):  # no parent (AttributeError on None) or not ours to read
        return None
    # `papermill IN OUT ...` or `python -m papermill IN OUT ...`: the arguments after the program's name.
    names = [Path(arg).name for arg in argv[:3]]
    if "papermill" not in names:
        return None
    args = argv[names.index("papermill") + 1:]
    try:
        context = papermill_command.make_context("papermill", list(args), resilient_parsing=True)
    except Exception:  # noqa: BLE001 -- a command line click cannot read is one we cannot use, nothing more
        return None
    output = context.params.get("output_path")
    if not output or output == "-" or "://" in str(output):
        return None
    path = Path(cwd) / output
    return path if path.is_file() else None


def report_hint(stem: str) -> str:
    """What to do for a report when the executed notebook cannot be found (a notebook run in Jupyter or VS Code)."""
    return (f"report: not rendered here (no executed copy of this notebook to render: it runs in Jupyter, not under "
            f"papermill); save it and run `jupyter nbconvert --to html --no-input {shlex.quote(stem)}.ipynb` for the "
            "same report, code hidden")
