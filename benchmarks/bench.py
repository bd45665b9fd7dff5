"""Speed benchmark: our tf.data pipeline vs keras image_dataset_from_directory, LeakyReLU vs stock ResNet50 train
step, end-to-end fit/predict and, on GPUs, mixed precision and one vs all GPUs. Writes runs/bench/<device>.json|md
(the committed reference: --out results/bench).

Run from the repository root: `python -m benchmarks.bench` (or `python benchmarks/bench.py`); `--help` lists flags.
All parts run in one process on the same generated 256-px JPEGs (quality 75, two class folders).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

if __package__ in (None, ""):  # `python benchmarks/bench.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from benchmarks.common import LEARNING_RATE, SEED, augmentation, cpu_cores, load, peak_rss_mb  # noqa: E402
from utils.runtime import REPO_ROOT, write_atomic  # noqa: E402

SOURCE_SIZE = 256  # the 140k dataset's faces are 256 x 256 JPEGs
SOURCE_QUALITY = 75
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "deepfake-bench"


# ---------------------------------------------------------------------------------------------- machine


def device_name() -> str:
    """A file-name-safe machine label: 'gpu-2xT4', 'tpu-8core' or 'cpu-2core'."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = {tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus}
        short = "+".join(sorted(n.split()[-1] for n in names))  # "Tesla T4" -> "T4"
        return f"gpu-{len(gpus)}x{short}"
    if tf.config.list_logical_devices("TPU"):
        return f"tpu-{len(tf.config.list_logical_devices('TPU'))}core"
    return f"cpu-{cpu_cores()}core"


def machine() -> dict[str, Any]:
    """CPU, cores, RAM, accelerator and versions, recorded with every result."""
    import keras
    import tensorflow as tf

    from utils.accelerator import describe_devices

    return {"device": device_name(), **common.host(), "accelerator": describe_devices(), "tensorflow": tf.__version__,
            "keras": keras.__version__}


# ---------------------------------------------------------------------------------------------- data


