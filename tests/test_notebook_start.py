"""How a notebook starts: a misspelt parameter stops every way of starting it (papermill from notebooks/, our runner;
the Kaggle push and the sweep are tested in test_kaggle.py and test_sweep.py), relative paths from the repository
root, and the executed copy the last cell renders the report from."""
from __future__ import annotations

import os
import sys

import pytest
from conftest import REPO_ROOT, papermill_from_notebooks

from utils import notebook_start


def test_names_a_misspelt_parameter_and_its_closest_real_one():
    with pytest.raises(ValueError) as error:
        notebook_start.check_parameter_names(["alpah", "epochs", "zzz"], ["alpha", "epochs", "seed"], "train.ipynb")
    assert str(error.value).splitlines() == ["alpah: no such parameter of train.ipynb; did you mean alpha?",
                                             "zzz: no such parameter of train.ipynb; its parameters are alpha, "
                                             "epochs, seed"]
    notebook_start.check_parameter_names(["alpha"], ["alpha", "epochs"], "train.ipynb")  # known names pass


def _check_in_shell(cells: list[str]) -> None:
    """check_injected_parameters in an in-process IPython shell that ran `cells` as a kernel would (input history)."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        for source in cells:
            shell.run_cell(source, store_history=True)
        notebook_start.check_injected_parameters("train.ipynb")
    finally:
        InteractiveShell.clear_instance()


PARAMETERS_CELL = "alpha = 0.2  # slope\nepochs = 100  # epochs"


def test_the_kernel_stops_on_a_name_papermill_injected_but_the_parameters_cell_lacks():
    """papermill injects a `# Parameters` cell right after the parameters cell: each name it assigns must be there."""
    with pytest.raises(ValueError, match="alpah: no such parameter of train.ipynb; did you mean alpha"):
        _check_in_shell(["x = 1", PARAMETERS_CELL, "# Parameters\nalpah = 0\nepochs = 1\n"])
    _check_in_shell(["x = 1", PARAMETERS_CELL, "# Parameters\nalpha = 0\nepochs = 1\n", "y = 2"])
    _check_in_shell(["x = 1", PARAMETERS_CELL, "z = 3"])  # nothing injected (Jupyter): nothing to check


def test_relative_paths_are_taken_from_the_repository_root(monkeypatch, tmp_path):
    """Started from notebooks/ (or anywhere) off Kaggle, the kernel works in the repository root; on Kaggle it stays
    in /kaggle/working, where relative output folders land."""
    from utils import runtime

    monkeypatch.setattr(notebook_start, "_started_in", None)
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert notebook_start.start_notebook() == REPO_ROOT
    assert notebook_start.started_in() == tmp_path  # kept for the commands printed to the user
    assert runtime.resolve_output_dir("runs/x") == REPO_ROOT / "runs" / "x"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    monkeypatch.setenv("KAGGLE_WORKING_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert notebook_start.start_notebook() == tmp_path
    assert runtime.resolve_output_dir("runs/x") == tmp_path / "runs" / "x"
    assert runtime.resolve_output_dir("/abs/x").as_posix() == "/abs/x"


def test_the_runner_refuses_a_misspelt_parameter_before_a_kernel_starts(tmp_path, capsys):
    from tools.notebook import notebook_cli

    out = tmp_path / "typo"
    with pytest.raises(SystemExit) as stopped:
        notebook_cli([str(REPO_ROOT / "notebooks" / "train.ipynb"), "-p", "alpah", "0", "-p", "output_dir", str(out)])
    assert stopped.value.code == 2 and not out.exists()
    assert "alpah: no such parameter of train.ipynb; did you mean alpha?" in capsys.readouterr().err


@pytest.mark.slow
def test_the_papermill_command_stops_on_a_misspelt_parameter_in_seconds(tmp_path):
    """The users' command from notebooks/ with `-p alpah 0`: papermill only warns, the kernel's first cell stops it
    before TensorFlow loads, and no run folder is made."""
    out = tmp_path / "typo"
    done = papermill_from_notebooks("train.ipynb", tmp_path / "out.ipynb",
                                    {"alpah": 0, "epochs": 1, "max_images": 5, "image_size": 32, "output_dir": out})
    assert done.returncode != 0
    assert "alpah: no such parameter of train.ipynb; did you mean alpha?" in done.stderr
    assert not out.exists()


def test_papermill_output_is_read_off_the_parent_command_line(monkeypatch, tmp_path):
    """The kernel of `papermill IN OUT ...` (or `python -m papermill`) finds OUT, relative to papermill's folder."""
    import psutil

    (tmp_path / "out.ipynb").write_text("{}")

    class Parent:
        def __init__(self, argv):
            self.argv = argv

        def cmdline(self):
            return self.argv

        def cwd(self):
            return str(tmp_path)

    for argv in (["/venv/bin/papermill", "train.ipynb", "out.ipynb", "-p", "alpha", "0.2"],
                 [sys.executable, "-m", "papermill", "--log-output", "train.ipynb", "out.ipynb"]):
        monkeypatch.setattr(psutil.Process, "parent", lambda self, argv=argv: Parent(argv))
        assert notebook_start.papermill_output() == tmp_path / "out.ipynb"
    for argv in (["/venv/bin/papermill", "train.ipynb", "-"], [sys.executable, "-m", "ipykernel_launcher", "-f", "x"],
                 ["/venv/bin/papermill", "train.ipynb", "missing.ipynb"]):
        monkeypatch.setattr(psutil.Process, "parent", lambda self, argv=argv: Parent(argv))
        assert notebook_start.papermill_output() is None
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    monkeypatch.setenv(notebook_start.EXECUTED_NOTEBOOK_ENV, os.fspath(tmp_path / "out.ipynb"))
    assert notebook_start.executed_notebook() == tmp_path / "out.ipynb"  # the runner's path comes first
