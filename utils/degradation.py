"""Degradation: train-time Gaussian blur, JPEG re-encoding, downscale-then-upscale and Gaussian noise, per image.

Unlike the four augmentation layers (utils.augmentation), which run inside the model on whole batches, these run in
the tf.data input pipeline (utils.pipeline.make_dataset) on single images before batching, because JPEG re-encoding is a
per-image op that is not a Keras layer. They touch the training split only, never validation, test or prediction.
Every probability is 0 by default, so the study's protocol is unchanged; Wang et al. (CVPR 2020) trained with blur
sigma in [0, 3] and JPEG quality 30..100, each with probability 0.5.

Determinism: each image draws from stateless random ops keyed by (an epoch key, its index in the split). The epoch
key comes from tf.data.Dataset.random(seed) re-drawn on every pass over the data, so the same seed gives the same
degraded images epoch by epoch whatever order the images arrive in, and each epoch degrades them afresh.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from utils.figures import finish, new_figure

# Applied in this order, each with its own probability: the resampling and blur an image picks up on its way, then
# noise, then JPEG last, because a shared image is compressed when it is saved, after everything else happened to it.
DEGRADATIONS = ("rescale", "blur", "noise", "jpeg")
PROBABILITY = {"rescale": "rescale_prob", "blur": "blur_prob", "noise": "noise_prob", "jpeg": "jpeg_prob"}
STRENGTH = {"rescale": "rescale_range", "blur": "blur_sigma", "noise": "noise_sigma", "jpeg": "jpeg_quality"}
# The train notebook's degradation parameters and their defaults (all off).
DEFAULT_DEGRADATION: dict[str, Any] = {"blur_prob": 0.0, "blur_sigma": [0.0, 3.0], "jpeg_prob": 0.0,
                                       "jpeg_quality": [30, 100], "rescale_prob": 0.0, "rescale_range": [0.5, 1.0],
                                       "noise_prob": 0.0, "noise_sigma": [0.0, 10.0]}
# Range parameter -> (smallest low, largest high, element type, what it holds). A blur wider than 10 px or noise
# beyond 50 grey levels no longer resembles anything a real image goes through; a 0.1 rescale of 224 px leaves 22 px.
RANGES: dict[str, tuple[float, float, type, str]] = {
    "blur_sigma": (0.0, 10.0, float, "Gaussian sigmas in pixels"),
    "jpeg_quality": (1, 100, int, "integer JPEG qualities"),
    "rescale_range": (0.1, 1.0, float, "scale factors"),
    "noise_sigma": (0.0, 50.0, float, "noise standard deviations in grey levels (0..255 scale)"),
}
# Below this sigma the blur kernel is a unit impulse (its off-centre weights underflow to exactly 0): the identity.
MIN_SIGMA = 1e-3
EXAMPLE_STEPS = 3  # strengths per degradation in the example figure, from the range's mildest to its harshest


def valid_range(name: str, value: Any) -> bool:
    """Whether `value` is a [low, high] pair of the range parameter `name` within its bounds."""
    lowest, highest, kind, _ = RANGES[name]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return False
    kinds = (int,) if kind is int else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, kinds) for v in value):
        return False
    low, high = value
    return lowest <= low <= high <= highest  # False for NaN too


def range_expected(name: str) -> str:
    """What the range parameter `name` must hold, for error messages."""
    lowest, highest, _, what = RANGES[name]
    return f"[low, high] {what} with {lowest:g} <= low <= high <= {highest:g}"


def normalise_range(name: str, value: Any) -> list:
    """A checked range as a JSON-friendly list of its element type (floats, or ints for JPEG quality)."""
    return [RANGES[name][2](v) for v in value]


def config(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The degradation parameters of `params` (defaults where missing), or None when every probability is 0."""
    chosen = {name: params.get(name, default) for name, default in DEFAULT_DEGRADATION.items()}
    return chosen if active(chosen) else None


