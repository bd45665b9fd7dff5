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
# What a push asks for (the build record's "accelerator"; builds before 2026-12 named "cpu" "none": recorded_accelerator).
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


def checked_accelerator(accelerator: str, name: str = "accelerator") -> str:
    """`accelerator` when it is one of ACCELERATORS, else a ValueError naming it (as `name`) and the choices."""
    if accelerator not in ACCELERATORS:
        raise ValueError(f"{name} {accelerator!r} is invalid: expected one of {', '.join(ACCELERATORS)}")
    return accelerator


def recorded_accelerator(accelerator: str) -> str:
    """A build record's accelerator under today's name ("none", as builds before 2026-12 named "cpu": "cpu")."""
    return "cpu" if accelerator == "none" else accelerator


def keras_backend_for(accelerator: str, notebook: str) -> str:
    """The Keras backend a kernel of `notebook` pushed for `accelerator` runs on (TRAINING_BACKENDS, else TensorFlow)."""
    checked_accelerator(accelerator)
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
    """Seed everything, pick the distribution and mixed precision for the devices at hand; print them; return it.

    TensorFlow: MirroredStrategy over two or more GPUs (or a rehearsal's logical CPU devices), else the default
    strategy. JAX (a TPU kernel): keras.distribution.DataParallel over every device, set as Keras' distribution, so
    the global batch is sharded evenly over the devices and batch normalisation takes its statistics over the whole
    global batch. Both have scope(); replica_count gives their replicas.
    """
    import keras

    distribution = _jax_distribution() if keras.backend.backend() == "jax" else _tensorflow_strategy()
    device = platform()
    keras.utils.set_random_seed(seed)
    policy = "float32"
    if device == "tpu" or (rehearsal_replicas() and keras.backend.backend() == "jax"):
        policy = "mixed_bfloat16"  # the TPU's native matmul type; a rehearsal of the TPU path computes as it does
    elif rehearsal_replicas():
        policy = "mixed_float16"  # as on the T4s, so float16 problems show before a push
    elif device == "gpu" and _tensor_cores():
        # Tensor cores (Volta and later, e.g. the T4) run float16 matmuls several times faster than float32.
        policy = "mixed_float16"
    keras.mixed_precision.set_global_policy(policy)
    print(f"accelerator: {describe_devices()} | strategy: {type(distribution).__name__} with "
          f"{replica_count(distribution)} replica(s) | precision: {policy} | Keras backend: "
          f"{keras.backend.backend()}", flush=True)
    return distribution


def _tensorflow_strategy() -> Any:
    """MirroredStrategy over a rehearsal's logical CPU devices or over two or more GPUs, else the default strategy."""
    import tensorflow as tf

    rehearsal = rehearsal_replicas()
    if rehearsal:  # before anything starts TensorFlow's runtime: logical devices must precede it
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * rehearsal)
        except RuntimeError:
            if len(tf.config.list_logical_devices("CPU")) != rehearsal:
                raise RuntimeError(f"${REHEARSAL_REPLICAS_ENV}={rehearsal} needs a fresh process: TensorFlow's "
                                   "devices were initialised before setup_accelerator") from None
        return tf.distribute.MirroredStrategy([device.name for device in tf.config.list_logical_devices("CPU")])
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) >= 2 else tf.distribute.get_strategy()


def _jax_distribution() -> Any:
    """keras.distribution.DataParallel over every JAX device (one of them too), set as Keras' global distribution."""
    import jax
    import keras

    devices = jax.devices()
    rehearsal = rehearsal_replicas()
    if rehearsal and len(devices) != rehearsal:
        raise RuntimeError(f"${REHEARSAL_REPLICAS_ENV}={rehearsal} asks for {rehearsal} JAX devices but JAX sees "
                           f"{len(devices)}: XLA's host device count is set before JAX starts "
                           f"({virtual_devices_env(rehearsal)['XLA_FLAGS']!r} in XLA_FLAGS)")
    distribution = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(distribution)  # also outside scope(): fit and predict shard their batches
    return distribution


