"""What a waiting user is told: the run's expected duration after its first epoch (with the quick preset when a CPU
faces hours) and progress inside an epoch on the terminal only."""
from __future__ import annotations

import io

from utils import progress


def test_expected_duration_tells_a_cpu_facing_hours_how_to_run_quickly(monkeypatch):
    """Written for the folder the user started in (notebooks/ here), not the repository root the kernel moved to."""
    from utils import notebook_start

    monkeypatch.setattr(notebook_start, "_started_in", progress.TRAIN_NOTEBOOK.parent)
    monkeypatch.chdir(progress.REPO_ROOT)
    line = progress.expected_duration(600.0, 99, on_cpu=True)  # 10 min an epoch, 99 left: 16.5 h
    assert "the 99 epoch(s) left take at most about 16.5 h" in line
    assert "`papermill train.ipynb out.ipynb -f ../params/cpu-demo.yaml`" in line and "make demo" in line
    assert "papermill" not in progress.expected_duration(600.0, 99, on_cpu=False)  # a GPU: the time only
    assert "papermill" not in progress.expected_duration(30.0, 5, on_cpu=True)  # minutes: nothing to suggest
    monkeypatch.setattr(notebook_start, "_started_in", progress.REPO_ROOT)  # started from the root
    assert progress.quick_run_command() == "papermill notebooks/train.ipynb out.ipynb -f params/cpu-demo.yaml"
    assert [progress.duration(s) for s in (45, 720, 12240)] == ["45 s", "12 min", "3.4 h"]


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _epoch(callback, batches: int, clock: list[float], step: float) -> None:
    callback.on_train_begin()
    callback.on_epoch_begin(0)
    for batch in range(batches):
        clock[0] += step
        callback.on_train_batch_end(batch)
    callback.on_epoch_end(0)


def test_inside_an_epoch_a_log_gets_a_line_a_minute_and_a_tty_a_bar(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock[0])
    log = FakeTerminal(tty=False)
    callback = progress.TerminalProgress(train_images=1000, stream=log)
    callback.set_params({"steps": 100})
    _epoch(callback, 100, clock, step=1.5)  # 150 s: lines at 60 s and 120 s
    lines = log.getvalue().splitlines()
    assert lines == ["epoch 1: batch 40/100, 6.7 img/s", "epoch 1: batch 80/100, 6.7 img/s"]
    tty = FakeTerminal(tty=True)
    callback = progress.TerminalProgress(train_images=1000, stream=tty)
    callback.set_params({"steps": 100})
    _epoch(callback, 100, clock, step=0.01)
    assert "epoch 1" in tty.getvalue() and "img" in tty.getvalue()


def test_outside_a_kernel_there_is_no_separate_terminal():
    """Run by plain Python (a test, a script), stdout is the terminal: lines are printed once, no bar is drawn."""
    assert progress.terminal() is None


def test_a_line_reaches_the_terminal_once(monkeypatch, capsys):
    """In a kernel a line goes to the notebook and to the terminal, unless the runner's papermill echoes the notebook's
    output there already (it would show twice)."""
    from utils.notebook_start import OUTPUT_ECHOED_ENV

    terminal = io.StringIO()
    monkeypatch.setattr(progress, "terminal", lambda: terminal)
    monkeypatch.delenv(OUTPUT_ECHOED_ENV, raising=False)
    progress.say("epoch 1/2")
    monkeypatch.setenv(OUTPUT_ECHOED_ENV, "1")
    progress.say("epoch 2/2")
    assert capsys.readouterr().out == "epoch 1/2\nepoch 2/2\n" and terminal.getvalue() == "epoch 1/2\n"