def active(params: Mapping[str, Any]) -> bool:
    """Whether any degradation has a probability above 0."""
    return any(float(params.get(PROBABILITY[name], 0.0) or 0.0) > 0 for name in DEGRADATIONS)


# ---------------------------------------------------------------------------------------------- ops (one image)
# Each takes a float32 [H, W, 3] image in 0..255 (static H and W) and returns one of the same shape and range.


def gaussian_blur(image: Any, sigma: Any, max_sigma: float | None = None) -> Any:
    """Separable Gaussian blur of std `sigma` px as depthwise convolutions, edges mirrored; sigma 0 is the identity.

    The kernel's radius must be static in a tf.data graph: 4 x max_sigma (the range's high end; sigma itself when
    it is a number), at most the image's side less one so the mirrored padding exists (scipy's "reflect"). The
    robustness test (utils.evaluation.blur_images) calls this same op.
    """
    import tensorflow as tf

    image = tf.convert_to_tensor(image, tf.float32)
    height, width = image.shape[0], image.shape[1]
    if height is None or width is None:
        raise ValueError("gaussian_blur needs an image of static height and width (crop or resize it first)")
    reach = float(sigma) if max_sigma is None else float(max_sigma)
    radius = max(1, min(math.ceil(4 * reach), height - 1, width - 1))
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(offsets / tf.maximum(tf.cast(sigma, tf.float32), MIN_SIGMA)))
    kernel = kernel / tf.reduce_sum(kernel)
    taps = tf.tile(kernel[:, None, None, None], [1, 1, 3, 1])  # [k, 1, channels, 1]: one kernel per channel
    x = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    x = tf.nn.depthwise_conv2d(x, taps, strides=[1, 1, 1, 1], padding="VALID")
    x = tf.nn.depthwise_conv2d(x, tf.transpose(taps, [1, 0, 2, 3]), strides=[1, 1, 1, 1], padding="VALID")
    return tf.clip_by_value(x[0], 0.0, 255.0)


def jpeg(image: Any, quality: Any) -> Any:
    """Encode as JPEG at `quality` (1..100, libjpeg with 4:2:0 chroma like PIL's default) and decode again."""
    import tensorflow as tf

    pixels = tf.cast(tf.clip_by_value(tf.round(tf.convert_to_tensor(image, tf.float32)), 0.0, 255.0), tf.uint8)
    return tf.cast(tf.image.adjust_jpeg_quality(pixels, tf.cast(quality, tf.int32)), tf.float32)


def rescale(image: Any, factor: Any) -> Any:
    """Downscale by `factor` in (0, 1] (bilinear, antialiased) and upscale back (bilinear); factor 1 is the identity."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image, tf.float32)
    size = tf.shape(image)[:2]
    small = tf.maximum(1, tf.cast(tf.round(tf.cast(size, tf.float32) * tf.cast(factor, tf.float32)), tf.int32))

    def resample() -> Any:
        down = tf.image.resize(image, small, method="bilinear", antialias=True)
        return tf.clip_by_value(tf.image.resize(down, size, method="bilinear"), 0.0, 255.0)

    return tf.cond(tf.reduce_all(small >= size), lambda: image, resample)


def gaussian_noise(image: Any, sigma: Any, seed: Any) -> Any:
    """Add i.i.d. Gaussian noise of std `sigma` grey levels (stateless, from `seed`, shape [2]) and clip to 0..255."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image, tf.float32)
    noise = tf.random.stateless_normal(tf.shape(image), seed) * tf.cast(sigma, tf.float32)
    return tf.clip_by_value(image + noise, 0.0, 255.0)


