"""Accelerator: the strategy and precision on a CPU, and the stop of a GPU push that got no GPU."""
from __future__ import annotations

from pathlib import Path

import keras
import pytest
from conftest import simulated_kaggle

from utils import accelerator


def test_cpu_setup_uses_default_strategy_and_float32():
    strategy = accelerator.setup_accelerator(seed=0)
    assert strategy.num_replicas_in_sync == 1
    assert keras.mixed_precision.global_policy().name == "float32"
    assert accelerator.global_batch_and_lr(32, 1e-3, 1) == (32, 1e-3)


def test_adams_learning_rate_follows_the_square_root_of_the_replicas():
    assert accelerator.global_batch_and_lr(32, 1e-3, 4) == (128, pytest.approx(2e-3))
    scale = accelerator.training_scale(32, 1e-3, 2)
    assert scale["replicas"] == 2 and scale["global_batch"] == 64
    assert scale["effective_learning_rate"] == pytest.approx(1e-3 * 2 ** 0.5)
    assert "square root" in scale["lr_scaling"]


def test_check_accelerator_stops_a_gpu_push_that_got_no_gpu(monkeypatch, tmp_path):
    """Decided from the GPUs TensorFlow lists (faked here): only on Kaggle, only for "gpu", never in a rehearsal."""
    from utils import accelerator

    simulated_kaggle(monkeypatch, tmp_path)
    gpus = [0]
    monkeypatch.setattr(accelerator, "_visible_gpus", lambda: gpus[0])
    with pytest.raises(accelerator.AcceleratorMissingError) as error:
        accelerator.check_accelerator("gpu")
    for hint in ("phone-verified", "GPU T4 x2", "kaggle quota", "--cpu", "before any data was scanned"):
        assert hint in str(error.value)
    for expected in ("none", "tpu", None):
        accelerator.check_accelerator(expected)  # a CPU push, or no record: nothing to check
    monkeypatch.setenv("KAGGLE_REHEARSAL_REPLICAS", "2")
    accelerator.check_accelerator("gpu")  # the rehearsal's logical replicas stand for the T4s
    monkeypatch.delenv("KAGGLE_REHEARSAL_REPLICAS")
    gpus[0] = 2
    accelerator.check_accelerator("gpu")
    gpus[0] = 0
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    accelerator.check_accelerator("gpu")  # off Kaggle the CPU fallback stays silent
    with pytest.raises(ValueError, match="expected accelerator 'GPU' is invalid"):
        accelerator.check_accelerator("GPU")


def test_check_accelerator_fails_fast_in_a_kaggle_kernel_without_a_gpu(tmp_path):
    """The real check in a fresh process, as the generated first cell runs it: Kaggle simulated, no GPU visible."""
    import os
    import subprocess
    import sys
    import time

    (tmp_path / "input").mkdir()
    (tmp_path / "working").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.update({"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_INPUT_ROOT": str(tmp_path / "input"),
                "KAGGLE_WORKING_ROOT": str(tmp_path / "working"), "CUDA_VISIBLE_DEVICES": "",
                "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "from utils.accelerator import check_accelerator\n"
                           "check_accelerator('gpu')\nprint('went on')"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert time.monotonic() - started < 60
    assert done.returncode != 0 and "went on" not in done.stdout
    assert "AcceleratorMissingError: this kernel was pushed for a GPU (GPU T4 x2) but TensorFlow sees none" in done.stderr
