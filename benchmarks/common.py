"""What the two speed benchmarks share: machine facts, the train-step measurement on a synthetic batch (the LeakyReLU
model against the stock ReLU ResNet50, steps interleaved), the ResNet50 FLOP count, markdown tables and the records.

Backend-neutral: numpy, and `keras` imported inside functions only, after the caller has chosen KERAS_BACKEND.
benchmarks/bench.py uses it under TensorFlow, benchmarks/train_step.py under any Keras 3 backend.
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from utils.runtime import write_atomic

LEARNING_RATE = 1e-3
SEED = 0
ALPHA = 0.2  # the study's LeakyReLU slope, the model both benchmarks time against the stock ReLU network
MODELS = ("leakyrelu", "stock_relu")
# A multiply-accumulate is 2 FLOP; a train step is one forward and one backward pass, and the backward pass costs
# about twice the forward (gradients with respect to the activations and to the weights): 3 x 2 x MACs per image.
FLOP_PER_MAC = 2
TRAIN_PASSES = 3
FLOP_FORMULA = ("train FLOP per image = 3 (forward + backward, backward ~ 2 x forward) x 2 FLOP per multiply-"
                "accumulate x the Conv2D and Dense multiply-accumulates of one forward pass, counted from the model "
                "(bias, batch norm, activations and pooling are not counted)")


# ---------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name (as lscpu prints it), from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_cores() -> int:
    """Cores this process may run on (the container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def load() -> list[float]:
    """1, 5 and 15 minute load averages (other users of the machine disturb timings)."""
    return [round(v, 2) for v in os.getloadavg()]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is in KB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def host() -> dict[str, Any]:
    """CPU, cores, RAM, Python and OS, recorded with every result."""
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
    return {"cpu_model": cpu_model(), "cpu_cores": cpu_cores(), "ram_gb": round(ram / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


# ---------------------------------------------------------------------------------------------- models and FLOP


def augmentation(seed: int = SEED) -> Any:
    """The study's augmentation (the same four layers the model holds)."""
    from utils.augmentation import DEFAULT_AUGMENTATION, build_augmentation

    return build_augmentation(**DEFAULT_AUGMENTATION, seed=seed)


def stock_model(image_size: int, seed: int = SEED) -> Any:
    """Stock keras.applications.ResNet50 (ReLU) with exactly our model's augmentation, preprocessing and head."""
    import keras

    from utils.model import NUM_CLASSES, ResNetPreprocess

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = augmentation(seed)(inputs)
    x = ResNetPreprocess(name="preprocess")(x)
    body = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(body.output)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="stock_resnet50")


def forward_macs(model: Any) -> int:
    """Multiply-accumulates of one image's forward pass through the model's Conv2D and Dense layers."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += forward_macs(layer)
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            # Each output value sums over the kernel's input extent: kh x kw x in/groups for Conv2D, in for Dense.
            total += math.prod(layer.output.shape[1:]) * math.prod(layer.kernel.shape[:-1])
    return total


def synthetic_batch(image_size: int, batch_size: int, seed: int = SEED) -> tuple[Any, Any]:
    """A seeded batch of uniform 0..255 RGB images (float32) and 0/1 labels (int32), as numpy arrays."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    return x, rng.integers(0, 2, batch_size).astype("int32")


def compile_portable(model: Any, learning_rate: float = LEARNING_RATE) -> Any:
    """utils.training.compile_model's optimizer, loss and metric on any backend (that one probes TensorFlow's devices)."""
    import keras

    # jit_compile "auto": XLA under JAX, off under torch, under TensorFlow on for a GPU when the model allows it.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile="auto")
    return model


# ---------------------------------------------------------------------------------------------- train step


def place_batch(x: Any, y: Any) -> tuple[Any, Any]:
    """The batch on the device: split along the batch axis over the devices of the distribution set
    (keras.distribution, e.g. DataParallel), as the trainer would split it each step; else on the default device."""
    import keras

    distribution = keras.distribution.distribution()
    if distribution is None:
        return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
    return tuple(keras.distribution.distribute_tensor(a, distribution.get_data_layout(a.shape)) for a in (x, y))


def _device_count(tensor: Any) -> int:
    """The devices a JAX array lies on; 1 for other backends' tensors."""
    return len(tensor.sharding.device_set) if hasattr(tensor, "sharding") else 1


def time_train_steps(models: dict[str, Any], x: Any, y: Any, steps: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Warm-up calls, then `steps` timed train_on_batch calls per model, interleaved across the models."""
    first: dict[str, float] = {}
    for name, model in models.items():
        for i in range(warmup):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            if i == 0:
                first[name] = time.perf_counter() - start  # tracing and compilation included
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(steps):  # interleaved, so a load spike from other users hits every model alike
        for name, model in models.items():
            start = time.perf_counter()
            # train_on_batch returns the loss as a Python float, so the step has finished on the device here.
            model.train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    return {name: {"median_step_s": round(statistics.median(values), 4), "min_step_s": round(min(values), 4),
                   **({"first_step_s": round(first[name], 2)} if name in first else {})}
            for name, values in times.items()}


def bench_train_step(image_size: int, batch_size: int, steps: int, warmup: int = 3, seed: int = SEED,
                     compile_fn: Callable[[Any], Any] = compile_portable) -> dict[str, Any]:
    """Median train-step time, images/s and achieved FLOP/s of our LeakyReLU model and the stock ResNet50."""
    import keras

    from utils.model import build_model

    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    keras.utils.set_random_seed(seed)
    models = {"leakyrelu": build_model(alpha=ALPHA, image_size=image_size, seed=seed),
              "stock_relu": stock_model(image_size, seed)}
    for model in models.values():
        compile_fn(model)
    macs = {name: forward_macs(model) for name, model in models.items()}
    if len(set(macs.values())) != 1:
        raise RuntimeError(f"the two models should cost the same multiply-accumulates, got {macs}")
    train_flop = TRAIN_PASSES * FLOP_PER_MAC * macs["leakyrelu"]
    # Placed once, so no timed step includes copying the batch from the host to the device(s).
    x, y = place_batch(*synthetic_batch(image_size, batch_size, seed))
    started = load()
    timed = time_train_steps(models, x, y, steps, warmup)
    result: dict[str, Any] = {"image_size": image_size, "batch_size": batch_size, "steps": steps, "warmup_steps": warmup,
                              "load_before": started, "load_after": load(), "alpha": ALPHA,
                              # The devices the batch is split over and the weights lie on (JAX arrays; else 1):
                              # 1 unless a distribution is set (DataParallel: the batch split, the weights copied).
                              "batch_devices": _device_count(x),
                              "weight_devices": _device_count(models["leakyrelu"].trainable_weights[0].value),
                              "forward_gmac_per_image": round(macs["leakyrelu"] / 1e9, 4),
                              "train_gflop_per_image": round(train_flop / 1e9, 4), "flop_formula": FLOP_FORMULA}
    for name, model in models.items():
        images_per_s = batch_size / timed[name]["median_step_s"]
        result[name] = {**timed[name], "images_per_s": round(images_per_s, 1),
                        "achieved_gflop_per_s": round(images_per_s * train_flop / 1e9, 1),
                        "jit_compile": bool(model.jit_compile), "optimizer": type(model.optimizer).__name__}
    result["ratio_leakyrelu_over_stock"] = round(result["leakyrelu"]["median_step_s"] /
                                                 result["stock_relu"]["median_step_s"], 3)
    return result


# ---------------------------------------------------------------------------------------------- records


def table(header: list[str], align: str, rows: list[list[Any]]) -> list[str]:
    """A markdown table's lines; align has one letter per column: l(eft), r(ight) or c(entre)."""
    if len(align) != len(header) or any(len(row) != len(header) for row in rows):
        raise ValueError(f"table: align {align!r} and every row need {len(header)} columns, one per header")
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    return (["| " + " | ".join(header) + " |", "|" + "|".join(rule[a] for a in align) + "|"]
            + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def train_step_lines(t: dict[str, Any]) -> list[str]:
    """The train-step result as a markdown table, the step-time ratio and the FLOP basis."""
    rows = [[name, f"{t[name]['median_step_s']:.4f}", f"{t[name]['images_per_s']:.1f}",
             f"{t[name]['achieved_gflop_per_s']:.1f}", t[name]["jit_compile"], t[name].get("first_step_s", "-")]
            for name in MODELS]
    header = ["model", "median step (s)", "images/s", "achieved GFLOP/s", "jit", "first step, compile included (s)"]
    return (table(header, "lrrrcr", rows)
            + ["", f"LeakyReLU / stock step-time ratio: **{t['ratio_leakyrelu_over_stock']:.3f}** (target <= 1.05).",
               "", f"{t['train_gflop_per_image']:.3f} GFLOP per image and step ({t['forward_gmac_per_image']:.4f} GMAC "
               f"forward) at {t['image_size']} px; {t['flop_formula']}.", ""])


def write_record(record: dict[str, Any], markdown: str, out_dir: str | os.PathLike, stem: str) -> tuple[Path, Path]:
    """Write <out_dir>/<stem>.json and <stem>.md atomically."""
    out_dir = Path(out_dir)
    json_path = write_atomic(out_dir / f"{stem}.json", json.dumps(record, indent=2) + "\n")
    md_path = write_atomic(out_dir / f"{stem}.md", markdown + "\n")
    return json_path, md_path