def apply(name: str, image: Any, strength: Any, seed: Any = (0, 0), max_strength: float | None = None) -> Any:
    """One degradation at a given strength (blur sigma, JPEG quality, rescale factor or noise sigma)."""
    if name == "blur":
        return gaussian_blur(image, strength, max_sigma=max_strength)
    if name == "jpeg":
        return jpeg(image, strength)
    if name == "rescale":
        return rescale(image, strength)
    if name == "noise":
        return gaussian_noise(image, strength, seed)
    raise ValueError(f"unknown degradation {name!r}; expected one of {', '.join(DEGRADATIONS)}")


def degrade(image: Any, key: Any, settings: Mapping[str, Any]) -> Any:
    """One training image's degradations: each with its probability, at a strength uniform in its range; uint8 out.

    Every draw comes from stateless ops keyed by `key` (shape [2] int64): the same key gives the same image. The
    result is rounded to uint8 as a saved degraded image would be, so the pipeline's element type does not change.
    """
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    key = tf.cast(key, tf.int64)
    for number, name in enumerate(DEGRADATIONS):
        probability = float(settings[PROBABILITY[name]])
        if probability <= 0:
            continue  # decided while building the graph: an off degradation costs nothing
        low, high = settings[STRENGTH[name]]
        draw, pick, noise = tf.unstack(tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(key, number), 3))
        if name == "jpeg":
            strength = tf.random.stateless_uniform([], pick, minval=int(low), maxval=int(high) + 1, dtype=tf.int32)
        else:
            strength = tf.random.stateless_uniform([], pick, minval=float(low), maxval=float(high))
        image = _maybe(tf.random.stateless_uniform([], draw) < probability, name, image, strength, noise, float(high))
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def _maybe(condition: Any, name: str, image: Any, strength: Any, seed: Any, max_strength: float) -> Any:
    """The degraded image when `condition` holds, else the image itself (a graph branch, so skipped work is not done)."""
    import tensorflow as tf

    degraded = tf.cond(condition, lambda: apply(name, image, strength, seed, max_strength), lambda: image)
    return tf.ensure_shape(degraded, image.shape)


def example_strengths(name: str, settings: Mapping[str, Any], steps: int = EXAMPLE_STEPS) -> list:
    """`steps` strengths spread over a degradation's range, mildest first (highest quality or scale, lowest sigma)."""
    low, high = settings[STRENGTH[name]]
    values = np.linspace(float(low), float(high), steps)
    if name in ("jpeg", "rescale"):
        values = values[::-1]  # a lower quality or scale is the harsher one
    return [int(round(v)) for v in values] if name == "jpeg" else [round(float(v), 3) for v in values]


def plot_examples(images: Any, settings: Mapping[str, Any], path: Any = None, steps: int = EXAMPLE_STEPS) -> Any:
    """Each training image beside each switched-on degradation at `steps` strengths over its range (saved, shown)."""
    images = np.asarray(images, dtype=np.float32)
    names = [name for name in DEGRADATIONS if float(settings.get(PROBABILITY[name], 0.0) or 0.0) > 0]
    if not names or not len(images):
        raise ValueError("plot_examples needs at least one image and one degradation with a probability above 0")
    symbol = {"blur": "sigma", "jpeg": "quality", "rescale": "factor", "noise": "sigma"}
    figure, axes = new_figure(len(names) * len(images), steps + 1, size=(1.7, 1.8))
    for row, (name, image) in enumerate((n, i) for n in names for i in images):
        panels = [("original", image)]
        panels += [(f"{name} {symbol[name]} {s:g}", apply(name, image, s, seed=(row, 0)).numpy())
                   for s in example_strengths(name, settings, steps)]
        for ax, (title, panel) in zip(axes[row], panels):
            ax.imshow(np.clip(np.rint(panel), 0, 255).astype(np.uint8))
            ax.set_title(title if title != "original" else f"original (p {settings[PROBABILITY[name]]:g})",
                         fontsize=8)
            ax.set_axis_off()
    figure.suptitle("train-time degradations (training split only), mildest to harshest of each range")
    finish(figure, path)
    return figure
