"""Tests for utils.pipeline: decode, resize and crop, cache budget, shuffling, and batches split over replicas."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from utils import data, pipeline
from utils.data import DataError, Split


@pytest.fixture(scope="module")
def mixed_split(tmp_path_factory) -> data.Split:
    """Images of mixed sizes, modes and formats (incl. grayscale and RGBA PNG, PNG bytes named .jpg)."""
    root = tmp_path_factory.mktemp("mixed")
    paths = [
        write_image(root / "a_rgb.jpg", 1, size=24),
        write_image(root / "b_gray.png", 2, size=12, mode="L"),
        write_image(root / "c_rgba.png", 3, size=16, mode="RGBA"),
        write_image(root / "d_png_named.jpg", 4, size=16, fmt="PNG"),
        write_image(root / "e_rgb.png", 5, size=16),
    ]
    return data.Split([str(p) for p in paths], [0, 1, 0, 1, 1])


def test_make_dataset_val_shapes_dtypes_and_order(mixed_split):
    ds = pipeline.make_dataset(mixed_split, image_size=16, batch_size=2, training=False, cache=False)
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [2, 2, 1]  # remainder kept
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32 and labels.tolist() == mixed_split.labels
    assert 0.0 <= images.min() and images.max() <= 255.0 and images.max() > 1.0
    # already 16x16 images are not resampled: pixels equal PIL's RGB conversion, in path order
    for i in (2, 3, 4):
        expected = np.asarray(Image.open(mixed_split.paths[i]).convert("RGB"), dtype=np.float32)
        np.testing.assert_array_equal(images[i], expected)
    gray = images[1]  # grayscale replicated into 3 identical channels
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])
    np.testing.assert_array_equal(gray[..., 0], gray[..., 2])


def test_make_dataset_resizes_up_and_down(tmp_path):
    solid = tmp_path / "solid.png"
    Image.new("RGB", (40, 40), (10, 120, 250)).save(solid)
    for size in (8, 64):
        (images, _), = list(pipeline.make_dataset(data.Split([str(solid)], [1]), size, 4, training=False))
        assert images.shape == (1, size, size, 3)
        np.testing.assert_allclose(images.numpy()[0], np.broadcast_to([10, 120, 250], (size, size, 3)), atol=1)


def test_make_dataset_training_shuffles_and_keeps_every_image(mixed_split):
    split = data.Split(mixed_split.paths * 4, list(range(20)))  # labels used as ids
    ds = pipeline.make_dataset(split, image_size=8, batch_size=3, training=True, seed=0, cache=True)
    epochs = [np.concatenate([b[1].numpy() for b in ds]).tolist() for _ in range(2)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(20))
    assert epochs[0] != list(range(20)) and epochs[0] != epochs[1]  # shuffled, reshuffled after the cache


def _batch_sizes_and_ids(ds) -> tuple[list[int], list[list[int]]]:
    """Each batch's size and the image ids in it (the first pixel of each image holds its id)."""
    batches = [element[0].numpy() if isinstance(element, tuple) else element.numpy() for element in ds]
    return [len(b) for b in batches], [b[:, 0, 0, 0].astype(int).tolist() for b in batches]


