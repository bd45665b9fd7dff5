"""Accelerator: the strategy and precision on a CPU, the backend per machine, and the stop of a kernel that did
not get the machine it was pushed for."""
from __future__ import annotations

from pathlib import Path

import keras
import pytest
from conftest import simulated_kaggle

from utils import accelerator


def test_cpu_setup_uses_default_strategy_and_float32():
    strategy = accelerator.setup_accelerator(seed=0)
    assert strategy.num_replicas_in_sync == 1 and accelerator.replica_count(strategy) == 1
    assert accelerator.replica_count() == 1 and accelerator.platform() == "cpu"
    assert keras.mixed_precision.global_policy().name == "float32"
    assert accelerator.global_batch_and_lr(32, 1e-3, 1) == (32, 1e-3)


def test_adams_learning_rate_follows_the_square_root_of_the_replicas():
    assert accelerator.global_batch_and_lr(32, 1e-3, 4) == (128, pytest.approx(2e-3))
    scale = accelerator.training_scale(32, 1e-3, 2)
    assert scale["replicas"] == 2 and scale["global_batch"] == 64
    assert scale["effective_learning_rate"] == pytest.approx(1e-3 * 2 ** 0.5)
    assert "square root" in scale["lr_scaling"]
    assert scale["keras_backend"] == "tensorflow" and scale["precision"] == keras.mixed_precision.global_policy().name


def test_check_accelerator_stops_a_kernel_without_its_machine(monkeypatch, tmp_path):
    """Decided from the GPUs TensorFlow lists and the TPUs JAX lists (faked here): only on Kaggle, never in a
    rehearsal; a T4 x2 kernel needs exactly two GPUs, a TPU kernel TPU devices."""
    simulated_kaggle(monkeypatch, tmp_path)
    gpus, tpus = [0], [0]
    monkeypatch.setattr(accelerator, "_visible_gpus", lambda: gpus[0])
    monkeypatch.setattr(accelerator, "_visible_tpus", lambda: tpus[0])
    with pytest.raises(accelerator.AcceleratorMissingError) as error:
        accelerator.check_accelerator("gpu")
    for hint in ("phone-verified", "GPU T4 x2", "kaggle quota", "--cpu", "before any data was scanned"):
        assert hint in str(error.value)
    gpus[0] = 1  # one GPU: half the global batch and another learning rate than a T4 x2 run
    with pytest.raises(accelerator.AcceleratorMissingError, match="sees 1 GPU.*global batch.*learning rate"):
        accelerator.check_accelerator("gpu")
    gpus[0] = 2
    accelerator.check_accelerator("gpu")
    with pytest.raises(accelerator.AcceleratorMissingError, match="TPU v5e-8.*JAX sees no TPU.*--accelerator gpu"):
        accelerator.check_accelerator("tpu")
    tpus[0] = 8
    accelerator.check_accelerator("tpu")
    gpus[0], tpus[0] = 0, 0
    for expected in ("cpu", "none", None):
        accelerator.check_accelerator(expected)  # a CPU push (named "none" by older builds), or no record
    monkeypatch.setenv("KAGGLE_REHEARSAL_REPLICAS", "2")
    accelerator.check_accelerator("gpu")  # a rehearsal's logical or virtual devices stand for the machine
    accelerator.check_accelerator("tpu")
    monkeypatch.delenv("KAGGLE_REHEARSAL_REPLICAS")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE")
    accelerator.check_accelerator("gpu")  # off Kaggle the CPU fallback stays silent
    accelerator.check_accelerator("tpu")
    with pytest.raises(ValueError, match="expected accelerator 'GPU' is invalid"):
        accelerator.check_accelerator("GPU")


def test_training_backend_per_accelerator_and_notebook():
    """Only a training on a TPU runs on JAX; the other notebooks keep TensorFlow (Grad-CAM) on every machine."""
    assert accelerator.keras_backend_for("tpu", "train.ipynb") == "jax"
    assert accelerator.keras_backend_for("tpu", "notebooks/analyze.ipynb") == "tensorflow"
    assert {accelerator.keras_backend_for(a, "train.ipynb") for a in ("gpu", "cpu")} == {"tensorflow"}
    with pytest.raises(ValueError, match="accelerator 'v100' is invalid"):
        accelerator.keras_backend_for("v100", "train.ipynb")


def test_select_backend_refuses_a_backend_after_keras_was_imported(monkeypatch):
    """This process imported Keras on TensorFlow: asking for JAX now must fail, asking for TensorFlow is a no-op."""
    accelerator.select_backend("tensorflow")
    with pytest.raises(RuntimeError, match="needs Keras' jax backend.*imported before with 'tensorflow'"):
        accelerator.select_backend("jax")


def test_virtual_devices_env_replaces_an_earlier_device_count(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=2")
    env = accelerator.virtual_devices_env(8)
    assert env["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=8"
    assert env["JAX_PLATFORMS"] == "cpu"


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


def test_tpu_preset_trains_with_the_t4x2_presets_global_batch_and_learning_rate():
    """params/kaggle-tpu.yaml on 8 chips = params/kaggle-t4x2.yaml on 2 GPUs, but for the precision."""
    import yaml

    presets = {name: yaml.safe_load((Path(__file__).resolve().parent.parent / "params" / f"{name}.yaml").read_text())
               for name in ("kaggle-tpu", "kaggle-t4x2")}
    tpu, gpu = presets["kaggle-tpu"], presets["kaggle-t4x2"]
    effective = {name: accelerator.global_batch_and_lr(preset["batch_size"], preset["learning_rate"],
                                                       accelerator.MACHINE_DEVICES[device])
                 for (name, preset), device in zip(presets.items(), ("tpu", "gpu"))}
    assert effective["kaggle-tpu"][0] == effective["kaggle-t4x2"][0] == 128
    assert effective["kaggle-tpu"][1] == pytest.approx(effective["kaggle-t4x2"][1])
    assert {k: v for k, v in tpu.items() if k not in ("batch_size", "learning_rate")} == \
        {k: v for k, v in gpu.items() if k not in ("batch_size", "learning_rate")}
