"""Training progress for the person waiting on it: each epoch's line in the notebook and on the terminal that started
the kernel, the run's expected duration after its first epoch (with the way to a quick run when that is hours on a
CPU), and inside an epoch a progress bar with its rate on that terminal only, never in the report."""
from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any, TextIO

import keras

from utils.notebook_start import OUTPUT_ECHOED_ENV, started_in
from utils.runtime import REPO_ROOT, TRAIN_NOTEBOOK

QUICK_PRESET = REPO_ROOT / "params" / "cpu-demo.yaml"
HOURS_WORTH_A_HINT = 1.0  # a CPU run expected to take longer is told how to make a quick one
PLAIN_PROGRESS_SECONDS = 60.0  # a terminal that is no TTY (a log file, Kaggle's log) gets a progress line this often


@functools.cache
def terminal() -> TextIO | None:
    """The terminal (or log) that started this kernel, apart from the notebook's own output; None outside a kernel.

    ipykernel captures file descriptor 2 into the notebook and keeps the original in `_original_stdstream_copy`;
    writing there reaches papermill's or our runner's stderr (or Kaggle's log) without entering the report.
    """
    original = getattr(sys.stderr, "_original_stdstream_copy", None)
    if original is None:
        return None
    return os.fdopen(os.dup(original), "w", buffering=1, encoding="utf-8", errors="replace")


def say(line: str) -> None:
    """Print a line to the notebook and, in a kernel, to the terminal that started it (unless papermill echoes it)."""
    print(line, flush=True)
    stream = terminal()
    if stream is not None and not os.environ.get(OUTPUT_ECHOED_ENV):
        stream.write(line + "\n")


def duration(seconds: float) -> str:
    """Seconds as a short duration: '45 s', '12 min', '3.4 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def quick_run_command() -> str:
    """The papermill command that runs the CPU preset, written for the folder the notebook was started from."""
    def relative(path: Any) -> str:
        return os.path.relpath(path, started_in())

    return f"papermill {relative(TRAIN_NOTEBOOK)} out.ipynb -f {relative(QUICK_PRESET)}"


def expected_duration(first_epoch_seconds: float, epochs_left: int, on_cpu: bool) -> str:
    """What the first epoch says of the whole run: the time left at its speed and, for hours on a CPU, a quicker way."""
    left = first_epoch_seconds * epochs_left
    # The first epoch also compiled the model: an upper bound, close once epochs take minutes.
    line = (f"at this speed (first epoch {duration(first_epoch_seconds)}, compilation included) the {epochs_left} "
            f"epoch(s) left take at most about {duration(left)}, until about "
            f"{time.strftime('%H:%M', time.localtime(time.time() + left))}")
    if on_cpu and left >= HOURS_WORTH_A_HINT * 3600:
        line += (f"; this is a CPU: for a quick run (the demo preset, minutes) stop it and run "
                 f"`{quick_run_command()}`, or `make demo` from the repository root")
    return line


class TerminalProgress(keras.callbacks.Callback):
    """Progress inside each epoch on the kernel's terminal: a bar with its rate on a TTY, else a line a minute."""

    def __init__(self, train_images: int, stream: TextIO | None = None):
        super().__init__()
        self.train_images, self.stream = train_images, stream

    def on_train_begin(self, logs=None):
        self.stream = self.stream or terminal()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._bar, self._started = epoch + 1, None, time.perf_counter()
        self._last = self._started
        if self.stream is not None and self.stream.isatty():
            from tqdm.auto import tqdm

            steps = self.params.get("steps")
            self._bar = tqdm(total=steps, desc=f"epoch {epoch + 1}", unit="img", file=self.stream, leave=False,
                             unit_scale=self.train_images / steps if steps else False, mininterval=1.0,
                             dynamic_ncols=True)

    def on_train_batch_end(self, batch, logs=None):
        if self._bar is not None:
            self._bar.update(1)
            return
        now = time.perf_counter()
        if self.stream is not None and now - self._last >= PLAIN_PROGRESS_SECONDS:
            self._last = now
            steps = self.params.get("steps")
            rate = f", {(batch + 1) * self.train_images / steps / (now - self._started):.1f} img/s" if steps else ""
            self.stream.write(f"epoch {self._epoch}: batch {batch + 1}/{steps or '?'}{rate}\n")
            self.stream.flush()

    def on_epoch_end(self, epoch, logs=None):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
