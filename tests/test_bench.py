"""Smoke test of benchmarks/bench.py on tiny inputs (structure and positive numbers only, never speed), of what it
shares with benchmarks/train_step.py (benchmarks/common.py: FLOP count, tables, records) and of train_step's flags and
records under TensorFlow, and of the input pipeline's decode-time JPEG downscaling that the benchmark measures.
train_step under JAX and PyTorch, with TensorFlow absent, is run by tests/test_backends.py."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench, common, train_step
from utils import data, pipeline


def _numbers(value):
    """Every int/float leaf of a JSON-like record, except load averages (0 on an idle machine)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not key.startswith("load_"):
                yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory):
    """40 benchmark JPEGs of 64 px in real/ and fake/ class folders."""
    root = tmp_path_factory.mktemp("bench-jpegs")
    paths, labels = bench.make_jpegs(root, 40, image_size=64)
    return root, paths, labels


def test_make_jpegs_writes_two_class_folders_and_reuses_them(jpegs):
    root, paths, labels = jpegs
    assert len(paths) == 40 and sorted(set(labels)) == [0, 1] and labels.count(1) == 20
    assert all(Path(p).is_file() and Path(p).parent.name == ("fake" if y else "real") for p, y in zip(paths, labels))
    before = Path(paths[0]).stat().st_mtime_ns
    assert bench.make_jpegs(root, 40, image_size=64) == (paths, labels)
    assert Path(paths[0]).stat().st_mtime_ns == before  # existing files are not rewritten


def test_benchmark_parts_and_report_on_tiny_sizes(jpegs, tmp_path):
    root, paths, labels = jpegs
    pipelines = bench.bench_pipelines(root, paths, labels, image_size=32, batch_size=8, epochs=1)
    assert set(pipelines["variants"]) == set(bench.PIPELINES)
    assert pipelines["jpeg_ratio"] == 2  # 64-px sources, 32-px target
    assert all(len(v["epochs_images_per_s"]) == 2 for v in pipelines["variants"].values())
    assert set(pipelines["ratios"]) >= {"ours/keras warm", "ours/keras cold"}
    train_step = bench.bench_train_step(image_size=32, batch_size=2, steps=2, warmup=1)
    assert {"leakyrelu", "stock_relu", "ratio_leakyrelu_over_stock"} <= set(train_step)
    # Keras' ResNet50 costs 3.86 GMAC per 224-px image (He et al.: 3.8 x 10^9 multiply-adds), 49 times less at 32 px.
    assert 3.8 < train_step["forward_gmac_per_image"] * 49 < 3.9
    assert train_step["leakyrelu"]["jit_compile"] is False  # TensorFlow: no XLA on a CPU, nor for RandomRotation
    end_to_end = bench.bench_end_to_end(paths[:16], labels[:16], image_size=32, batch_size=4, steps=2,
                                        steps_per_execution=(1, 2))
    assert set(end_to_end["fit"]) == {"steps_per_execution=1", "steps_per_execution=2"}
    if not _has_gpu():
        assert end_to_end["default_steps_per_execution"] == 1
    gpu = bench.bench_gpus(paths, labels, image_size=32, batch_size=2, steps=2) if not _has_gpu() else {"skipped": "-"}
    assert "skipped" in gpu

    record = {"machine": bench.machine(), "args": {"images": len(paths)}, "load_start": bench.load(),
              "load_end": bench.load(), "peak_rss_mb": bench.peak_rss_mb(), "pipelines": [pipelines],
              "train_step": train_step, "end_to_end": end_to_end, "gpu": gpu}
    json_path, md_path = bench.write_results(record, tmp_path / "out")
    assert json_path.name == f"{record['machine']['device']}.json" and md_path.suffix == ".md"
    loaded = json.loads(json_path.read_text())
    numbers = list(_numbers([loaded[key] for key in ("pipelines", "train_step", "end_to_end")]))
    assert len(numbers) > 20 and all(n > 0 for n in numbers)
    assert loaded["peak_rss_mb"] > 0
    markdown = md_path.read_text()
    for heading in ("## 1. Input pipeline", "## 2. Train step", "## 3. End to end", "## 4. GPU", "Skipped",
                    "GFLOP per image and step", "| stock_relu |"):
        assert heading in markdown
    assert markdown.count("| 32 | ours |") == 1