def make_jpegs(root: str | os.PathLike, n_images: int, image_size: int = SOURCE_SIZE,
               quality: int = SOURCE_QUALITY) -> tuple[list[str], list[int]]:
    """n_images synthetic faces (half real, half fake) as JPEGs in root/real and root/fake; reused when present."""
    from utils import synthetic

    root = Path(root)
    jobs = [(i, fake, root / ("fake" if fake else "real") / f"{i:06d}.jpg")
            for fake in (False, True) for i in range((n_images + int(not fake)) // 2)]
    todo = [job for job in jobs if not job[2].is_file()]
    for folder in ("real", "fake"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    def write(job: tuple[int, bool, Path]) -> None:
        index, fake, path = job
        write_atomic(path, synthetic.encode_jpeg(synthetic.make_image(index, fake, image_size=image_size), quality))

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(write, todo))
    # Only these files: a larger earlier run may have left more in the same folder.
    return [str(path) for _, _, path in jobs], [int(fake) for _, fake, _ in jobs]


def dataset_dir(cache: str | os.PathLike, n_images: int) -> Path:
    """The folder holding exactly n_images benchmark JPEGs (image_dataset_from_directory reads whole folders)."""
    return Path(cache) / f"jpeg{SOURCE_SIZE}-q{SOURCE_QUALITY}-n{n_images}"


# ---------------------------------------------------------------------------------------------- timing helpers


def _epochs(ds: Any, epochs: int, consume: Callable[[Any], Any] | None = None) -> list[float]:
    """Images/s of each full pass over a dataset of (images, labels) batches."""
    rates = []
    for _ in range(epochs):
        count, start = 0, time.perf_counter()
        for images, labels in ds:
            if consume is not None:
                images = consume(images)
            count += int(labels.shape[0])
        rates.append(count / (time.perf_counter() - start))
    return rates


def _summary(rates: list[float]) -> dict[str, Any]:
    """Cold (first) epoch, warm (median of the others) images/s and every epoch's rate."""
    warm = rates[1:] or rates
    return {"cold_images_per_s": round(rates[0], 1), "warm_images_per_s": round(statistics.median(warm), 1),
            "epochs_images_per_s": [round(r, 1) for r in rates]}


# ---------------------------------------------------------------------------------------------- 1. input pipeline


PIPELINES = {
    "ours": "make_dataset(training=True): parallel reads, JPEG DCT-downscaled decode when the source allows, "
            "area (antialiased) resize, decoded uint8 cache (when it fits), shuffle, batch, float32, prefetch; "
            "augmentation NOT in the pipeline: it runs inside the model on the accelerator",
    "ours+aug_on_cpu": "ours, then the augmentation layers applied to each batch in the consumer (what the model's "
                       "first layers do when the CPU is the training device)",
    "keras": "keras.utils.image_dataset_from_directory(shuffle=True) + .map(augment(x, training=True), AUTOTUNE) + "
             ".prefetch(AUTOTUNE): the Keras image-classification tutorial recipe; augmentation on the CPU",
    "keras+cache": "as keras with .cache() after loading (the TF 'load images' tutorial's tuned recipe)",
}


def bench_pipelines(root: str | os.PathLike, paths: list[str], labels: list[int], image_size: int, batch_size: int,
                    epochs: int, seed: int = SEED, variants: tuple[str, ...] = tuple(PIPELINES)) -> dict[str, Any]:
    """Images/s of each pipeline variant over 1 cold + `epochs` warm full epochs on the same JPEGs."""
    import keras
    import tensorflow as tf

    from utils import data, pipeline

    split = data.Split(list(paths), list(labels))
    results: dict[str, Any] = {"image_size": image_size, "batch_size": batch_size, "images": len(paths),
                               "cache_decoded": pipeline.cache_decision(len(paths), image_size),
                               "jpeg_ratio": pipeline.file_jpeg_ratio(split.paths[0], image_size), "variants": {}}
    for name in variants:
        if name.startswith("ours"):
            ds = pipeline.make_dataset(split, image_size, batch_size, training=True, seed=seed)
            consume = None
            if name == "ours+aug_on_cpu":
                augment = augmentation(seed)
                consume = tf.function(lambda x, augment=augment: augment(x, training=True), reduce_retracing=True)
                # trace before timing, as the keras variants trace their map when the dataset is built
                consume(tf.zeros([batch_size, image_size, image_size, 3]))
        else:
            ds = keras.utils.image_dataset_from_directory(str(root), image_size=(image_size, image_size),
                                                          batch_size=batch_size, shuffle=True, seed=seed, verbose=False)
            if name == "keras+cache":
                ds = ds.cache()
            augment = augmentation(seed)
            ds = ds.map(lambda x, y, augment=augment: (augment(x, training=True), y),
                        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
            consume = None
        started = load()
        results["variants"][name] = {**_summary(_epochs(ds, 1 + epochs, consume)), "load_before": started,
                                     "load_after": load()}
        del ds
    variants_ = results["variants"]
    for base in ("keras", "keras+cache"):
        for ours in ("ours", "ours+aug_on_cpu"):
            if base in variants_ and ours in variants_:
                for phase in ("warm", "cold"):
                    key = f"{phase}_images_per_s"
                    results.setdefault("ratios", {})[f"{ours}/{base} {phase}"] = round(
                        variants_[ours][key] / variants_[base][key], 2)
    return results


# ---------------------------------------------------------------------------------------------- 2. train step


def bench_train_step(image_size: int, batch_size: int, steps: int, warmup: int = 3, seed: int = SEED) -> dict[str, Any]:
    """Train-step time of our LeakyReLU model and the stock ResNet50 (benchmarks.common), compiled as training does."""
    from utils.training import compile_model

    return common.bench_train_step(image_size, batch_size, steps, warmup, seed,
                                   compile_fn=lambda model: compile_model(model, LEARNING_RATE))


# ---------------------------------------------------------------------------------------------- 3. end to end


class _EpochTimer:
    """Keras callback factory: wall time of each epoch."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.seconds: list[float] = []

            def on_epoch_begin(self, epoch, logs=None):
                self._start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._start)

        return Timer()


def _fit_rate(model: Any, ds: Any, steps: int, batch_size: int, epochs: int = 3) -> list[float]:
    """Images/s of each of `epochs` fit epochs of `steps` steps on a repeated dataset."""
    timer = _EpochTimer()
    model.fit(ds.repeat(), epochs=epochs, steps_per_epoch=steps, callbacks=[timer], shuffle=False, verbose=0)
    return [steps * batch_size / s for s in timer.seconds]


def bench_end_to_end(paths: list[str], labels: list[int], image_size: int, batch_size: int, steps: int,
                     steps_per_execution: tuple[int, ...] = (1, 4), seed: int = SEED) -> dict[str, Any]:
    """model.fit on our pipeline (images/s per steps_per_execution, first epoch = compile) and model.predict."""
    import keras

    from utils import data, pipeline
    from utils.model import build_model
    from utils.training import compile_model

    split = data.Split(list(paths), list(labels))
    probe = keras.Sequential([keras.Input((1,)), keras.layers.Dense(2, activation="softmax")])
    result: dict[str, Any] = {"image_size": image_size, "batch_size": batch_size, "steps_per_epoch": steps,
                              "default_steps_per_execution": compile_model(probe, LEARNING_RATE).steps_per_execution,
                              "fit": {}}
    for spe in steps_per_execution:
        keras.utils.set_random_seed(seed)
        model = build_model(alpha=0.2, image_size=image_size, seed=seed)
        compile_model(model, LEARNING_RATE, steps_per_execution=spe)
        ds = pipeline.make_dataset(split, image_size, batch_size, training=True, seed=seed)
        started = load()
        rates = _fit_rate(model, ds, steps, batch_size)
        result["fit"][f"steps_per_execution={spe}"] = {**_summary(rates), "load_before": started, "load_after": load()}
    eval_ds = pipeline.make_dataset(split, image_size, batch_size, training=False)
    rates = []
    for _ in range(3):  # the first call traces the predict function
        start = time.perf_counter()
        model.predict(eval_ds, verbose=0)
        rates.append(len(paths) / (time.perf_counter() - start))
    result["predict"] = _summary(rates)
    return result


# ---------------------------------------------------------------------------------------------- 4. GPU variants


def bench_gpus(paths: list[str], labels: list[int], image_size: int, batch_size: int, steps: int,
               seed: int = SEED) -> dict[str, Any]:
    """fit images/s at image_size with mixed precision on/off and one vs all GPUs; skipped without GPUs."""
    import keras
    import tensorflow as tf

    from utils import data, pipeline
    from utils.accelerator import global_batch_and_lr
    from utils.model import build_model
    from utils.training import compile_model

    gpus = tf.config.list_logical_devices("GPU")
    if not gpus:
        return {"skipped": "no GPU on this machine: the mixed-precision and one-vs-all-GPU runs need CUDA devices "
                           "(run the same command on Kaggle's T4 x2)"}
    split = data.Split(list(paths), list(labels))
    strategies = {"1 GPU": lambda: tf.distribute.OneDeviceStrategy(gpus[0].name)}
    if len(gpus) > 1:
        strategies[f"{len(gpus)} GPUs"] = tf.distribute.MirroredStrategy
    result: dict[str, Any] = {"image_size": image_size, "batch_size_per_replica": batch_size, "runs": {}}
    for policy in ("mixed_float16", "float32"):
        for label, make_strategy in strategies.items():
            keras.backend.clear_session()
            keras.mixed_precision.set_global_policy(policy)
            keras.utils.set_random_seed(seed)
            strategy = make_strategy()
            global_batch, lr = global_batch_and_lr(batch_size, LEARNING_RATE, strategy.num_replicas_in_sync)
            with strategy.scope():
                model = build_model(alpha=0.2, image_size=image_size, seed=seed)
                compile_model(model, lr)
            ds = pipeline.make_dataset(split, image_size, global_batch, training=True, seed=seed)
            rates = _fit_rate(model, ds, steps, global_batch)
            result["runs"][f"{policy}, {label}"] = {**_summary(rates), "global_batch": global_batch,
                                                    "jit_compile": bool(model.jit_compile),
                                                    "optimizer": type(model.optimizer).__name__}
    keras.mixed_precision.set_global_policy("float32")
    return result


# ---------------------------------------------------------------------------------------------- report


def to_markdown(record: dict[str, Any]) -> str:
    """The benchmark record as markdown tables."""
    m = record["machine"]
    lines = [f"# Speed benchmark: {m['device']}", "",
             f"{m['cpu_model']}, {m['cpu_cores']} cores, {m['ram_gb']} GB RAM; accelerator {m['accelerator']}; "
             f"TF {m['tensorflow']}, Keras {m['keras']}. Load average at start {record['load_start']}, "
             f"at end {record['load_end']}. Peak RSS {record['peak_rss_mb']} MB. "
             f"Source: {record['args']['images']} synthetic {SOURCE_SIZE}-px JPEGs (quality {SOURCE_QUALITY}).", ""]
    if record.get("pipelines"):
        rows = [[block["image_size"], name, f"{v['cold_images_per_s']:.0f}", f"{v['warm_images_per_s']:.0f}",
                 block["cache_decoded"] if name.startswith("ours") else "-",
                 block["jpeg_ratio"] if name.startswith("ours") else "-"]
                for block in record["pipelines"] for name, v in block["variants"].items()]
        ratios = [[block["image_size"], key, f"{value:.2f}x"]
                  for block in record["pipelines"] for key, value in block.get("ratios", {}).items()]
        lines += ["## 1. Input pipeline (images/s; warm = median of full epochs after the first)", ""]
        lines += common.table(["size", "pipeline", "cold epoch", "warm epochs", "decoded cache", "JPEG ratio"],
                              "rlrrcr", rows)
        lines += [""] + common.table(["size", "ratio", "value"], "rlr", ratios)
        lines += ["", "What each pipeline includes:", ""]
        lines += [f"* `{name}`: {text}" for name, text in PIPELINES.items()]
        lines.append("")
    if record.get("train_step"):
        t = record["train_step"]
        lines += [f"## 2. Train step, {t['image_size']} px, batch {t['batch_size']} (median of {t['steps']} "
                  f"interleaved steps after {t['warmup_steps']} warm-up steps)", ""] + common.train_step_lines(t)
    if record.get("end_to_end"):
        e = record["end_to_end"]
        runs = {**{f"model.fit, {name}": v for name, v in e["fit"].items()}, "model.predict": e["predict"]}
        lines += [f"## 3. End to end, {e['image_size']} px, batch {e['batch_size']} "
                  f"({e['steps_per_epoch']} steps per epoch; first epoch includes tracing)", ""]
        lines += common.table(["run", "first epoch", "later epochs (median)"], "lrr",
                              [[name, f"{v['cold_images_per_s']:.1f}", f"{v['warm_images_per_s']:.1f}"]
                               for name, v in runs.items()])
        lines += ["", f"Default steps_per_execution on this device: {e['default_steps_per_execution']}.", ""]
    gpu = record.get("gpu") or {}
    lines += ["## 4. GPU: mixed precision and one vs all GPUs", ""]
    if "skipped" in gpu or not gpu:
        lines += [f"Skipped: {gpu.get('skipped', 'not run')}.", ""]
    else:
        lines += [f"{gpu['image_size']} px, {gpu['batch_size_per_replica']} images per replica.", ""]
        lines += common.table(["run", "global batch", "jit", "optimizer", "first epoch", "later epochs"], "lrclrr",
                              [[name, v["global_batch"], v["jit_compile"], v["optimizer"], f"{v['cold_images_per_s']:.0f}",
                                f"{v['warm_images_per_s']:.0f}"] for name, v in gpu["runs"].items()])
        lines.append("")
    return "\n".join(lines)


def write_results(record: dict[str, Any], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write <out_dir>/<device>.json and .md atomically."""
    return common.write_record(record, to_markdown(record), out_dir, record["machine"]["device"])


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None, gpu: bool) -> argparse.Namespace:
    """Command-line flags; defaults keep a 2-core CPU run near 10 minutes, bigger ones on a GPU."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000 if gpu else 2000, help="generated 256-px JPEGs")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224],
                        help="pipeline target sizes")
    parser.add_argument("--batch", type=int, default=64 if gpu else 32, help="pipeline batch size")
    parser.add_argument("--epochs", type=int, default=2, help="warm epochs per pipeline after the cold one")
    parser.add_argument("--train-size", type=int, default=224 if gpu else 64, help="train-step/end-to-end size")
    parser.add_argument("--train-batch", type=int, default=64 if gpu else 16, help="train-step/end-to-end batch")
    parser.add_argument("--train-steps", type=int, default=20 if gpu else 8, help="timed train steps per model")
    parser.add_argument("--fit-steps", type=int, default=30 if gpu else 8, help="steps per fit epoch (3 epochs)")
    parser.add_argument("--gpu-size", type=int, default=224, help="image size of the GPU variants")
    parser.add_argument("--skip", nargs="*", default=[], choices=["pipelines", "train_step", "end_to_end", "gpu"])
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE), help="where the generated JPEGs are kept")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"), help="output folder")
    parser.add_argument("--device-name", default=None, help="override the output file name (default: derived)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every part not skipped and return the record (peak RSS and load included)."""
    record: dict[str, Any] = {"machine": machine(), "args": vars(args), "load_start": load()}
    if args.device_name:
        record["machine"]["device"] = args.device_name
    root = dataset_dir(args.cache_dir, args.images)
    start = time.perf_counter()
    paths, labels = make_jpegs(root, args.images)
    record["generate_seconds"] = round(time.perf_counter() - start, 1)
    section_rss = {}
    if "pipelines" not in args.skip:
        record["pipelines"] = [bench_pipelines(root, paths, labels, size, args.batch, args.epochs)
                               for size in args.sizes]
        section_rss["pipelines"] = peak_rss_mb()
    if "train_step" not in args.skip:
        record["train_step"] = bench_train_step(args.train_size, args.train_batch, args.train_steps)
        section_rss["train_step"] = peak_rss_mb()
    if "end_to_end" not in args.skip:
        record["end_to_end"] = bench_end_to_end(paths, labels, args.train_size, args.train_batch, args.fit_steps)
        section_rss["end_to_end"] = peak_rss_mb()
    if "gpu" not in args.skip:
        record["gpu"] = bench_gpus(paths, labels, args.gpu_size, args.train_batch, args.fit_steps)
        section_rss["gpu"] = peak_rss_mb()
    record.update(load_end=load(), peak_rss_mb=peak_rss_mb(), peak_rss_mb_after=section_rss,
                  total_seconds=round(time.perf_counter() - start, 1))
    return record


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, write <out>/<device>.json and .md, print the table."""
    import tensorflow as tf

    args = parse_args(argv, gpu=bool(tf.config.list_physical_devices("GPU")))
    record = run(args)
    json_path, md_path = write_results(record, args.out)
    print(to_markdown(record))
    print(f"wrote {json_path} and {md_path}", flush=True)
    return record


if __name__ == "__main__":
    main()
