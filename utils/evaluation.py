"""Evaluation of a trained model: P(fake) on a split (on every replica of its strategy), and under the robustness
test's degradations of image quality."""
from __future__ import annotations

import weakref
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from utils import metrics

# Each grid key names a transform in TRANSFORMS; the first value of every list is its mildest setting: the unchanged
# image for blur 0, rescale 1 and noise 0, but for JPEG a quality-100 re-encode with 4:2:0 chroma subsampling
# (jpeg_images), which already halves the colour resolution: JPEG's reference point, not the original file.
ROBUSTNESS_GRID: dict[str, list[float]] = {
    "jpeg_quality": [100, 90, 70, 50, 30],
    "blur_sigma": [0, 0.5, 1, 2, 3],
    "rescale_factor": [1, 0.75, 0.5, 0.25],
    "noise_sigma": [0, 2, 5, 10, 20],
}


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------

def _check_images(images: Any, name: str = "images") -> np.ndarray:
    """Validated float32 batch [N, H, W, 3]."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be a batch of RGB images shaped [N, H, W, 3], got shape {x.shape}")
    return x


# ----------------------------------------------------------------------------------------------------------------
# Robustness transforms: float32 [N, H, W, 3] in 0..255 in, a new float32 batch of the same shape out.
# ----------------------------------------------------------------------------------------------------------------

def _degrade_each(name: str, images: Any, strength: float, seed: int = 0) -> np.ndarray:
    """Apply the train-time op `name` (utils.degradation) to every image of a batch: one implementation for both."""
    from utils import degradation

    x = _check_images(images)
    out = [degradation.apply(name, image, strength, seed=(int(seed), i)).numpy() for i, image in enumerate(x)]
    return np.stack(out).astype(np.float32) if out else x.copy()


def jpeg_images(images: Any, quality: int) -> np.ndarray:
    """Encode each image as JPEG at `quality` (1..100, 4:2:0 chroma like PIL's default) and decode it."""
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be in 1..100, got {quality}")
    return _degrade_each("jpeg", images, int(quality))


def blur_images(images: Any, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of standard deviation `sigma` pixels over H and W; sigma 0 returns the input unchanged."""
    x = _check_images(images)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return x.copy() if sigma == 0 else _degrade_each("blur", x, float(sigma))


def rescale_images(images: Any, factor: float) -> np.ndarray:
    """Downscale by `factor` (0 < factor <= 1, bilinear with antialiasing) and upscale back; factor 1 is the identity."""
    x = _check_images(images)
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor}")
    return x.copy() if factor == 1 else _degrade_each("rescale", x, float(factor))


def noise_images(images: Any, sigma: float, seed: int = 0) -> np.ndarray:
    """Add i.i.d. Gaussian noise of std `sigma` (0..255 scale, seeded) and clip to 0..255; sigma 0 is the identity."""
    x = _check_images(images)
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    return x.copy() if sigma == 0 else _degrade_each("noise", x, float(sigma), seed)


# The robustness test degrades with the very ops training may degrade with (utils.degradation), so a blur sigma or a
# JPEG quality means the same thing in both.
TRANSFORMS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "jpeg_quality": jpeg_images,
    "blur_sigma": blur_images,
    "rescale_factor": rescale_images,
    "noise_sigma": noise_images,
}


def robustness_table(predict_fn: Callable[[np.ndarray], Any], images: Any, labels: Any,
                     grid: Mapping[str, Iterable[float]] = ROBUSTNESS_GRID, threshold: float = 0.5) -> pd.DataFrame:
    """Accuracy and ROC AUC of `predict_fn(images) -> P(fake)` under every transform and severity of `grid`."""
    x = _check_images(images)
    y = np.asarray(labels)
    if len(y) != len(x):
        raise ValueError(f"labels must have one entry per image, got {len(y)} labels for {len(x)} images")
    unknown = set(grid) - set(TRANSFORMS)
    if unknown:
        raise ValueError(f"grid has unknown transform(s) {sorted(unknown)}; expected keys of TRANSFORMS {sorted(TRANSFORMS)}")
    rows = []
    for name, severities in grid.items():
        for severity in severities:
            p = np.asarray(predict_fn(TRANSFORMS[name](x, severity)), dtype=np.float64).reshape(-1)
            scores = metrics.binary_metrics(y, p, threshold)
            rows.append({"transform": name, "severity": severity, "accuracy": scores["accuracy"],
                         "roc_auc": scores["roc_auc"]})
    return pd.DataFrame(rows, columns=["transform", "severity", "accuracy", "roc_auc"])


# ----------------------------------------------------------------------------------------------------------------
# Model predictions
# ----------------------------------------------------------------------------------------------------------------

def _p_fake(outputs: Any) -> np.ndarray:
    """P(fake) from model outputs: column 1 of a [B, 2] softmax, or a [B] / [B, 1] sigmoid as is."""
    out = np.asarray(outputs, dtype=np.float32)
    if out.ndim == 2 and out.shape[1] == 2:
        return out[:, 1]
    if out.ndim == 1 or (out.ndim == 2 and out.shape[1] == 1):
        return out.reshape(-1)
    raise ValueError(f"model output must be a [B, 2] softmax or a [B] / [B, 1] sigmoid, got shape {out.shape}")


def model_replicas(model: Any) -> int:
    """Replicas the model computes on: its tf.distribute strategy's, under JAX Keras' distribution's (1 without one,
    or for a non-Keras model)."""
    import keras

    if not isinstance(model, keras.Model):
        return 1
    if keras.backend.backend() == "jax":
        from utils.accelerator import replica_count

        return replica_count()
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1))


# One predictor per model, so its step is traced once; weak keys: the cache must not keep a model alive.
_PREDICTORS: "weakref.WeakKeyDictionary[Any, Callable[[Iterable], tuple[np.ndarray, np.ndarray]]]" = \
    weakref.WeakKeyDictionary()


def replica_predictor(model: Any) -> Callable[[Iterable], tuple[np.ndarray, np.ndarray]]:
    """The model's (labels, outputs) over a dataset on every replica of its strategy, each image counted exactly once.

    Under a strategy Keras splits each batch over the replicas, and a replica given no image (a batch smaller than
    the replicas) fails in batch normalisation. Each batch is therefore padded to a multiple of the replicas with
    blank images (pipeline.pad_batches), run through one traced step, and the padding dropped again. The returned
    function takes batches of images or of (images, labels[, ...]) and keeps the dataset's order.
    """
    if model in _PREDICTORS:
        return _PREDICTORS[model]
    import keras

    if keras.backend.backend() == "jax":
        _PREDICTORS[model] = _sharded_predictor(model)
        return _PREDICTORS[model]
    import tensorflow as tf

    from utils.pipeline import pad_batches

    strategy = model.distribute_strategy
    replicas = strategy.num_replicas_in_sync
    model_ref = weakref.ref(model)  # the closure is the cache's value: it must not hold the model either

    def forward(images: Any) -> Any:
        return model_ref()(images, training=False)

    # reduce_retracing: the last batch's other size gets a shape-general trace instead of one per size.
    step = tf.function(lambda images: strategy.run(forward, args=(images,)), reduce_retracing=True)

    def gather(value: Any) -> np.ndarray:
        # Each replica holds a contiguous slice of the batch: concatenated in replica order, the batch is whole again.
        return np.concatenate([np.asarray(part) for part in strategy.experimental_local_results(value)])

    def predict(dataset: Iterable) -> tuple[np.ndarray, np.ndarray]:
        labels, outputs = [], []
        for images, batch_labels, real in strategy.experimental_distribute_dataset(pad_batches(dataset, replicas)):
            keep = gather(real)
            outputs.append(gather(step(images))[keep])
            labels.append(gather(batch_labels)[keep])
        if not outputs:
            raise ValueError("the dataset is empty: no batch to predict")
        return np.concatenate(labels), np.concatenate(outputs)

    _PREDICTORS[model] = predict
    return predict


def _sharded_predictor(model: Any) -> Callable[[Iterable], tuple[np.ndarray, np.ndarray]]:
    """replica_predictor under JAX's DataParallel: Keras' compiled predict step shards each padded batch evenly over
    the devices; the padding's outputs are dropped."""
    from utils.pipeline import pad_batches

    model_ref = weakref.ref(model)
    replicas = model_replicas(model)

    def predict(dataset: Iterable) -> tuple[np.ndarray, np.ndarray]:
        labels, outputs = [], []
        for images, batch_labels, real in pad_batches(dataset, replicas):
            keep = np.asarray(real)
            outputs.append(np.asarray(model_ref().predict_on_batch(np.asarray(images)))[keep])
            labels.append(np.asarray(batch_labels)[keep])
        if not outputs:
            raise ValueError("the dataset is empty: no batch to predict")
        return np.concatenate(labels), np.concatenate(outputs)

    return predict


def predict_proba(model: Any, images_or_dataset: Any, batch_size: int = 32) -> np.ndarray:
    """P(fake) for a numpy batch [N, H, W, 3] or a tf.data dataset yielding images or (images, labels) batches.

    A model built under a strategy of several replicas predicts on all of them (replica_predictor).
    """
    distributed = model_replicas(model) > 1
    if isinstance(images_or_dataset, np.ndarray):
        x = _check_images(images_or_dataset)
        if not distributed:
            return _p_fake(model.predict(x, batch_size=batch_size, verbose=0))
        import tensorflow as tf

        images_or_dataset = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
    if distributed:
        return _p_fake(replica_predictor(model)(images_or_dataset)[1])
    # Keras' predict takes the first element of (x, y) tuples, so a labelled dataset can be passed unchanged.
    return _p_fake(model.predict(images_or_dataset, verbose=0))


def _labels(batch_labels: Any) -> np.ndarray:
    """Integer labels from a batch of ints or one-hot rows."""
    y = np.asarray(batch_labels)
    if y.ndim == 2 and y.shape[1] == 2:
        return np.argmax(y, axis=1).astype(np.int64)
    return y.reshape(-1).astype(np.int64)


def collect_predictions(model: Any, dataset: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, P(fake)) from one pass over a dataset of (images, labels) batches; labels may be ints or one-hot.

    A model built under a strategy of several replicas predicts on all of them (replica_predictor).
    """
    if model_replicas(model) > 1:
        spec = getattr(dataset, "element_spec", None)
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError("collect_predictions needs a dataset of (images, labels) batches")
        labels, outputs = replica_predictor(model)(dataset)
        return _labels(labels), _p_fake(outputs)
    ys, ps = [], []
    # One pass that keeps labels and predictions together: a reshuffling dataset would misalign two separate passes.
    for batch in dataset:
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ValueError("collect_predictions needs a dataset of (images, labels) batches")
        images, labels = batch[0], batch[1]
        ps.append(_p_fake(model(images, training=False)))
        ys.append(_labels(labels))
    if not ys:
        raise ValueError("collect_predictions got an empty dataset")
    return np.concatenate(ys), np.concatenate(ps)