def test_main_writes_json_and_markdown(jpegs, tmp_path):
    record = bench.main(["--images", "12", "--sizes", "32", "--batch", "4", "--epochs", "1",
                         "--skip", "train_step", "end_to_end", "gpu", "--cache-dir", str(tmp_path / "cache"),
                         "--out", str(tmp_path / "out"), "--device-name", "test-device"])
    assert (tmp_path / "out" / "test-device.json").is_file() and (tmp_path / "out" / "test-device.md").is_file()
    assert record["machine"]["cpu_cores"] > 0 and record["total_seconds"] > 0 and "train_step" not in record


# ---------------------------------------------------------------------------------------------- common, train_step


def test_forward_macs_counts_conv_and_dense_multiply_accumulates():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)  # 4x4x4 outputs, 3x3x3 inputs each
    x = keras.layers.Conv2D(4, 1, groups=2)(x)  # 4x4x4 outputs, 1x1x2 inputs each
    x = keras.layers.BatchNormalization()(keras.layers.GlobalAveragePooling2D()(x))  # not counted
    x = keras.Sequential([keras.layers.Dense(3)])(x)  # nested: 3 outputs, 4 inputs each
    model = keras.Model(inputs, keras.layers.Dense(2)(x))  # 2 outputs, 3 inputs each
    assert common.forward_macs(model) == 4 * 4 * 4 * 27 + 4 * 4 * 4 * 2 + 3 * 4 + 2 * 3


def test_table_and_record_files(tmp_path):
    assert common.table(["a", "b", "c"], "lrc", [[1, "x", True]]) == ["| a | b | c |", "|---|---:|:---:|",
                                                                       "| 1 | x | True |"]
    with pytest.raises(ValueError, match="3 columns"):
        common.table(["a", "b", "c"], "lr", [])
    with pytest.raises(ValueError, match="3 columns"):
        common.table(["a", "b", "c"], "lrc", [[1, 2]])
    json_path, md_path = common.write_record({"a": 1}, "# A", tmp_path / "out", "stem")
    assert json.loads(json_path.read_text()) == {"a": 1} and md_path.read_text() == "# A\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["stem.json", "stem.md"]  # no temporary left


def _stub_result(image_size: int, batch_size: int, steps: int, warmup: int, seed: int) -> dict:
    """What common.bench_train_step returns, with made-up timings."""
    model = {"median_step_s": 0.5, "min_step_s": 0.4, "first_step_s": 9.0, "images_per_s": batch_size / 0.5,
             "achieved_gflop_per_s": 1.0, "jit_compile": False, "optimizer": "Adam"}
    return {"image_size": image_size, "batch_size": batch_size, "steps": steps, "warmup_steps": warmup,
            "load_before": [0, 0, 0], "load_after": [0, 0, 0], "alpha": 0.2, "forward_gmac_per_image": 0.3,
            "train_gflop_per_image": 1.8, "flop_formula": common.FLOP_FORMULA, "leakyrelu": model,
            "stock_relu": {**model, "median_step_s": 0.25}, "ratio_leakyrelu_over_stock": 2.0}


