"""Train-step benchmark on any Keras 3 backend: the LeakyReLU-ResNet50 (utils.model.build_model, alpha 0.2) against
the stock ReLU ResNet50 with the same augmentation, preprocessing and head, on one synthetic batch; images/s,
achieved FLOP/s and the LeakyReLU / ReLU step-time ratio. Needs Keras and one backend: no TensorFlow unless it is the
backend. Writes <out>/train-step-<device>-<backend>[-<precision>][-<N>dev].json|md.

With --devices N (JAX only) it times the data-parallel step too: both models built and trained under
keras.distribution.DataParallel over the first N JAX devices, --batch-size per device (global batch N x batch, as
training's batch per replica), beside the same per-device batch on one device in the same process; the record gives
images/s in all and per device and the scaling efficiency (per-device images/s on N / images/s on one). On a CPU host
--virtual-devices N has XLA split the CPU into N JAX devices (set before JAX starts), to exercise that path: those
devices share the CPU's cores, so their images/s say nothing about a TPU's.

Run from the repository root, e.g. `python -m benchmarks.train_step --backend jax --image-size 224 --batch-size 64
--precision mixed_bfloat16 [--devices 8]`; `--help` lists flags. Defaults: 224 px, batch 64, 20 steps on an
accelerator; 64 px, batch 8, 5 steps on a CPU.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/train_step.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402
from utils.accelerator import select_backend as select_keras_backend  # noqa: E402
from utils.runtime import REPO_ROOT  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies
# (image_size, batch_size, steps, warmup) when the flags are left out.
ACCELERATOR_DEFAULTS = (224, 64, 20, 3)
CPU_DEFAULTS = (64, 8, 5, 2)


def _integer(minimum: int) -> Any:
    """An argparse type: an integer >= minimum."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; sizes left out are chosen once the backend has named its device.

    With --virtual-devices it sets XLA's host device count (before anything here imports JAX); with --devices N > 1
    it asks JAX for its devices, and stops with a usage error when it sees fewer than N.
    """
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default=os.environ.get("KERAS_BACKEND", "tensorflow"),
                        help="Keras backend (default: $KERAS_BACKEND, else tensorflow)")
    parser.add_argument("--image-size", type=_integer(32), default=None,
                        help="pixels (ResNet50 downsamples 32x); default 224 on an accelerator, 64 on a CPU")
    parser.add_argument("--batch-size", type=_integer(1), default=None, help="default 64 on an accelerator, 8 on a CPU")
    parser.add_argument("--steps", type=_integer(1), default=None, help="timed steps per model; default 20, 5 on a CPU")
    parser.add_argument("--warmup", type=_integer(0), default=None,
                        help="untimed steps per model first (the first one compiles); default 3, 2 on a CPU")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32", help="Keras dtype policy")
    parser.add_argument("--devices", type=_integer(1), default=1,
                        help="JAX only: time the data-parallel step (keras.distribution.DataParallel) on the first N "
                             "devices too, --batch-size per device; default 1 (one device only)")
    parser.add_argument("--virtual-devices", type=_integer(2), default=None, metavar="N",
                        help="JAX only: split the host CPU into N XLA devices (JAX_PLATFORMS=cpu) to exercise "
                             "--devices on a CPU; they share its cores, so their speed means nothing")
    parser.add_argument("--seed", type=int, default=common.SEED, help="seed of the batch and the initial weights")
    parser.add_argument("--notes", default="", help="free text kept in the record (e.g. 'shared machine')")
    parser.add_argument("--out", default=str(REPO_ROOT / "runs" / "bench"), help="output folder")
    parser.add_argument("--name", default=None, help="file name stem (default: train-step-<device>-<backend>...)")
    args = parser.parse_args(argv)
    if args.backend != "jax" and (args.devices > 1 or args.virtual_devices):
        parser.error(f"--devices N > 1 and --virtual-devices need --backend jax (the data-parallel step is JAX's), "
                     f"not --backend {args.backend}")
    if args.virtual_devices:
        use_virtual_devices(args.virtual_devices)
    if args.devices > 1:
        devices = jax_devices()
        if args.devices > len(devices):
            hint = ""
            if args.virtual_devices == len(devices):
                hint = f", as --virtual-devices {args.virtual_devices} asked"
            elif args.virtual_devices:
                hint = (f", not the {args.virtual_devices} that --virtual-devices asked: JAX had started in this "
                        "process before XLA_FLAGS could be set (run the benchmark in a fresh process)")
            parser.error(f"--devices {args.devices}: JAX sees {_describe(devices)}{hint}")
    return args


def use_virtual_devices(count: int) -> None:
    """Make XLA split the host CPU into `count` JAX devices; takes effect only if JAX has not started its backends."""
    from utils.accelerator import virtual_devices_env

    os.environ.update(virtual_devices_env(count))


def jax_devices() -> list[Any]:
    """The devices JAX sees (its default platform's)."""
    import jax

    return jax.devices()


def _describe(devices: list[Any]) -> str:
    """'8 devices (tpu: TPU v5 lite)', '1 device (cpu: cpu)'."""
    kinds = sorted({f"{d.platform}: {d.device_kind}" for d in devices})
    return f"{len(devices)} device{'s' if len(devices) != 1 else ''} ({', '.join(kinds)})"


def select_backend(backend: str) -> None:
    """Make `backend` Keras' backend (utils.accelerator.select_backend); it must happen before keras is first imported
    in this process."""
    try:
        select_keras_backend(backend)
    except RuntimeError:
        import keras

        raise RuntimeError(f"--backend {backend}: keras is already imported here with backend "
                           f"{keras.backend.backend()!r}; run the benchmark in a fresh process") from None


def accelerator(backend: str) -> dict[str, Any]:
    """The device Keras trains on, as the backend itself names it: platform, name, version, device count."""
    if backend == "jax":
        import jax

        devices = jax.devices()  # the default platform's: GPUs or TPUs when present, else the CPU ("cpu")
        platform, name, count, version = devices[0].platform, devices[0].device_kind, len(devices), jax.__version__
    elif backend == "torch":
        import torch

        version = torch.__version__
        if torch.cuda.is_available():
            platform, name, count = "gpu", torch.cuda.get_device_name(0), torch.cuda.device_count()
        elif torch.backends.mps.is_available():
            platform, name, count = "mps", "Apple MPS", 1
        else:
            platform, name, count = "cpu", "cpu", 1
    else:
        import tensorflow as tf

        version = tf.__version__
        gpus, tpus = tf.config.list_physical_devices("GPU"), tf.config.list_logical_devices("TPU")
        if gpus:
            platform, count = "gpu", len(gpus)
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        elif tpus:
            platform, name, count = "tpu", "TPU", len(tpus)
        else:
            platform, name, count = "cpu", "cpu", 1
    if platform == "cpu":
        count = common.cpu_cores()  # the backend names no model for a CPU: the host record has it
    return {"platform": platform, "name": name, "count": count, "backend_version": version, "label": _label(platform, name)}


def _label(platform: str, name: str) -> str:
    """A file-name-safe device label: 'cpu', 'gpu-H200', 'gpu-H100-80GB-HBM3', 'tpu-TPU-v5-lite'."""
    if platform == "cpu":
        return "cpu"
    short = re.sub(r"^(NVIDIA|Tesla|AMD)\s+", "", name.strip())
    return f"{platform}-" + (re.sub(r"[^A-Za-z0-9.]+", "-", short).strip("-") or "device")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure both models' train steps under args.backend and args.precision; returns the record."""
    select_backend(args.backend)
    import keras

    start = time.perf_counter()
    device = accelerator(args.backend)
    defaults = CPU_DEFAULTS if device["platform"] == "cpu" else ACCELERATOR_DEFAULTS
    sizes = dict(zip(("image_size", "batch_size", "steps", "warmup"), defaults))
    sizes.update({key: value for key, value in vars(args).items() if key in sizes and value is not None})
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_global_policy(args.precision)
    parallel: dict[str, Any] = {}
    try:
        if args.devices > 1:
            parallel = bench_data_parallel(args.devices, sizes, args.seed)
            result = parallel.pop("train_step")
        else:
            result = common.bench_train_step(sizes["image_size"], sizes["batch_size"], sizes["steps"],
                                             sizes["warmup"], args.seed)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    return {"benchmark": "train_step", "backend": args.backend, "keras": keras.__version__,
            "precision": args.precision, "device": device, "host": common.host(), "args": {**vars(args), **sizes},
            "notes": args.notes, "train_step": result, **parallel,
            # Keras itself imports an installed TensorFlow for isinstance checks in config serialization, so this
            # is False only where TensorFlow is absent (or hidden); our code never imports it for another backend.
            "tensorflow_loaded": sys.modules.get("tensorflow") is not None,
            "peak_rss_mb": common.peak_rss_mb(), "total_seconds": round(time.perf_counter() - start, 1)}


def bench_data_parallel(count: int, sizes: dict[str, int], seed: int) -> dict[str, Any]:
    """Both models' steps on one device, then under DataParallel over the first `count` JAX devices, batch per device.

    Returns "train_step" (the `count`-device result: batch_size is the global batch, images/s all devices' together),
    "single_device" (the same per-device batch on the first device alone) and "data_parallel" (the comparison).
    """
    import gc

    import jax
    import keras

    devices = jax.devices()[:count]
    batch, results = sizes["batch_size"], {}
    for key, distribution, global_batch in (("single_device", None, batch),
                                           ("train_step", keras.distribution.DataParallel(devices=devices),
                                            batch * count)):
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(distribution)  # the models are built, compiled and trained under it
        try:
            results[key] = common.bench_train_step(sizes["image_size"], global_batch, sizes["steps"], sizes["warmup"],
                                                   seed)
        finally:
            keras.distribution.set_distribution(previous)
            keras.backend.clear_session()
            gc.collect()
    return {**results, "data_parallel": scaling(results["single_device"], results["train_step"], devices, batch)}


def scaling(single: dict[str, Any], parallel: dict[str, Any], devices: list[Any], batch: int) -> dict[str, Any]:
    """Images/s on len(devices) devices in all and per device against one device's, per model, from the medians."""
    count = len(devices)
    virtual = devices[0].platform == "cpu"  # several JAX CPU devices are XLA's split of one host's cores
    record: dict[str, Any] = {
        "devices": count, "batch_per_device": batch, "global_batch": batch * count,
        "distribution": "keras.distribution.DataParallel", "device_ids": [d.id for d in devices],
        "device_kind": devices[0].device_kind, "virtual_host_devices": virtual,
        "scaling_formula": "scaling efficiency = images/s per device on N devices / images/s on one device, same "
                           "per-device batch (= single-device median step / N-device median step)"}
    for name in common.MODELS:
        one, many = single[name]["median_step_s"], parallel[name]["median_step_s"]
        record[name] = {"images_per_s": round(batch * count / many, 1),
                        "images_per_s_per_device": round(batch / many, 1),
                        "single_device_images_per_s": round(batch / one, 1),
                        "scaling_efficiency": round(one / many, 3)}
    return record


def record_stem(record: dict[str, Any]) -> str:
    """train-step-<device label>-<backend>, with -<precision> unless float32, and -<N>dev on N > 1 devices."""
    stem = f"train-step-{record['device']['label']}-{record['backend']}"
    stem = stem if record["precision"] == "float32" else f"{stem}-{record['precision']}"
    return f"{stem}-{record['data_parallel']['devices']}dev" if "data_parallel" in record else stem


def _batch(record: dict[str, Any]) -> str:
    """'batch 8', or 'global batch 8 (1 per device)' on several devices."""
    p = record.get("data_parallel")
    return f"global batch {p['global_batch']} ({p['batch_per_device']} per device)" if p else \
        f"batch {record['train_step']['batch_size']}"


def _used(record: dict[str, Any]) -> str:
    """Which of the backend's devices ran the step."""
    p = record.get("data_parallel")
    return f", the first {p['devices']} used" if p else ", the first one used"


def _tensorflow_note(record: dict[str, Any]) -> str:
    """Whether TensorFlow was loaded, and by whom when it is not the backend."""
    if not record["tensorflow_loaded"]:
        return "no"
    if record["backend"] == "tensorflow":
        return "yes (the backend)"
    return "yes, imported by Keras itself because it is installed (this benchmark never imports it)"


def to_markdown(record: dict[str, Any]) -> str:
    """The record as a short markdown report."""
    d, h, t = record["device"], record["host"], record["train_step"]
    p = record.get("data_parallel")
    title = f"# Train step: {record['backend']} on {d['label']}"
    lines = [f"{title}, data parallel over {p['devices']} devices" if p else title, "",
             f"Backend {record['backend']} {d['backend_version']}, Keras {record['keras']}, precision "
             f"{record['precision']}. Device, as the backend names it: {d['name']} ({d['count']} "
             f"{'cores' if d['platform'] == 'cpu' else 'devices' + _used(record)}). Host: {h['cpu_model']}, "
             f"{h['cpu_cores']} cores, {h['ram_gb']} GB RAM, Python {h['python']}. TensorFlow in the process: "
             f"{_tensorflow_note(record)}. Peak RSS {record['peak_rss_mb']} MB.", "",
             f"{t['image_size']} px, {_batch(record)}: median of {t['steps']} interleaved steps per model after "
             f"{t['warmup_steps']} warm-up steps, on one synthetic batch (seed {record['args']['seed']}). Load "
             f"average before {t['load_before']}, after {t['load_after']}.", ""]
    if record["notes"]:
        lines += [f"Notes: {record['notes']}", ""]
    if p:
        return "\n".join(lines + data_parallel_lines(record))
    return "\n".join(lines + common.train_step_lines(t))


def data_parallel_lines(record: dict[str, Any]) -> list[str]:
    """The data-parallel comparison, then the step tables on N devices and on one."""
    p, t, one = record["data_parallel"], record["train_step"], record["single_device"]
    n, batch = p["devices"], p["batch_per_device"]
    lines = [f"`{p['distribution']}` over {n} JAX devices (ids {p['device_ids']}, {p['device_kind']}), batch "
             f"{batch} per device, global batch {p['global_batch']}; the single-device figures are the same "
             f"per-device batch on device {p['device_ids'][0]} alone, measured first in the same process.", ""]
    if p["virtual_host_devices"]:
        lines += [f"**Virtual devices**: these {n} devices are virtual host devices, XLA's split of this host's CPU "
                  f"(--xla_force_host_platform_device_count), sharing its {record['host']['cpu_cores']} cores; their "
                  "images/s say nothing about a TPU's or a GPU's. This run only shows that the data-parallel step "
                  "works.", ""]
    rows = [[name, n, p["global_batch"], f"{p[name]['images_per_s']:.1f}", f"{p[name]['images_per_s_per_device']:.1f}",
             f"{p[name]['single_device_images_per_s']:.1f}", f"**{p[name]['scaling_efficiency']:.3f}**"]
            for name in common.MODELS]
    header = ["model", "devices", "global batch", "images/s, all devices", "images/s per device",
              f"images/s on one device (batch {batch})", "scaling efficiency"]
    return (lines + common.table(header, "lrrrrrr", rows) + ["", f"{p['scaling_formula']}.", "",
            f"## On {n} devices (global batch {t['batch_size']})", ""] + common.train_step_lines(t)
            + [f"## On one device (batch {one['batch_size']})", ""] + common.train_step_lines(one))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse flags, choose the backend, run, write the JSON and markdown records, print the markdown."""
    args = parse_args(argv)
    record = run(args)
    json_path, md_path = common.write_record(record, to_markdown(record), args.out, args.name or record_stem(record))
    print(to_markdown(record))
    print(f"wrote {json_path} and {md_path}", flush=True)
    return record


if __name__ == "__main__":
    main()