def platform() -> str:
    """What Keras' backend computes on: "tpu", "gpu" or "cpu" (a rehearsal's logical or virtual devices: "cpu")."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].platform
    import tensorflow as tf

    return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"


def replica_count(distribution: Any = None) -> int:
    """Replicas of a tf.distribute strategy or of a Keras distribution (None: Keras' global one; 1 without any)."""
    if distribution is None:
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            distribution = tf.distribute.get_strategy()
        else:
            distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    if hasattr(distribution, "num_replicas_in_sync"):
        return int(distribution.num_replicas_in_sync)
    return int(distribution.device_mesh.devices.size)


def _tensor_cores() -> bool:
    """Every GPU TensorFlow sees has tensor cores (CUDA compute capability 7.0 or later)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return bool(gpus) and all(
        tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))) >= (7, 0)
        for gpu in gpus)


def describe_devices() -> str:
    """A short description of the accelerator, e.g. '2 x Tesla T4', '8 x TPU v5 lite' or 'CPU (2 cores)'."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        devices = jax.devices()
        if devices[0].platform == "cpu":
            if len(devices) > 1:
                return f"{len(devices)} x virtual CPU device (XLA host devices on {os.cpu_count()} cores)"
            return f"CPU ({os.cpu_count()} cores)"
        return f"{len(devices)} x {devices[0].device_kind}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = {tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus}
        return f"{len(gpus)} x {', '.join(sorted(names))}"
    return f"CPU ({os.cpu_count()} cores)"


def global_batch_and_lr(batch_size: int, learning_rate: float, replicas: int) -> tuple[int, float]:
    """Global batch = per-replica batch x replicas; Adam's learning rate x sqrt(replicas) (LR_SCALING)."""
    return batch_size * replicas, learning_rate * replicas ** 0.5


def training_scale(batch_size: int, learning_rate: float, replicas: int) -> dict[str, Any]:
    """The effective values a run trains with on `replicas` replicas, for its record and its parameter table: with
    the Keras backend and the precision in force."""
    import keras

    global_batch, effective = global_batch_and_lr(batch_size, learning_rate, replicas)
    return {"replicas": replicas, "global_batch": global_batch, "effective_learning_rate": effective,
            "lr_scaling": LR_SCALING, "keras_backend": keras.backend.backend(),
            "precision": keras.mixed_precision.global_policy().name}


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
    """On Kaggle, stop at once unless the session has the machine the push asked for: exactly MACHINE_DEVICES["gpu"]
    GPUs for "gpu" (GPU T4 x2), TPU devices for "tpu"; "cpu" (legacy "none") and None are not checked.

    Called by the generated first cell of every pushed notebook with the build record's "accelerator", after the
    backend is chosen and before data is scanned, so a session without its machine ends in seconds instead of
    training for hours on the CPU, or on one GPU with half the global batch and another learning rate than planned.
    A rehearsal's logical or virtual devices stand for the machine.
    """
    expected = None if expected is None else recorded_accelerator(expected)
    if expected is not None and expected not in ACCELERATORS:
        raise ValueError(f"expected accelerator {expected!r} is invalid: expected one of {', '.join(ACCELERATORS)} "
                         "or None")
    if expected in (None, "cpu") or not on_kaggle() or rehearsal_replicas():
        return
    if expected == "tpu":
        tpus = _visible_tpus()
        if tpus:
            return
        raise AcceleratorMissingError(
            "this kernel was pushed for a TPU (TPU v5e-8, machine_shape TpuV5E8) but JAX sees no TPU device; it "
            "stopped here, before any data was scanned. Check: (1) the Kaggle account is phone-verified; (2) the "
            "kernel's accelerator setting is TPU v5e-8 (the notebook editor's Settings > Accelerator; "
            "kernel-metadata.json machine_shape TpuV5E8, no docker_image: a pinned image ran TPU pushes on the CPU "
            "image, kaggle-cli issue #1197); (3) TPU quota is left this week (`kaggle quota`). To run on the GPUs "
            "instead, push with --accelerator gpu.")
    gpus = _visible_gpus()
    if gpus == MACHINE_DEVICES["gpu"]:
        return
    if gpus:
        raise AcceleratorMissingError(
            f"this kernel was pushed for GPU T4 x2 but TensorFlow sees {gpus} GPU(s); it stopped here, before any "
            f"data was scanned: on {gpus} the global batch (batch_size x replicas) and the learning rate (x the square "
            f"root of the replicas) would differ from those of a T4 x2 run, and so from the study plan's. Check the "
            "kernel's accelerator setting (GPU T4 x2; kernel-metadata.json machine_shape NvidiaTeslaT4) and push "
            "again.")
    raise AcceleratorMissingError(
        "this kernel was pushed for a GPU (GPU T4 x2) but TensorFlow sees none; it stopped here, before any data "
        "was scanned, so no session time went into a run on the CPU. Check: (1) the Kaggle account is phone-verified "
        "(Kaggle grants GPUs and internet only to verified accounts: kaggle.com > Settings > Phone verification); "
        "(2) the kernel's accelerator setting is GPU T4 x2 (the notebook editor's Settings > Accelerator; "
        "kernel-metadata.json machine_shape NvidiaTeslaT4); (3) GPU quota is left this week (`kaggle quota`; a "
        "spent quota gives no GPU until it resets). To run on the CPU on purpose, push with --accelerator cpu "
        "(--cpu).")


def _visible_gpus() -> int:
    """GPUs TensorFlow sees (listing physical devices initialises no GPU memory)."""
    quiet_logs()
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def _visible_tpus() -> int:
    """TPU devices JAX sees (0 without JAX or a TPU; Kaggle's TPU image has jax[tpu])."""
    try:
        import jax

        return len(jax.devices("tpu"))
    except (ImportError, RuntimeError):
        return 0