@pytest.mark.parametrize("n", [1, 3, 5, 8, 9, 15])
def test_fill_batches_gives_two_replicas_equal_shares_and_keeps_every_image(n):
    """Training on 2 replicas (batches of 4): each batch even and non-empty, the step count kept, every image in,
    at most one repeated (from its own batch), labels travelling with their images."""
    import tensorflow as tf

    images = np.arange(n, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, np.arange(n, dtype=np.int32))).batch(4)
    filled = pipeline.fill_batches(ds, 2)
    assert int(filled.cardinality()) == -(-n // 4)  # known: Keras sees the epoch end where it ends
    sizes, ids = _batch_sizes_and_ids(filled)
    assert all(size % 2 == 0 and size >= 2 for size in sizes), sizes
    assert sorted(set(i for batch in ids for i in batch)) == list(range(n))
    assert sum(sizes) - n == n % 2
    for batch, original in zip(ids, [list(range(n))[i:i + 4] for i in range(0, n, 4)]):
        assert batch[:len(original)] == original and set(batch) == set(original)
    labels = [int(v) for _, y in filled for v in y.numpy()]
    assert labels == [i for batch in ids for i in batch]
    assert _batch_sizes_and_ids(pipeline.fill_batches(ds.map(lambda x, y: x), 2))[1] == ids  # images alone


@pytest.mark.parametrize("n", [1, 3, 5, 8, 9])
def test_pad_batches_adds_blank_images_that_the_mask_drops(n):
    """Prediction on 2 replicas (batches of 4): even batches; `real` keeps exactly the images, in order."""
    import tensorflow as tf

    images = (np.arange(n, dtype=np.float32) + 1)[:, None, None, None] * np.ones((1, 2, 2, 3), np.float32)
    one_hot = np.eye(2, dtype=np.float32)[np.arange(n) % 2]
    padded = list(pipeline.pad_batches(tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(4), 2))
    assert [len(x) % 2 for x, _, _ in padded] == [0] * -(-n // 4)
    kept = np.concatenate([x.numpy()[real.numpy()] for x, _, real in padded])
    assert np.array_equal(kept, images)
    pads = np.concatenate([x.numpy()[~real.numpy()] for x, _, real in padded])
    assert len(pads) == n % 2 and not pads.any()  # blank
    labels = np.concatenate([y.numpy()[real.numpy()] for _, y, real in padded])
    assert np.array_equal(labels, one_hot)
    alone = list(pipeline.pad_batches(tf.data.Dataset.from_tensor_slices(images).batch(4), 2))
    assert all(not y.numpy().any() for _, y, _ in alone) and sum(int(r.numpy().sum()) for *_, r in alone) == n


def test_load_images_matches_make_dataset(mixed_split):
    loaded = pipeline.load_images(mixed_split.paths, image_size=20)
    from_ds = np.concatenate([b[0].numpy() for b in pipeline.make_dataset(mixed_split, 20, 2, training=False)])
    assert loaded.shape == (5, 20, 20, 3) and loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, from_ds)
    assert pipeline.load_images([], 20).shape == (0, 20, 20, 3)


def test_cache_decision_budget(monkeypatch):
    monkeypatch.setattr(pipeline, "_available_ram", lambda: 1_000_000_000)
    assert pipeline.cache_decision(1000, 224) is True  # 150 MB < 400 MB
    assert pipeline.cache_decision(10_000, 224) is False  # 1.5 GB
    monkeypatch.setattr(pipeline, "_available_ram", lambda: None)
    assert pipeline.cache_decision(1, 8) is False
    monkeypatch.undo()
    assert pipeline._available_ram() > 0 and pipeline.cache_decision(10, 8) is True


def _checkerboard(path: Path, width: int, height: int) -> Path:
    """A 1-pixel black/white checkerboard PNG (all its energy at the finest scale)."""
    board = ((np.indices((height, width)).sum(axis=0) % 2) * 255).astype(np.uint8)
    Image.fromarray(np.repeat(board[..., None], 3, axis=2)).save(path)
    return path


def _coordinates(path: Path, width: int, height: int) -> Path:
    """A PNG whose red channel is the column and green channel the row, so a crop tells where it was cut."""
    rows, cols = np.indices((height, width))
    Image.fromarray(np.stack([cols, rows, np.zeros_like(rows)], axis=2).astype(np.uint8)).save(path)
    return path


def test_crop_keeps_native_pixels_where_resize_smooths_them(tmp_path):
    board = str(_checkerboard(tmp_path / "board.png", 64, 64))
    source = np.asarray(Image.open(board).convert("RGB"), dtype=np.float32)
    cropped = pipeline.load_images([board], 32, resize_mode="crop")[0]
    np.testing.assert_array_equal(cropped, source[16:48, 16:48])  # the centre window, pixel for pixel
    resized = pipeline.load_images([board], 32, resize_mode="resize")[0]
    assert resized.std() < 1 and cropped.std() > 120  # resizing averaged the checkerboard away


def test_centre_crop_is_central_and_deterministic(tmp_path):
    path = str(_coordinates(tmp_path / "coords.png", width=48, height=40))
    first, again = (pipeline.load_images([path], 32, resize_mode="crop")[0] for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert (first[0, 0, 0], first[0, 0, 1]) == (8, 4)  # left (48-32)/2, top (40-32)/2
    np.testing.assert_array_equal(first[0, :, 0], np.arange(8, 40))  # native scale: one column per pixel


def _training_corners(split: Split, seed: int, epochs: int = 2) -> list[tuple[int, int]]:
    """(column, row) of the top-left pixel of each training crop, per epoch."""
    ds = pipeline.make_dataset(split, 32, 1, training=True, seed=seed, cache=True, resize_mode="crop")
    corners = []
    for _ in range(epochs):
        for images, _ in ds:
            image = images.numpy()[0]
            np.testing.assert_array_equal(image[0, :, 0], image[0, 0, 0] + np.arange(32))  # an unscaled window
            corners.append((int(image[0, 0, 0]), int(image[0, 0, 1])))
    return corners


def test_random_training_crop_varies_with_seed_and_epoch(tmp_path):
    split = Split([str(_coordinates(tmp_path / "coords.png", width=96, height=80))], [0])
    first, again, other = (_training_corners(split, seed) for seed in (3, 3, 4))
    assert first == again  # same seed, same crops epoch by epoch
    assert first[0] != first[1] and first != other  # a new crop every epoch, other crops for another seed
    assert all(0 <= col <= 96 - 32 and 0 <= row <= 80 - 32 for col, row in first + other)


def test_crop_enlarges_small_images_keeping_aspect(tmp_path):
    square = str(write_image(tmp_path / "small.png", 1, size=16))
    # a square image smaller than S: enlarged to S, nothing to crop, so it equals the resize
    np.testing.assert_array_equal(pipeline.load_images([square], 32, "crop"), pipeline.load_images([square], 32, "resize"))
    tall = tmp_path / "tall.png"
    Image.new("RGB", (16, 24), (200, 30, 60)).save(tall)  # 16 wide, 24 high: becomes 32 x 48, then cropped
    image = pipeline.load_images([str(tall)], 32, "crop")[0]
    assert image.shape == (32, 32, 3)
    np.testing.assert_allclose(image, np.broadcast_to([200, 30, 60], (32, 32, 3)), atol=1)
    ds = pipeline.make_dataset(Split([str(tall)], [0]), 32, 1, training=True, seed=0, resize_mode="crop")
    assert next(iter(ds))[0].shape == (1, 32, 32, 3)


def test_crop_mode_never_uses_the_jpeg_decode_downscale(tmp_path):
    path = tmp_path / "coords.jpg"
    Image.open(_coordinates(tmp_path / "coords.png", width=128, height=128)).save(path, quality=100)
    assert pipeline.file_jpeg_ratio(str(path), 32) == 4  # what resize mode decodes this JPEG with
    cropped = pipeline.load_images([str(path)], 32, "crop")[0]
    # the centre of the full-scale decode: columns 48..79 one by one (a 1/4 decode would step by 4)
    np.testing.assert_allclose(cropped[16, :, 0], np.arange(48, 80), atol=3)
    np.testing.assert_allclose(cropped[:, 16, 1], np.arange(48, 80), atol=3)


def test_resize_mode_is_checked_and_read_from_a_run_record():
    with pytest.raises(DataError, match="resize_mode must be one of 'resize', 'crop', got 'pad'"):
        pipeline.load_images([], 32, resize_mode="pad")
    assert pipeline.run_resize_mode({"alpha": 0.2}) == "resize"  # recorded before resize_mode existed
    assert pipeline.run_resize_mode(None) == "resize" and pipeline.run_resize_mode({"resize_mode": "crop"}) == "crop"


def test_cache_budget_counts_whole_images_when_training_crops(tmp_path, monkeypatch):
    split = Split([str(write_image(tmp_path / f"{i}.png", i, size=256)) for i in range(4)], [0, 1, 0, 1])
    # room for 4 x 32 x 32 x 3 bytes but not for 4 x 256 x 256 x 3
    monkeypatch.setattr(pipeline, "_available_ram", lambda: int(4 * 64 * 64 * 3 / pipeline.CACHE_RAM_FRACTION))
    assert pipeline.cache_fits(split, 32, "resize", training=True) is True
    assert pipeline.cache_fits(split, 32, "crop", training=False) is True  # centre crops are S x S
    assert pipeline.cache_fits(split, 32, "crop", training=True) is False