def test_train_step_main_records_device_precision_and_ratio(tmp_path, monkeypatch):
    import keras

    seen = {}

    def stub(*args):
        seen["args"], seen["policy"] = args, keras.mixed_precision.dtype_policy().name
        return _stub_result(*args)

    monkeypatch.setattr(common, "bench_train_step", stub)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # main sets it; monkeypatch puts back what was there
    record = train_step.main(["--backend", "tensorflow", "--precision", "mixed_bfloat16", "--out", str(tmp_path),
                              "--notes", "a shared machine"])
    assert seen == {"args": (*train_step.CPU_DEFAULTS, common.SEED), "policy": "mixed_bfloat16"}
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored for the rest of the process
    assert record["device"] == {"platform": "cpu", "name": "cpu", "count": common.cpu_cores(),
                                "backend_version": record["device"]["backend_version"], "label": "cpu"}
    assert record["tensorflow_loaded"] is True and record["args"]["image_size"] == train_step.CPU_DEFAULTS[0]
    stem = "train-step-cpu-tensorflow-mixed_bfloat16"
    assert json.loads((tmp_path / f"{stem}.json").read_text())["train_step"]["ratio_leakyrelu_over_stock"] == 2.0
    markdown = (tmp_path / f"{stem}.md").read_text()
    for text in ("# Train step: tensorflow on cpu", "precision mixed_bfloat16", "Notes: a shared machine",
                 "ratio: **2.000**", "| leakyrelu | 0.5000 | 16.0 | 1.0 | False | 9.0 |"):
        assert text in markdown


def test_train_step_refuses_a_backend_other_than_the_loaded_one(tmp_path):
    import keras  # loaded here on TensorFlow, whatever ran before in this process

    assert keras.backend.backend() == "tensorflow"
    with pytest.raises(RuntimeError, match="--backend jax: keras is already imported here with backend 'tensorflow'"):
        train_step.main(["--backend", "jax", "--out", str(tmp_path)])


@pytest.mark.parametrize("flag, value, expected", [("--image-size", "16", ">= 32"), ("--batch-size", "0", ">= 1"),
                                                   ("--steps", "two", ">= 1"), ("--backend", "mxnet", "choose from")])
def test_train_step_rejects_bad_flags(capsys, flag, value, expected):
    with pytest.raises(SystemExit):
        train_step.parse_args([flag, value])
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and expected in err


def test_train_step_devices_need_jax_and_as_many_devices_as_asked(capsys, monkeypatch):
    for flags in (["--devices", "2"], ["--virtual-devices", "2"]):
        with pytest.raises(SystemExit):
            train_step.parse_args(["--backend", "tensorflow", *flags])
        assert "need --backend jax" in capsys.readouterr().err
    device = SimpleNamespace(platform="cpu", device_kind="cpu")
    monkeypatch.setattr(train_step, "jax_devices", lambda: [device, device])  # what JAX would see: 2 devices
    with pytest.raises(SystemExit):
        train_step.parse_args(["--backend", "jax", "--devices", "4"])
    assert "error: --devices 4: JAX sees 2 devices (cpu: cpu)\n" in capsys.readouterr().err
    monkeypatch.setattr(train_step, "use_virtual_devices", lambda count: None)  # as if JAX had started before
    with pytest.raises(SystemExit):
        train_step.parse_args(["--backend", "jax", "--virtual-devices", "4", "--devices", "4"])
    assert "not the 4 that --virtual-devices asked" in capsys.readouterr().err
    assert train_step.parse_args(["--backend", "jax", "--devices", "2"]).devices == 2
    assert train_step.parse_args(["--backend", "tensorflow", "--devices", "1"]).devices == 1  # the default: any


