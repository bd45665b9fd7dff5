"""Accelerator: the Keras backend a kernel runs on, the distribution and precision for the devices at hand (two T4s
under TensorFlow's MirroredStrategy, a TPU's chips under JAX's DataParallel, a rehearsal's logical CPU devices), and
the check that a kernel got the machine it was pushed for.

Keras, TensorFlow and JAX are imported inside the functions: a pushed kernel's first cell imports this module to pick
the backend and check the machine before anything imports Keras, and the laptop commands import it for its names.
"""
from __future__ import annotations

import os
from typing import Any

from utils.runtime import on_kaggle, quiet_logs

# Set by the rehearsal (python -m tools.kaggle rehearse): the devices standing in for the accelerator. Under
# TensorFlow the notebook splits the CPU into this many logical devices and trains with MirroredStrategy and
# mixed_float16 over them, the path two T4 GPUs take; under JAX the rehearsal has XLA make this many host devices
# (virtual_devices_env) and the notebook trains with DataParallel and mixed_bfloat16 over them, a TPU's path.
REHEARSAL_REPLICAS_ENV = "KAGGLE_REHEARSAL_REPLICAS"
# What a push asks for (the build record's "accelerator"; "none" was the name of "cpu" in builds before 2026-12).
ACCELERATORS = ("gpu", "tpu", "cpu")
# The Kaggle machine each accelerator asks for (kernel-metadata.json "machine_shape"; the CLI 2.2.5 names these two:
# "'NvidiaTeslaT4' for GPU T4 x2 or 'TpuV5E8' for TPU v5e-8"); "cpu" asks for none.
MACHINE_SHAPES = {"gpu": "NvidiaTeslaT4", "tpu": "TpuV5E8"}
# Devices of each machine: the T4 x2 kernel must see exactly two GPUs (one would halve the global batch and change
# the learning rate the plan fixed); a TPU v5e-8 has 8 chips, one JAX device each.
MACHINE_DEVICES = {"gpu": 2, "tpu": 8}
# Keras' backend per accelerator for the notebooks that train: Kaggle's TPU image has TensorFlow's CPU build beside
# jax[tpu], so only JAX sees the TPU. The other notebooks stay on TensorFlow everywhere (Grad-CAM needs its
# GradientTape): on a TPU machine they run on its host CPU.
TRAINING_BACKENDS = {"gpu": "tensorflow", "tpu": "jax", "cpu": "tensorflow"}
TRAINING_NOTEBOOKS = ("train.ipynb",)
# How Adam's learning rate follows the global batch over replicas: the square-root rule derived for Adam and RMSprop
# (Malladi et al. 2022; Granziol et al. 2022), not the linear rule, which was stated for SGD with a warm-up (Goyal et
# al. 2017). docs/training.md gives the evidence.
LR_SCALING = "square root of the replica count (Malladi et al. 2022)"


def keras_backend_for(accelerator: str, notebook: str) -> str:
    """The Keras backend a kernel of `notebook` pushed for `accelerator` runs on (TRAINING_BACKENDS, else TensorFlow)."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator {accelerator!r} is invalid: expected one of {', '.join(ACCELERATORS)}")
    return TRAINING_BACKENDS[accelerator] if os.path.basename(notebook) in TRAINING_NOTEBOOKS else "tensorflow"


def select_backend(backend: str) -> None:
    """Make `backend` Keras' backend; called before anything imports Keras (a kernel's first cell)."""
    import sys

    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != backend:
            raise RuntimeError(f"this kernel needs Keras' {backend} backend, but Keras was imported before with "
                               f"{keras.backend.backend()!r}: the backend must be chosen before the first import of "
                               "Keras (restart the kernel)")
        return
    os.environ["KERAS_BACKEND"] = backend


def virtual_devices_env(devices: int) -> dict[str, str]:
    """The environment that makes XLA split this host's CPU into `devices` JAX devices (a TPU rehearsal's stand-in)."""
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split()
             if not flag.startswith("--xla_force_host_platform_device_count")]
    return {"XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
            "JAX_PLATFORMS": "cpu"}


def setup_accelerator(seed: int) -> Any:
    """Seed everything, pick the distribution strategy (TPU, several GPUs, else default) and mixed precision; print both."""
    import keras
    import tensorflow as tf

    rehearsal = rehearsal_replicas()
    if rehearsal:
        strategy = _rehearsal_strategy(rehearsal)  # before seeding: logical devices must precede TF's start
    keras.utils.set_random_seed(seed)
    device = "CPU rehearsal" if rehearsal else "CPU"
    if not rehearsal:
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            strategy, device = tf.distribute.TPUStrategy(resolver), "TPU"
        except (ValueError, RuntimeError, tf.errors.NotFoundError):
            gpus = tf.config.list_physical_devices("GPU")
            strategy = tf.distribute.MirroredStrategy() if len(gpus) >= 2 else tf.distribute.get_strategy()
            device = f"{len(gpus)} x GPU" if gpus else "CPU"
    policy = "float32"
    if device == "TPU":
        policy = "mixed_bfloat16"
    elif device == "CPU rehearsal":
        policy = "mixed_float16"  # as on the T4s, so float16 problems show before a push
    elif device != "CPU" and all(_compute_capability(gpu) >= (7, 0) for gpu in tf.config.list_physical_devices("GPU")):
        # Tensor cores (Volta and later, e.g. the T4) run float16 matmuls several times faster than float32.
        policy = "mixed_float16"
    keras.mixed_precision.set_global_policy(policy)
    print(f"accelerator: {describe_devices()} | strategy: {type(strategy).__name__} with "
          f"{strategy.num_replicas_in_sync} replica(s) | precision: {policy}", flush=True)
    return strategy


def _rehearsal_strategy(replicas: int) -> Any:
    """MirroredStrategy over `replicas` logical CPU devices (the CPU split before TensorFlow starts its runtime)."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise RuntimeError(f"${REHEARSAL_REPLICAS_ENV}={replicas} needs a fresh process: TensorFlow's devices were "
                               "initialised before setup_accelerator") from None
    return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])


