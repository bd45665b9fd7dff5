"""Smoke test of benchmarks/bench.py on tiny inputs (structure and positive numbers only, never speed), and of the
input pipeline's decode-time JPEG downscaling that the benchmark measures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmarks import bench
from utils import data


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
    for heading in ("## 1. Input pipeline", "## 2. Train step", "## 3. End to end", "## 4. GPU", "Skipped"):
        assert heading in markdown
    assert markdown.count("| 32 | ours |") == 1


def test_main_writes_json_and_markdown(jpegs, tmp_path):
    record = bench.main(["--images", "12", "--sizes", "32", "--batch", "4", "--epochs", "1",
                         "--skip", "train_step", "end_to_end", "gpu", "--cache-dir", str(tmp_path / "cache"),
                         "--out", str(tmp_path / "out"), "--device-name", "test-device"])
    assert (tmp_path / "out" / "test-device.json").is_file() and (tmp_path / "out" / "test-device.md").is_file()
    assert record["machine"]["cpu_cores"] > 0 and record["total_seconds"] > 0 and "train_step" not in record


# ---------------------------------------------------------------------------------------------- decode ratio


def test_jpeg_ratio_is_chosen_from_the_smallest_sampled_jpeg(tmp_path):
    big = tmp_path / "big.jpg"
    Image.new("RGB", (256, 256), (200, 10, 10)).save(big, quality=90)
    small = tmp_path / "small.jpg"
    Image.new("RGB", (120, 160), (200, 10, 10)).save(small, quality=90)
    png = tmp_path / "big.png"
    Image.new("RGB", (512, 512)).save(png)
    assert [data.jpeg_ratio([str(big)], s) for s in (32, 64, 100, 128, 129, 224)] == [8, 4, 2, 2, 1, 1]
    assert data.jpeg_ratio([str(big), str(small)], 32) == 2  # bounded by the 120-px side
    assert data.jpeg_ratio([str(png)], 32) == 1 and data.jpeg_ratio([], 32) == 1
    assert data.jpeg_ratio([str(tmp_path / "missing.jpg")], 32) == 1


def test_downscaled_decode_matches_full_decode_and_keeps_png_working(tmp_path):
    from utils import synthetic

    jpg = tmp_path / "face.jpg"
    jpg.write_bytes(synthetic.encode_jpeg(synthetic.make_image(0, False, image_size=256), quality=95))
    png = tmp_path / "face.png"
    Image.open(jpg).save(png)
    split = data.Split([str(jpg), str(png)], [0, 1])
    assert data.jpeg_ratio(split.paths, 64) == 4
    (images, _), = list(data.make_dataset(split, 64, 2, training=False))
    images = images.numpy()
    # the JPEG went through the DCT-scaled decode, the PNG through decode_image + area resize: same picture
    assert np.abs(images[0] - images[1]).mean() < 4.0
    reference = np.asarray(Image.open(jpg).convert("RGB").resize((64, 64), Image.BOX), dtype=np.float32)
    assert np.abs(images[0] - reference).mean() < 4.0
