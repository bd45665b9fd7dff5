"""Augmentation: the study's four Keras layers, applied to whole batches inside the model (training only).

The train-time degradations are per-image operations of the input pipeline instead (utils.degradation says why).
"""
from __future__ import annotations

import keras
import numpy as np

# The study's augmentation; each factor is a papermill parameter, 0 or None switches its layer off.
DEFAULT_AUGMENTATION = {"flip": "horizontal", "rotation": 0.1, "zoom": 0.1, "contrast": 0.1}


def build_augmentation(flip: str | None = "horizontal", rotation: float | None = 0.1, zoom: float | None = 0.1,
                       contrast: float | None = 0.1, seed: int | None = None) -> keras.Sequential:
    """RandomFlip, RandomRotation, RandomZoom, RandomContrast; layers are active only when training=True.

    Each layer draws from its own stream, seeded by stream_seed(seed, its position among the four): a Keras layer
    steps its own SeedGenerator(seed) from [seed, 0], so one shared seed would give every layer the same uniforms and
    tie, say, the flip to the sign of the rotation angle. None leaves each layer unseeded (Keras seeds each anew).
    """
    def own(position: int) -> int | None:
        return None if seed is None else stream_seed(seed, position)

    layers = []
    if flip:
        layers.append(keras.layers.RandomFlip(flip, seed=own(0), name="random_flip"))
    if rotation:
        # Constant fill: reflections would copy the face's own texture into the corners.
        layers.append(keras.layers.RandomRotation(rotation, fill_mode="constant", seed=own(1), name="random_rotation"))
    if zoom:
        layers.append(keras.layers.RandomZoom(zoom, fill_mode="constant", seed=own(2), name="random_zoom"))
    if contrast:
        # Inputs are raw pixels, so the contrast layer must clip to 0..255, not 0..1. Keras 3 reads a single float
        # factor c as (0, c): it would only ever raise contrast, [1, 1 + c]; the pair draws from [1 - c, 1 + c], as
        # tf.keras' RandomContrast(c) did in the study (checked on Keras 3.13.2 and 3.15.1).
        layers.append(keras.layers.RandomContrast((contrast, contrast), value_range=(0, 255), seed=own(3),
                                                  name="random_contrast"))
    return allow_jit(keras.Sequential(layers, name="augmentation"))


def stream_seed(*keys: int) -> int:
    """A seed in [0, 2**31) for the random stream that `keys` name; different keys give unrelated seeds.

    SeedSequence hashes the keys, so neighbouring keys (seed 42's second layer, seed 43's first) never share a stream,
    as seed + position would make them.
    """
    return int(np.random.SeedSequence([int(key) for key in keys]).generate_state(1)[0] >> 1)


def allow_jit(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Under JAX, mark the RandomRotation and RandomZoom layers in `layer` (a model or a layer) compilable; returns it.

    Keras sets their supports_jit to False on every backend, for TensorFlow's XLA, which cannot compile their
    projective transform; under JAX that one flag would run every train step of the model op by op. Their JAX ops
    trace under jax.jit (tests/test_backends.py checks jitted == eager). Elsewhere a no-op. Cloning or loading a model
    builds fresh layers, so utils.model applies it to what it builds and loads.
    """
    if keras.backend.backend() == "jax":
        pending = [layer]
        while pending:
            current = pending.pop()
            if isinstance(current, (keras.layers.RandomRotation, keras.layers.RandomZoom)):
                current.supports_jit = True
            pending.extend(getattr(current, "layers", []))
    return layer
