"""Evaluation: the robustness transforms and table, and P(fake) of a model on arrays and datasets."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest

from utils.evaluation import (
    ROBUSTNESS_GRID,
    TRANSFORMS,
    blur_images,
    collect_predictions,
    jpeg_images,
    noise_images,
    predict_proba,
    rescale_images,
    robustness_table,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def smooth_images(n: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """Face-like test batch: smooth gradients plus mild texture, float32 in 0..255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([120 + 80 * np.sin(3 * xx + k) * np.cos(2 * yy - k) for k in range(3)], axis=-1)
    return np.clip(base[None] + rng.normal(0, 12, (n, size, size, 3)), 0, 255).astype(np.float32)


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared neighbour difference: large for sharp / noisy images, small for blurred ones."""
    return float(np.mean(np.diff(images, axis=1) ** 2) + np.mean(np.diff(images, axis=2) ** 2))


# ------------------------------------------------------------------ robustness transforms

def test_transform_grid_is_complete():
    assert set(TRANSFORMS) == set(ROBUSTNESS_GRID)
    x = smooth_images(2)
    for name, severities in ROBUSTNESS_GRID.items():
        for severity in severities:
            out = TRANSFORMS[name](x, severity)
            assert out.shape == x.shape and out.dtype == np.float32
            assert out.min() >= 0 and out.max() <= 255
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        blur_images(np.zeros((8, 8, 3)), 1)


def test_jpeg_stronger_compression_changes_more():
    x = smooth_images()
    err = {q: np.abs(jpeg_images(x, q) - x).mean() for q in (100, 90, 30)}
    assert err[30] > err[90] > 0
    assert err[100] <= err[90]
    assert np.array_equal(jpeg_images(x, 50), jpeg_images(x, 50))  # deterministic


def test_blur_identity_monotone_and_low_pass():
    from scipy.ndimage import gaussian_filter

    x = smooth_images()
    assert np.array_equal(blur_images(x, 0), x)
    blurred = {s: blur_images(x, s) for s in (0.5, 1, 3)}
    change = {s: np.abs(b - x).mean() for s, b in blurred.items()}
    assert change[3] > change[1] > change[0.5] > 0
    energy = {s: high_frequency_energy(b) for s, b in blurred.items()}
    assert high_frequency_energy(x) > energy[0.5] > energy[1] > energy[3]
    # Same result as scipy's reference filter (mirror edges, 4-sigma kernel), also with the kernel as wide as the
    # image allows (radius 4 on 5 px; wider kernels are cut to the image, utils.degradation.gaussian_blur).
    for images, sigma in ((x, 2), (smooth_images(1, size=5), 1)):
        reference = gaussian_filter(images.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="reflect", truncate=4.0)
        assert np.allclose(blur_images(images, sigma), reference, atol=1e-2)
    # A constant image stays constant (the kernel sums to one, the edges are mirrored).
    flat = np.full((1, 9, 9, 3), 77.0, dtype=np.float32)
    assert np.allclose(blur_images(flat, 2), 77.0, atol=1e-3)


def test_rescale_identity_and_monotone():
    x = smooth_images()
    assert np.array_equal(rescale_images(x, 1), x)
    err = {f: np.abs(rescale_images(x, f) - x).mean() for f in (0.75, 0.5, 0.25)}
    assert err[0.25] > err[0.5] > err[0.75] > 0
    assert rescale_images(smooth_images(1, size=30), 0.25).shape == (1, 30, 30, 3)  # odd sizes round-trip
    with pytest.raises(ValueError, match="factor"):
        rescale_images(x, 2)


def test_noise_identity_range_and_std():
    x = np.full((2, 64, 64, 3), 128.0, dtype=np.float32)
    assert np.array_equal(noise_images(x, 0), x)
    noisy = noise_images(x, 10, seed=1)
    assert np.std(noisy - x) == pytest.approx(10, rel=0.05)
    assert abs(np.mean(noisy - x)) < 0.5
    assert np.array_equal(noisy, noise_images(x, 10, seed=1))
    assert not np.array_equal(noisy, noise_images(x, 10, seed=2))
    extreme = noise_images(smooth_images(), 200)
    assert extreme.min() == 0 and extreme.max() == 255


def test_robustness_table_shape_and_values():
    x = smooth_images(6)
    y = np.array([0, 1, 0, 1, 0, 1])
    # Dummy detector that ignores the pixels and always knows the answer: accuracy and AUC 1 at every severity.
    seen = []
    predict = lambda images: seen.append(images.shape) or np.where(y == 1, 0.9, 0.1)  # noqa: E731
    table = robustness_table(predict, x, y)
    assert list(table.columns) == ["transform", "severity", "accuracy", "roc_auc"]
    assert len(table) == sum(len(v) for v in ROBUSTNESS_GRID.values())
    assert table["transform"].unique().tolist() == list(ROBUSTNESS_GRID)
    assert (table["accuracy"] == 1.0).all() and (table["roc_auc"] == 1.0).all()
    assert seen == [x.shape] * len(table)  # the whole transformed batch, once per severity
    # A detector that reads pixel noise: clean images sit at P(fake) 0, sigma 20 pushes them over the threshold.
    noisy = robustness_table(lambda im: np.clip(np.abs(im - x).mean(axis=(1, 2, 3)) / 10, 0, 1), x, y,
                             grid={"noise_sigma": [0, 20]})
    assert noisy["severity"].tolist() == [0, 20]
    assert noisy["accuracy"].tolist() == [0.5, 0.5]  # all real at sigma 0, all fake at sigma 20
    with pytest.raises(ValueError, match="unknown transform"):
        robustness_table(predict, x, y, grid={"sharpen": [1]})


# ------------------------------------------------------------------ predictions

@pytest.fixture(scope="module")
def toy_model():
    """A keras model whose P(fake) is a fixed function of the mean pixel (softmax of [0, mean/255 - 0.5] * 8)."""
    import keras

    inputs = keras.Input((4, 4, 3))
    mean = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255.0)(inputs))
    logits = keras.layers.Dense(2, kernel_initializer=keras.initializers.Constant([[-8 / 3, 8 / 3]] * 3),
                                bias_initializer=keras.initializers.Constant([4.0, -4.0]))(mean)
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def test_predict_proba_and_collect_predictions(toy_model):
    import tensorflow as tf

    x = np.stack([np.full((4, 4, 3), v, dtype=np.float32) for v in np.linspace(0, 255, 10)])
    y = (np.linspace(0, 255, 10) > 127).astype(int)
    expected = 1 / (1 + np.exp(-(np.linspace(0, 1, 10) - 0.5) * 16))
    p = predict_proba(toy_model, x, batch_size=3)
    assert p.shape == (10,) and np.allclose(p, expected, atol=1e-5)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    assert np.allclose(predict_proba(toy_model, dataset), expected, atol=1e-5)
    y_seen, p_seen = collect_predictions(toy_model, dataset)
    assert y_seen.tolist() == y.tolist() and np.allclose(p_seen, expected, atol=1e-5)
    # One-hot labels and a reshuffling dataset still keep each label with its own prediction.
    shuffled = tf.data.Dataset.from_tensor_slices((x, np.eye(2)[y])).shuffle(10, seed=0).batch(3)
    y_seen, p_seen = collect_predictions(toy_model, shuffled)
    assert sorted(y_seen.tolist()) == sorted(y.tolist())
    assert ((p_seen > 0.5) == (y_seen == 1)).all()