@pytest.mark.slow  # about a minute: four ResNet50 compiles under JAX
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_train_step_data_parallel_on_two_virtual_devices(tmp_path):
    command = [sys.executable, "-m", "benchmarks.train_step", "--backend", "jax", "--virtual-devices", "2",
               "--devices", "2", "--precision", "mixed_bfloat16", "--image-size", "32", "--batch-size", "1",
               "--steps", "1", "--warmup", "1", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stem = "train-step-cpu-jax-mixed_bfloat16-2dev"
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    p, many, one = record["data_parallel"], record["train_step"], record["single_device"]
    assert (p["devices"], p["batch_per_device"], p["global_batch"], p["virtual_host_devices"]) == (2, 1, 2, True)
    assert record["precision"] == "mixed_bfloat16" and (many["batch_size"], one["batch_size"]) == (2, 1)
    # DataParallel split the batch over both devices and copied the weights to both; the single run used one.
    assert (many["batch_devices"], many["weight_devices"], one["batch_devices"], one["weight_devices"]) == (2, 2, 1, 1)
    for name in common.MODELS:
        m = p[name]
        assert min(m["images_per_s"], m["images_per_s_per_device"], m["single_device_images_per_s"],
                   m["scaling_efficiency"]) > 0
        assert m["images_per_s"] == pytest.approx(2 / many[name]["median_step_s"], abs=0.051)
        assert m["single_device_images_per_s"] == pytest.approx(1 / one[name]["median_step_s"], abs=0.051)
        assert m["scaling_efficiency"] == pytest.approx(one[name]["median_step_s"] / many[name]["median_step_s"],
                                                        abs=1e-3)
    markdown = (tmp_path / f"{stem}.md").read_text()
    for text in ("data parallel over 2 devices", "global batch 2", "images/s per device",
                 "images/s on one device (batch 1)", "scaling efficiency", "virtual host devices",
                 f"**{p['leakyrelu']['scaling_efficiency']:.3f}**", "say nothing about a TPU"):
        assert text in markdown


def test_device_labels_are_file_name_safe():
    assert train_step._label("cpu", "cpu") == "cpu"
    assert train_step._label("gpu", "NVIDIA H100 80GB HBM3") == "gpu-H100-80GB-HBM3"
    assert train_step._label("gpu", "Tesla T4") == "gpu-T4"
    assert train_step._label("tpu", "TPU v5 lite") == "tpu-TPU-v5-lite"


# ---------------------------------------------------------------------------------------------- decode ratio


def test_jpeg_ratio_is_chosen_from_each_jpeg_alone(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (256, 256), (200, 10, 10)).save(big, quality=90)
    small = tmp_path / "small.jpg"
    Image.new("RGB", (120, 160), (200, 10, 10)).save(small, quality=90)
    png = tmp_path / "big.png"
    Image.new("RGB", (512, 512)).save(png)
    assert [pipeline.file_jpeg_ratio(str(big), s) for s in (32, 64, 100, 128, 129, 224)] == [8, 4, 2, 2, 1, 1]
    assert pipeline.file_jpeg_ratio(str(small), 32) == 2  # its 120-px side
    assert pipeline.file_jpeg_ratio(str(png), 32) == 1 and pipeline.file_jpeg_ratio(str(tmp_path / "no.jpg"), 32) == 1
    # Each decoded at its own ratio: the big JPEG's 1/8 decode is 32 px, the small one's 1/2 decode 60 x 80.
    for path, side in ((big, 32), (small, 60)):
        assert int(pipeline._decode(str(path), 32).shape[1]) == side


def test_downscaled_decode_matches_full_decode_and_keeps_png_working(tmp_path):
    from utils import synthetic

    jpg = tmp_path / "face.jpg"
    jpg.write_bytes(synthetic.encode_jpeg(synthetic.make_image(0, False, image_size=256), quality=95))
    png = tmp_path / "face.png"
    Image.open(jpg).save(png)
    split = data.Split([str(jpg), str(png)], [0, 1])
    assert pipeline.file_jpeg_ratio(split.paths[0], 64) == 4
    (images, _), = list(pipeline.make_dataset(split, 64, 2, training=False))
    images = images.numpy()
    # the JPEG went through the DCT-scaled decode, the PNG through decode_image + area resize: same picture
    assert np.abs(images[0] - images[1]).mean() < 4.0
    reference = np.asarray(Image.open(jpg).convert("RGB").resize((64, 64), Image.BOX), dtype=np.float32)
    assert np.abs(images[0] - reference).mean() < 4.0
