"""Grad-CAM on a tiny model trained to find a planted square; overlays, grids and example selection."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure

from utils.explanation import grad_cam, most_confident_mistakes, overlay, plot_gradcam_grid, select_examples

SIZE, SQUARE = 32, 8


def planted_squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dark noise images; class 1 (fake) carries a bright SQUARE x SQUARE patch at a random place. Returns x, y, corners."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 100, (n, SIZE, SIZE, 3)).astype(np.float32)
    y = np.arange(n) % 2
    corners = rng.integers(0, SIZE - SQUARE + 1, (n, 2))
    for i in np.flatnonzero(y == 1):
        r, c = corners[i]
        x[i, r:r + SQUARE, c:c + SQUARE] = 255.0
    return x, y, corners


def square_mask(corner: np.ndarray) -> np.ndarray:
    """Boolean [SIZE, SIZE] mask of the planted square."""
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[corner[0]:corner[0] + SQUARE, corner[1]:corner[1] + SQUARE] = True
    return mask


def tiny_model(zero_features: bool = False) -> keras.Model:
    """Raw pixels in, augmentation + rescaling inside (like the real model), two convs, GAP, 2-way softmax."""
    inputs = keras.Input((SIZE, SIZE, 3))
    # If Grad-CAM ran the model with training=True this flip would move the heatmap off the square half the time.
    x = keras.layers.RandomFlip("horizontal_and_vertical", seed=0)(inputs)
    x = keras.layers.Rescaling(1 / 255.0)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    init = "zeros" if zero_features else "glorot_uniform"
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=init, name="target_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def trained():
    """A tiny model trained (seeded, ~2 s on CPU) to tell planted squares from plain noise, and held-out images."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    x, y, _ = planted_squares(256, seed=0)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    x_test, y_test, corners = planted_squares(32, seed=1)
    return model, x_test, y_test, corners


def test_trained_model_solves_the_task(trained):
    model, x, y, _ = trained
    accuracy = (model.predict(x, verbose=0).argmax(axis=1) == y).mean()
    assert accuracy >= 0.9  # otherwise the localisation test below would say nothing about Grad-CAM


def test_grad_cam_shape_and_range(trained):
    model, x, _, _ = trained
    maps = grad_cam(model, x, layer_name="target_conv", batch_size=7)  # uneven batches on purpose
    assert maps.shape == (len(x), SIZE, SIZE)
    assert maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isclose(maps.max(axis=(1, 2)), 1.0, atol=0.05).sum() >= len(x) - 2  # each map normalised by its peak


def test_grad_cam_lights_up_the_planted_square(trained):
    model, x, y, corners = trained
    fakes = np.flatnonzero(y == 1)
    maps = grad_cam(model, x[fakes], layer_name="target_conv", class_index=1)
    hits = 0
    for heat, corner in zip(maps, corners[fakes]):
        mask = square_mask(corner)
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        inside, outside = heat[mask].mean(), heat[~mask].mean()
        hits += bool(inside > 2 * outside and mask[peak])
    assert hits >= 0.8 * len(fakes)


def test_grad_cam_real_class_does_not_point_at_the_square(trained):
    model, x, y, corners = trained
    fakes = np.flatnonzero(y == 1)
    fake_maps = grad_cam(model, x[fakes], layer_name="target_conv", class_index=1)
    real_maps = grad_cam(model, x[fakes], layer_name="target_conv", class_index=0)
    masks = np.stack([square_mask(c) for c in corners[fakes]])
    # The square is evidence for "fake", so it must carry less of the "real" map than of the "fake" map.
    assert real_maps[masks].mean() < fake_maps[masks].mean()


def test_grad_cam_all_zero_map_stays_zero():
    keras.utils.set_random_seed(0)
    model = tiny_model(zero_features=True)
    x, _, _ = planted_squares(4, seed=2)
    maps = grad_cam(model, x, layer_name="target_conv")
    assert maps.shape == (4, SIZE, SIZE)
    assert np.isfinite(maps).all() and (maps == 0).all()


def test_grad_cam_bad_layer_name(trained):
    model, x, _, _ = trained
    with pytest.raises(ValueError, match="no_such_layer"):
        grad_cam(model, x[:2], layer_name="no_such_layer")