def _compute_capability(gpu: Any) -> tuple[int, int]:
    """The GPU's CUDA compute capability, (0, 0) when unknown."""
    import tensorflow as tf

    return tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0)))


def describe_devices() -> str:
    """A short description of the accelerator, e.g. '2 x Tesla T4' or 'CPU (2 cores)'."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = {tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus}
        return f"{len(gpus)} x {', '.join(sorted(names))}"
    if tf.config.list_logical_devices("TPU"):
        return f"TPU ({len(tf.config.list_logical_devices('TPU'))} cores)"
    return f"CPU ({os.cpu_count()} cores)"


def global_batch_and_lr(batch_size: int, learning_rate: float, replicas: int) -> tuple[int, float]:
    """Global batch = per-replica batch x replicas; Adam's learning rate x sqrt(replicas) (LR_SCALING)."""
    return batch_size * replicas, learning_rate * replicas ** 0.5


def training_scale(batch_size: int, learning_rate: float, replicas: int) -> dict[str, Any]:
    """The effective values a run trains with on `replicas` replicas, for its record and its parameter table."""
    global_batch, effective = global_batch_and_lr(batch_size, learning_rate, replicas)
    return {"replicas": replicas, "global_batch": global_batch, "effective_learning_rate": effective,
            "lr_scaling": LR_SCALING}


def rehearsal_replicas() -> int:
    """The replica count a rehearsal asks for through $KAGGLE_REHEARSAL_REPLICAS (0: not a rehearsal)."""
    value = os.environ.get(REHEARSAL_REPLICAS_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit() or int(value) < 2:
        raise ValueError(f"${REHEARSAL_REPLICAS_ENV}={value!r} is invalid: expected an integer >= 2 (replicas)")
    return int(value)


class AcceleratorMissingError(RuntimeError):
    """A kernel pushed for an accelerator that its session did not get."""


def check_accelerator(expected: str | None) -> None:
    """On Kaggle, stop at once when the push asked for a GPU and TensorFlow sees none (a rehearsal's replicas count).

    Called by the generated first cell of every pushed notebook with the build record's "accelerator", so a session
    that Kaggle gave no GPU ends in seconds instead of training for hours on the CPU. "tpu" and "none" are not checked.
    """
    if expected is not None and expected not in ACCELERATORS:
        raise ValueError(f"expected accelerator {expected!r} is invalid: expected one of {', '.join(ACCELERATORS)} "
                         "or None")
    if expected != "gpu" or not on_kaggle() or rehearsal_replicas():
        return  # a rehearsal's logical CPU replicas stand for the two T4s
    if _visible_gpus():
        return
    raise AcceleratorMissingError(
        "this kernel was pushed for a GPU (GPU T4 x2) but TensorFlow sees none; it stopped here, before any data "
        "was scanned, so no session time went into a run on the CPU. Check: (1) the Kaggle account is phone-verified "
        "(Kaggle grants GPUs and internet only to verified accounts: kaggle.com > Settings > Phone verification); "
        "(2) the kernel's accelerator setting is GPU T4 x2 (the notebook editor's Settings > Accelerator; "
        "kernel-metadata.json enable_gpu true); (3) GPU quota is left this week (`kaggle quota`; a spent quota gives "
        "no GPU until it resets). To run on the CPU on purpose, push with --cpu.")


def _visible_gpus() -> int:
    """GPUs TensorFlow sees (listing physical devices initialises no GPU memory)."""
    quiet_logs()
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))
