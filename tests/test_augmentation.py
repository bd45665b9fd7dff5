"""Augmentation: each of the four layers draws from its own stream (reproducible from the seed)."""
import itertools

import keras
import numpy as np
import pytest

from utils.augmentation import build_augmentation, stream_seed

IMAGES = 512  # enough that a real dependence between two layers' draws shows: |r| of independent draws ~ 0.04


def transformation_draws(layer: keras.layers.Layer, images) -> object:
    """One number per image of what the layer draws for it: flip 0/1, rotation angle (radians), zoom, contrast factor."""
    from keras import ops

    transformation = layer.get_random_transformation(images, training=True)
    if isinstance(layer, keras.layers.RandomFlip):
        return ops.cast(ops.reshape(transformation["flips"], (-1,)), "float32")
    if isinstance(layer, keras.layers.RandomRotation):
        matrix = ops.cast(transformation["rotation_matrix"], "float32")  # [a0, a1, a2, b0, ...]: a0 = cos, b0 = sin
        return ops.arctan2(matrix[:, 3], matrix[:, 0])
    if isinstance(layer, keras.layers.RandomZoom):
        return ops.cast(ops.reshape(transformation["height_zoom"], (-1,)), "float32")
    return ops.cast(ops.reshape(transformation["contrast_factor"], (-1,)), "float32")


def _draws(seed: int) -> dict[str, np.ndarray]:
    """Each layer's draws for IMAGES images, called in the stack's order as its call does."""
    stack = build_augmentation(seed=seed)
    images = np.zeros((IMAGES, 8, 8, 3), dtype="float32")
    return {layer.name: keras.ops.convert_to_numpy(transformation_draws(layer, images)) for layer in stack.layers}


def test_the_four_layers_draw_independently_and_reproducibly():
    draws = _draws(42)
    assert list(draws) == ["random_flip", "random_rotation", "random_zoom", "random_contrast"]
    for name, values in draws.items():
        assert values.shape == (IMAGES,) and values.std() > 0, name
    assert 0.4 < draws["random_flip"].mean() < 0.6
    for (a, x), (b, y) in itertools.combinations(draws.items(), 2):
        r = np.corrcoef(x, y)[0, 1]
        assert abs(r) < 0.15, f"{a} and {b} draw dependently: correlation {r:.3f} over {IMAGES} images"
    again = _draws(42)
    for name in draws:
        np.testing.assert_array_equal(again[name], draws[name], err_msg=f"{name} is not reproducible from the seed")
    assert not np.array_equal(_draws(43)["random_rotation"], draws["random_rotation"])


def test_stream_seeds_are_distinct_for_neighbouring_keys():
    seeds = {stream_seed(seed, position) for seed in range(50) for position in range(4)}
    assert len(seeds) == 200 and all(0 <= s < 2**31 for s in seeds)
    assert stream_seed(42, 1) == stream_seed(42, 1)
    with pytest.raises(ValueError):
        stream_seed(-1)


def test_each_layer_draws_over_its_whole_symmetric_range():
    """A factor f means [-f, f] of rotation and zoom and a contrast factor in [1 - f, 1 + f] (Keras 3's own reading
    of a single contrast factor is [1, 1 + f], which would only ever raise contrast)."""
    draws = _draws(42)
    turn = draws["random_rotation"] / (2 * np.pi)
    assert -0.1 <= turn.min() < -0.08 and 0.08 < turn.max() <= 0.1
    assert 0.9 <= draws["random_zoom"].min() < 0.92 and 1.08 < draws["random_zoom"].max() <= 1.1
    assert 0.9 <= draws["random_contrast"].min() < 0.92 and 1.08 < draws["random_contrast"].max() <= 1.1