@pytest.fixture(scope="module")
def project_model():
    """build_model(alpha=0.2, image_size=size, weights=None, seed=0), built once per size for the module."""
    from utils.model import build_model

    cache = {}

    def get(size):
        if size not in cache:
            cache[size] = build_model(alpha=0.2, image_size=size, weights=None, seed=0)
        return cache[size]

    return get


def test_grad_cam_on_the_project_model(project_model):
    model = project_model(64)
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    maps = grad_cam(model, x)  # default layer: the deepest map with >= 7x7 cells
    assert maps.shape == (2, 64, 64)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


@pytest.mark.parametrize("size, layer, cells", [(32, "conv2_block3_out", 8), (64, "conv3_block4_out", 8),
                                                (224, "conv5_block3_out", 7)])
def test_gradcam_layer_has_at_least_7x7_cells_at_the_image_size(size, layer, cells, project_model):
    """conv5_block3_out is 2x2 at 64 px: the chosen layer is the deepest block output that keeps >= 7x7."""
    from utils.model import GRADCAM_MIN_CELLS, gradcam_layer

    model = project_model(size)
    name, shape = gradcam_layer(model)
    assert (name, shape) == (layer, (cells, cells)) and min(shape) >= GRADCAM_MIN_CELLS
    assert tuple(model.get_layer(name).output.shape[1:3]) == shape
    # Nothing deeper qualifies: every later layer's map is smaller than 7x7 (or not a map at all).
    later = model.layers[[layer.name for layer in model.layers].index(name) + 1:]
    assert all(len(layer_.output.shape) != 4 or min(layer_.output.shape[1:3]) < GRADCAM_MIN_CELLS for layer_ in later)


def test_gradcam_layer_on_other_models():
    from utils.model import gradcam_layer

    assert gradcam_layer(tiny_model()) == ("target_conv", (SIZE, SIZE))  # GAP after it: the last map
    inputs = keras.Input((6, 6, 3))
    small = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(inputs))))
    with pytest.raises(ValueError, match="7x7"):
        gradcam_layer(small)


def test_overlay_blends_and_returns_uint8():
    image = np.full((8, 8, 3), 100.0, dtype=np.float32)
    heat = np.zeros((8, 8), dtype=np.float32)
    heat[:4] = 1.0
    out = overlay(image, heat, opacity=0.4)
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert not np.array_equal(out[0, 0], out[7, 7])  # hot and cold halves get different colours
    assert np.array_equal(overlay(image, heat, opacity=0.0), image.astype(np.uint8))
    assert overlay(image, np.zeros((4, 4)), opacity=0.5).shape == (8, 8, 3)  # heatmap resized to the image


def test_plot_gradcam_grid_writes_png(tmp_path):
    x, _, _ = planted_squares(5, seed=3)
    heat = np.random.default_rng(0).uniform(0, 1, (5, SIZE, SIZE))
    path = tmp_path / "nested" / "gradcam.png"
    fig = plot_gradcam_grid(x, heat, titles=[f"#{i}" for i in range(5)], path=path, ncols=3)
    assert isinstance(fig, Figure)
    assert len([ax for ax in fig.axes if ax.images]) == 5
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_examples_groups():
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.3, 0.05, 0.9, 0.6, 0.99, 0.8, 0.2, 0.7, 0.45])
    chosen = select_examples(y, p, threshold=0.5, per_group=2)
    assert chosen == {
        "true_real": [2, 0],    # reals predicted real, most confident (lowest P(fake)) first
        "true_fake": [5, 3],    # fakes predicted fake, highest P(fake) first
        "false_real": [7, 9],   # fakes predicted real, most confidently wrong first
        "false_fake": [6, 8],   # reals predicted fake, most confidently wrong first
    }
    assert select_examples(y, p, per_group=1)["true_real"] == [2]
    assert select_examples(y, p, threshold=0.95)["true_fake"] == [5]


def test_most_confident_mistakes():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.9, 0.2, 0.05, 0.8, 0.6, 0.4])
    # Mistakes: 0 (wrong prob 0.9), 2 (0.95), 4 (0.6), 5 (0.6); ties keep index order.
    assert most_confident_mistakes(y, p, k=8).tolist() == [2, 0, 4, 5]
    assert most_confident_mistakes(y, p, k=2).tolist() == [2, 0]
    assert most_confident_mistakes([0, 1], [0.1, 0.9]).tolist() == []
