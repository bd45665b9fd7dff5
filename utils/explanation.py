"""Explanation: Grad-CAM heatmaps of the fake/real decision, overlays, and picking which images to explain."""
from __future__ import annotations

import os
from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from utils.figures import finish, new_figure
from utils.metrics import check_scores
from utils.model import gradcam_layer

GROUPS = ("true_real", "true_fake", "false_real", "false_fake")


def _gradient_tape():
    """TensorFlow's GradientTape: Keras 3 has no backend-agnostic gradient API, so Grad-CAM needs the TF backend's."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"grad_cam needs the TensorFlow Keras backend, this session runs {keras.backend.backend()!r}")
    import tensorflow as tf

    return tf.GradientTape()


def _grad_model(model: keras.Model, layer_name: str) -> tuple[keras.Model, keras.layers.Layer | None]:
    """Sub-model mapping the inputs to (feature maps, head input or output) and the softmax Dense head if there is one."""
    try:
        features = model.get_layer(layer_name).output
    except ValueError as error:
        raise ValueError(f"model {model.name!r} has no layer {layer_name!r} to take Grad-CAM feature maps from") from error
    head = model.layers[-1]
    if isinstance(head, keras.layers.Dense) and head.get_config().get("activation") == "softmax":
        # Gradients of the logits, not of the softmax: a confident softmax saturates (p == 1.0) and its gradient vanishes.
        return keras.Model(model.inputs, [features, head.input]), head
    return keras.Model(model.inputs, [features, model.output]), None


def _class_score(outputs, head: keras.layers.Layer | None, class_index: int):
    """Log-odds of class `class_index`: log p_c - log(1 - p_c), from logits when the softmax head is known."""
    if head is not None:
        logits = ops.matmul(ops.cast(outputs, head.kernel.dtype), head.kernel)
        if head.use_bias:
            logits = logits + head.bias
    else:
        probs = ops.clip(ops.cast(outputs, "float32"), 1e-7, 1.0)
        if probs.shape[-1] == 1:  # a sigmoid head: class 1 is the output, class 0 its complement
            probs = ops.concatenate([1.0 - probs, probs], axis=-1)
        logits = ops.log(probs)
    logits = ops.cast(logits, "float32")
    others = ops.concatenate([logits[:, :class_index], logits[:, class_index + 1:]], axis=-1)
    # For two classes this is z_fake - z_real, the quantity the decision actually thresholds.
    return logits[:, class_index] - ops.logsumexp(others, axis=-1)


def _normalise(cams: np.ndarray) -> np.ndarray:
    """Scale each map to 0..1 by its maximum; a map with no positive evidence stays all zero (never NaN)."""
    peaks = cams.reshape(len(cams), -1).max(axis=1).reshape(-1, *([1] * (cams.ndim - 1)))
    safe = np.where(peaks > 0, peaks, 1.0)
    return np.where(peaks > 0, cams / safe, 0.0).astype(np.float32)


def grad_cam(model: keras.Model, images: Any, layer_name: str | None = None, class_index: int = 1,
             batch_size: int = 16) -> np.ndarray:
    """Grad-CAM heatmaps [N, H, W] in 0..1 at the input resolution for class `class_index` (default 1 = fake).

    layer_name None: utils.model.gradcam_layer, the deepest map with at least 7x7 cells at the model's input size.
    """
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"images must be a batch shaped [N, H, W, C], got shape {x.shape}")
    n_classes = int(model.output.shape[-1])
    if not 0 <= class_index < max(n_classes, 2):
        raise ValueError(f"class_index must be in 0..{max(n_classes, 2) - 1}, got {class_index}")
    grad_model, head = _grad_model(model, layer_name or gradcam_layer(model)[0])
    height, width = x.shape[1:3]
    maps = []
    for start in range(0, len(x), batch_size):
        batch = ops.convert_to_tensor(x[start:start + batch_size])
        with _gradient_tape() as tape:
            # training=False keeps the model's augmentation layers inactive (and BatchNorm in inference mode).
            features, outputs = grad_model(batch, training=False)
            score = _class_score(outputs, head, class_index)
        grads = tape.gradient(score, features)
        features = ops.cast(features, "float32")
        weights = ops.mean(ops.cast(grads, "float32"), axis=(1, 2), keepdims=True)  # [B, 1, 1, K]
        cam = ops.relu(ops.sum(weights * features, axis=-1))  # [B, h, w]
        cam = _normalise(ops.convert_to_numpy(cam))
        upsampled = ops.image.resize(cam[..., None], (height, width), interpolation="bilinear")
        maps.append(np.clip(ops.convert_to_numpy(upsampled)[..., 0], 0.0, 1.0))
    return np.concatenate(maps).astype(np.float32)


def overlay(image: Any, heatmap: Any, opacity: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Blend a 0..1 heatmap (coloured with `cmap`) over an RGB image in 0..255; returns uint8 [H, W, 3]."""
    import matplotlib

    img = np.asarray(image, dtype=np.float32)
    heat = np.asarray(heatmap, dtype=np.float32)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be one RGB image [H, W, 3], got shape {img.shape}")
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be [H, W], got shape {heat.shape}")
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}")
    if heat.shape != img.shape[:2]:
        heat = ops.convert_to_numpy(ops.image.resize(heat[..., None], img.shape[:2], interpolation="bilinear"))[..., 0]
    colour = matplotlib.colormaps[cmap](np.clip(heat, 0, 1))[..., :3] * 255.0
    blended = (1.0 - opacity) * img + opacity * colour
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def plot_gradcam_grid(images: Any, heatmaps: Any, titles: Sequence[str] | None = None,
                      path: str | os.PathLike | None = None, ncols: int = 4, opacity: float = 0.4):
    """Grid of Grad-CAM overlays, saved as PNG at `path` when given and shown in the notebook."""
    images = np.asarray(images)
    heatmaps = np.asarray(heatmaps)
    if len(images) != len(heatmaps):
        raise ValueError(f"images and heatmaps must pair up, got {len(images)} images and {len(heatmaps)} heatmaps")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"titles must have one entry per image, got {len(titles)} for {len(images)} images")
    if len(images) == 0:
        raise ValueError("plot_gradcam_grid needs at least one image")
    ncols = max(1, min(ncols, len(images)))
    nrows = -(-len(images) // ncols)
    fig, axes = new_figure(nrows, ncols, size=(2.6, 2.8))
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(images):
            ax.imshow(overlay(images[i], heatmaps[i], opacity=opacity))
            if titles is not None:
                ax.set_title(titles[i], fontsize=9)
    finish(fig, path)
    return fig


def select_examples(y_true: Any, p_fake: Any, threshold: float = 0.5, per_group: int = 2) -> dict[str, list[int]]:
    """Indices of the most confident `per_group` images in each group: true_real, true_fake, false_real, false_fake.

    false_real = a fake predicted real, false_fake = a real predicted fake; prediction is fake when P(fake) >= threshold.
    Correct groups are ranked by confidence in the right class, mistakes by confidence in the wrong one.
    """
    y, p = check_scores(y_true, p_fake)
    pred = p >= threshold
    # Key of each group: which images belong, and the sort key (ascending) that puts the most confident first.
    groups = {
        "true_real": ((y == 0) & ~pred, p),
        "true_fake": ((y == 1) & pred, -p),
        "false_real": ((y == 1) & ~pred, p),
        "false_fake": ((y == 0) & pred, -p),
    }
    selected = {}
    for name, (member, key) in groups.items():
        idx = np.flatnonzero(member)
        order = idx[np.argsort(key[idx], kind="stable")]
        selected[name] = [int(i) for i in order[:per_group]]
    return selected


def most_confident_mistakes(y_true: Any, p_fake: Any, k: int = 8, threshold: float = 0.5) -> np.ndarray:
    """Indices of up to `k` misclassified images, most probability on the wrong class first."""
    y, p = check_scores(y_true, p_fake)
    wrong = (p >= threshold).astype(np.int64) != y
    wrong_prob = np.where(y == 1, 1.0 - p, p)  # probability the model gave the wrong class
    idx = np.flatnonzero(wrong)
    return idx[np.argsort(-wrong_prob[idx], kind="stable")][:k]
