"""Evaluation: metrics (fake = positive), bootstrap intervals, calibration, robustness, alpha sweeps and tests, plots."""
from __future__ import annotations

import os
import weakref
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from utils.data import CLASS_NAMES
from utils.figures import finish, new_figure

# Each grid key names a transform in TRANSFORMS; the first value of every list is the clean (identity or near) setting.
ROBUSTNESS_GRID: dict[str, list[float]] = {
    "jpeg_quality": [100, 90, 70, 50, 30],
    "blur_sigma": [0, 0.5, 1, 2, 3],
    "rescale_factor": [1, 0.75, 0.5, 0.25],
    "noise_sigma": [0, 2, 5, 10, 20],
}


# ----------------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------------

def check_scores(y_true: Any, p_fake: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D int labels in {0, 1} and float P(fake) in [0, 1] of the same length."""
    y = np.asarray(y_true)
    p = np.asarray(p_fake, dtype=np.float64)
    if y.ndim != 1 or p.ndim != 1:
        raise ValueError(f"y_true and p_fake must be 1-D arrays, got shapes {y.shape} and {p.shape}")
    if len(y) != len(p):
        raise ValueError(f"y_true and p_fake must have the same length, got {len(y)} and {len(p)}")
    if len(y) == 0:
        raise ValueError("y_true and p_fake are empty: need at least one prediction")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"y_true must hold labels 0 (real) or 1 (fake), found {sorted(set(np.unique(y).tolist()))}")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("p_fake must hold finite probabilities in [0, 1]")
    return y.astype(np.int64), p


def _check_images(images: Any, name: str = "images") -> np.ndarray:
    """Validated float32 batch [N, H, W, 3]."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{name} must be a batch of RGB images shaped [N, H, W, 3], got shape {x.shape}")
    return x


def _both_classes(y: np.ndarray) -> bool:
    """True when both real and fake labels are present (ranking metrics are undefined otherwise)."""
    return bool((y == 0).any() and (y == 1).any())


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------

def equal_error_rate(y_true: Any, p_fake: Any) -> tuple[float, float]:
    """(EER, threshold) where the false-positive and false-negative rates cross on the ROC curve, linearly interpolated."""
    from sklearn.metrics import roc_curve

    y, p = check_scores(y_true, p_fake)
    if not _both_classes(y):
        raise ValueError("the equal error rate needs both real (0) and fake (1) labels in y_true")
    # Every threshold kept, so the interpolation runs between neighbouring operating points.
    return _eer_from_curve(*roc_curve(y, p, drop_intermediate=False))


def _eer_from_curve(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) from a full ROC curve (sklearn's roc_curve with drop_intermediate=False)."""
    diff = (1.0 - tpr) - fpr  # FNR - FPR: +1 at the strictest threshold, -1 at the loosest
    i = int(np.argmax(diff <= 0))
    if diff[i] == 0 or i == 0:
        return float(fpr[i]), float(min(thresholds[i], 1.0))
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    eer = fpr[i - 1] + t * (fpr[i] - fpr[i - 1])
    # sklearn's first threshold is +inf (nothing predicted fake); the crossing then sits at the next real score.
    upper = thresholds[i - 1] if np.isfinite(thresholds[i - 1]) else thresholds[i]
    threshold = upper + t * (thresholds[i] - upper)
    return float(eer), float(threshold)


def binary_metrics(y_true: Any, p_fake: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy (overall and per class), precision/recall/F1 for fake, ROC AUC, AP, EER, confusion matrix; JSON-ready."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y, p = check_scores(y_true, p_fake)
    # ">= threshold is fake" matches sklearn's roc_curve, so a threshold read off the curve reproduces its rates.
    pred = (p >= threshold).astype(np.int64)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    n_real, n_fake = int(cm[0].sum()), int(cm[1].sum())
    ranked = _both_classes(y)
    eer, eer_threshold = equal_error_rate(y, p) if ranked else (None, None)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "accuracy_real": float(cm[0, 0] / n_real) if n_real else None,
        "accuracy_fake": float(cm[1, 1] / n_fake) if n_fake else None,
        "precision": float(precision_score(y, pred, pos_label=1, zero_division=0)),
        "recall": float(recall_score(y, pred, pos_label=1, zero_division=0)),
        "f1": float(f1_score(y, pred, pos_label=1, zero_division=0)),
        "roc_auc": float(roc_auc_score(y, p)) if ranked else None,
        "average_precision": float(average_precision_score(y, p)) if ranked else None,
        "eer": eer,
        "eer_threshold": eer_threshold,
        "threshold": float(threshold),
        "confusion_matrix": cm.astype(int).tolist(),
        "n": int(len(y)),
        "n_real": n_real,
        "n_fake": n_fake,
    }


def choose_threshold(y_true: Any, p_fake: Any, method: str = "youden") -> float:
    """Decision threshold on P(fake) chosen on validation data: max Youden's J (TPR - FPR, mid-gap) or the EER point."""
    from sklearn.metrics import roc_curve

    y, p = check_scores(y_true, p_fake)
    if not _both_classes(y):
        raise ValueError("choose_threshold needs both real (0) and fake (1) labels in y_true")
    if method == "eer":
        return equal_error_rate(y, p)[1]
    if method != "youden":
        raise ValueError(f"method must be 'youden' or 'eer', got {method!r}")
    # Every distinct score is a candidate (no dropped points), so the next threshold is the next lower score.
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    # The first point (threshold inf: nothing called fake, J = 0) is no usable threshold, even when no score beats it.
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    best = int(np.argmax(tpr - fpr))
    if best + 1 == len(thresholds):
        return float(thresholds[best])
    # Any threshold in (next lower score, best] gives the same validation rates; its edge sits on a validation
    # score, so the middle of the gap is chosen to leave the margin to both classes (e.g. P(fake) 0.999 vs 0.3
    # on a perfectly separated validation set gives 0.65, not 0.999).
    return float((thresholds[best] + thresholds[best + 1]) / 2)


# ----------------------------------------------------------------------------------------------------------------
# Calibration of P(fake): in each probability bin, the mean predicted P(fake) against the observed fraction of fakes.
# (Chosen over "confidence of the predicted class" because P(fake) is what thresholds and the ROC curve consume.)
# ----------------------------------------------------------------------------------------------------------------

def reliability_curve(y_true: Any, p_fake: Any, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins over [0, 1] of P(fake): bin_centers, mean_predicted, fraction_fake (NaN when empty), counts."""
    y, p = check_scores(y_true, p_fake)
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    # p == 1.0 belongs to the last bin, not to an extra one.
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.where(counts > 0, sum_p / counts, np.nan)
        fraction_fake = np.where(counts > 0, sum_y / counts, np.nan)
    return {
        "bin_centers": (np.arange(n_bins) + 0.5) / n_bins,
        "mean_predicted": mean_predicted,
        "fraction_fake": fraction_fake,
        "counts": counts,
    }


def expected_calibration_error(y_true: Any, p_fake: Any, n_bins: int = 15) -> float:
    """ECE of P(fake): sum over bins of (bin share) * |fraction of fakes - mean predicted P(fake)|."""
    curve = reliability_curve(y_true, p_fake, n_bins)
    counts = curve["counts"]
    filled = counts > 0
    gaps = np.abs(curve["fraction_fake"][filled] - curve["mean_predicted"][filled])
    return float(np.sum(counts[filled] / counts.sum() * gaps))


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
            metrics = binary_metrics(y, p, threshold)
            rows.append({"transform": name, "severity": severity, "accuracy": metrics["accuracy"],
                         "roc_auc": metrics["roc_auc"]})
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
    """Replicas of the distribution strategy the model was built under (1 without one, or for a non-Keras model)."""
    strategy = getattr(model, "distribute_strategy", None)
    return int(getattr(strategy, "num_replicas_in_sync", 1))


class ReplicaPredictor:
    """Model outputs over a dataset on every replica of the model's strategy, each image counted exactly once.

    Under a strategy Keras splits each batch over the replicas, and a replica given no image (a batch smaller than
    the replicas) fails in batch normalisation. Each batch is therefore padded to a multiple of the replicas with
    blank images (data.pad_batches), run through one traced step, and the padding dropped again.
    Get one through replica_predictor(model), which keeps one per model so the step is traced once.
    """

    def __init__(self, model: Any):
        import tensorflow as tf

        self.strategy = model.distribute_strategy
        self.replicas = self.strategy.num_replicas_in_sync
        model_ref = weakref.ref(model)  # the per-model cache must not keep the model alive

        def forward(images: Any) -> Any:
            return model_ref()(images, training=False)

        # reduce_retracing: the last batch's other size gets a shape-general trace instead of one per size.
        self._step = tf.function(lambda images: self.strategy.run(forward, args=(images,)), reduce_retracing=True)

    def __call__(self, dataset: Iterable) -> tuple[np.ndarray, np.ndarray]:
        """(labels, outputs) in the dataset's order, for batches of images or of (images, labels[, ...])."""
        from utils.data import pad_batches

        labels, outputs = [], []
        for images, batch_labels, real in self.strategy.experimental_distribute_dataset(
                pad_batches(dataset, self.replicas)):
            keep = self._gather(real)
            outputs.append(self._gather(self._step(images))[keep])
            labels.append(self._gather(batch_labels)[keep])
        if not outputs:
            raise ValueError("the dataset is empty: no batch to predict")
        return np.concatenate(labels), np.concatenate(outputs)

    def _gather(self, value: Any) -> np.ndarray:
        """One array from a per-replica value, replicas in order (each holds a contiguous slice of the batch)."""
        return np.concatenate([np.asarray(part) for part in self.strategy.experimental_local_results(value)])


_PREDICTORS: "weakref.WeakKeyDictionary[Any, ReplicaPredictor]" = weakref.WeakKeyDictionary()


def replica_predictor(model: Any) -> ReplicaPredictor:
    """The model's ReplicaPredictor, made on first use and kept while the model lives."""
    if model not in _PREDICTORS:
        _PREDICTORS[model] = ReplicaPredictor(model)
    return _PREDICTORS[model]


def predict_proba(model: Any, images_or_dataset: Any, batch_size: int = 32) -> np.ndarray:
    """P(fake) for a numpy batch [N, H, W, 3] or a tf.data dataset yielding images or (images, labels) batches.

    A model built under a strategy of several replicas predicts on all of them (ReplicaPredictor).
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

    A model built under a strategy of several replicas predicts on all of them (ReplicaPredictor).
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


# ----------------------------------------------------------------------------------------------------------------
# Uncertainty: bootstrap confidence intervals of the metrics of one evaluated split
# ----------------------------------------------------------------------------------------------------------------

CI_LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
# The metrics that get an interval: threshold accuracy and the three threshold-free ranking metrics.
INTERVAL_METRICS = ("accuracy", "roc_auc", "average_precision", "eer")


def _curve_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float, float, float]:
    """(accuracy, ROC AUC, AP, EER) from one full ROC curve: one sort per bootstrap resample instead of three."""
    from sklearn.metrics import roc_curve

    accuracy = float(np.mean((p >= threshold) == (y == 1)))
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    auc = float(np.trapezoid(tpr, fpr)) if hasattr(np, "trapezoid") else float(np.trapz(tpr, fpr))
    # Average precision as sklearn defines it: sum over thresholds of (recall step) x precision, without interpolation.
    n_fake, n_real = int(y.sum()), int(len(y) - y.sum())
    tps, fps = tpr[1:] * n_fake, fpr[1:] * n_real
    ap = float(np.sum(np.diff(tpr) * tps / (tps + fps)))
    return accuracy, auc, ap, _eer_from_curve(fpr, tpr, thresholds)[0]


def bootstrap_intervals(y_true: Any, p_fake: Any, threshold: float = 0.5, n_resamples: int = BOOTSTRAP_RESAMPLES,
                        level: float = CI_LEVEL, seed: int = 0) -> dict[str, Any]:
    """Percentile bootstrap intervals of accuracy, ROC AUC, AP and EER, resampling images within each class.

    Resampling within each class (stratified) keeps both classes in every resample, so the ranking metrics stay
    defined, and holds the class counts fixed, as they are by design in a test set. When every image is right, every
    resample is too and the interval collapses onto the estimate: a bootstrap cannot show the uncertainty of a
    perfect score (the rule of three bounds the error rate by 3/n at 95% instead); the reports say so.
    """
    y, p = check_scores(y_true, p_fake)
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ranked = _both_classes(y)
    point = binary_metrics(y, p, threshold)
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(y == k) for k in (0, 1) if (y == k).any()]
    draws = np.full((int(n_resamples), len(INTERVAL_METRICS)), np.nan)
    for b in range(int(n_resamples)):
        idx = np.concatenate([rng.choice(m, size=len(m), replace=True) for m in members])
        if ranked:
            draws[b] = _curve_metrics(y[idx], p[idx], threshold)
        else:  # one class: only accuracy is defined
            draws[b, 0] = np.mean((p[idx] >= threshold) == (y[idx] == 1))
    tail = 100 * (1 - level) / 2
    intervals = {}
    for k, name in enumerate(INTERVAL_METRICS):
        column = draws[:, k]
        defined = point[name] is not None and np.isfinite(column).any()
        low, high = np.nanpercentile(column, [tail, 100 - tail]) if defined else (None, None)
        intervals[name] = {"estimate": point[name], "low": None if low is None else float(low),
                           "high": None if high is None else float(high)}
    return {"level": level, "n_resamples": int(n_resamples), "seed": seed, "threshold": float(threshold),
            "method": "percentile bootstrap, images resampled within each class", "n": int(len(y)),
            "metrics": intervals}


def group_metrics(y_true: Any, p_fake: Any, groups: Sequence[str], threshold: float = 0.5,
                  n_resamples: int | None = None) -> dict[str, dict[str, Any]]:
    """binary_metrics of each group's images (e.g. each source of a pooled dataset), groups in first-seen order;
    with n_resamples, each entry also holds its bootstrap "intervals"."""
    y, p = np.asarray(y_true), np.asarray(p_fake)
    names = np.asarray(groups)
    if len(names) != len(y):
        raise ValueError(f"groups must name one group per image, got {len(names)} for {len(y)} images")
    result = {}
    for group in dict.fromkeys(names.tolist()):
        mask = names == group
        result[group] = binary_metrics(y[mask], p[mask], threshold)
        if n_resamples:
            result[group]["intervals"] = bootstrap_intervals(y[mask], p[mask], threshold, n_resamples)
    return result


def format_interval(entry: Mapping[str, Any] | None, digits: int = 3) -> str | None:
    """'0.967 [0.933, 0.992]' from an {"estimate", "low", "high"} entry; None when the metric is undefined."""
    if not entry or entry.get("estimate") is None:
        return None
    if entry.get("low") is None:
        return f"{entry['estimate']:.{digits}f}"
    return f"{entry['estimate']:.{digits}f} [{entry['low']:.{digits}f}, {entry['high']:.{digits}f}]"


# ----------------------------------------------------------------------------------------------------------------
# Alpha sweep
# ----------------------------------------------------------------------------------------------------------------

def alpha_table(runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run sorted by alpha (stable), with `baseline` True for alpha == 0 (the ReLU network)."""
    if not runs:
        raise ValueError("alpha_table needs at least one run")
    for i, run in enumerate(runs):
        if "alpha" not in run:
            raise ValueError(f"run {i} has no 'alpha' key (keys: {sorted(run)})")
    df = pd.DataFrame([dict(run) for run in runs])
    df["alpha"] = df["alpha"].astype(float)
    df = df.sort_values("alpha", kind="stable").reset_index(drop=True)
    df["baseline"] = df["alpha"] == 0
    return df


def alpha_summary(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Per alpha over its runs (e.g. seeds): run count, then mean and `<metric>_std` (NaN for one run) per metric."""
    # The sample std (ddof=1): the runs are a sample of what other seeds would give.
    if "alpha" not in df.columns:
        raise ValueError(f"df has no 'alpha' column (columns: {list(df.columns)}); expected the output of alpha_table")
    if metrics is None:
        metrics = [c for c in df.columns
                   if c not in ("alpha", "baseline", "seed") and pd.api.types.is_numeric_dtype(df[c])]
    missing = set(metrics) - set(df.columns)
    if missing:
        raise ValueError(f"df is missing column(s) {sorted(missing)}; expected the output of alpha_table")
    grouped = df.groupby("alpha")[list(metrics)]
    summary = grouped.mean()
    std = grouped.std(ddof=1).add_suffix("_std")
    summary = pd.concat([grouped.size().rename("runs"), summary, std], axis=1)
    # Interleave each mean with its std so the table reads metric, metric_std, ...
    summary = summary[["runs"] + [c for m in metrics for c in (m, f"{m}_std")]]
    return summary.sort_index().reset_index()


# ----------------------------------------------------------------------------------------------------------------
# Paired comparison of each alpha with the ReLU baseline over seeds
# ----------------------------------------------------------------------------------------------------------------

def holm(p_values: Sequence[float | None]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control); None/NaN entries stay NaN and do not count."""
    p = np.array([np.nan if v is None else float(v) for v in p_values], dtype=np.float64)
    adjusted = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    if len(tested) == 0:
        return adjusted
    if ((p[tested] < 0) | (p[tested] > 1)).any():
        raise ValueError("p_values must lie in [0, 1]")
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    # The k-th smallest p is multiplied by (m - k); the running maximum keeps the adjusted values monotone.
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted[order] = np.maximum.accumulate(steps)
    return adjusted


def sign_flip_test(treated: Any, baseline: Any) -> dict[str, Any]:
    """Two-sided paired permutation test of the mean difference (every sign pattern of the pairs; exact up to 2^16).

    With n pairs there are only 2^n sign patterns, so the smallest attainable p-value is 2 / 2^n (0.25 for 3 seeds):
    returned as min_p, so a table can say when no result could have been significant.
    """
    from scipy import stats

    a, b = np.asarray(treated, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"treated and baseline must be 1-D and paired (same length), got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        raise ValueError("sign_flip_test needs at least one pair")
    exact = n <= 16
    if n == 1 or np.allclose(a, b):  # one pair, or no difference: every sign pattern ties with the observed one
        p = 1.0
    else:
        result = stats.permutation_test((a, b), lambda x, y, axis: np.mean(x - y, axis=axis),
                                        permutation_type="samples", vectorized=True, alternative="two-sided",
                                        n_resamples=np.inf if exact else 9999, random_state=0)
        p = float(result.pvalue)
    return {"n": n, "p_value": p, "min_p": float(min(1.0, 2.0 / 2 ** n)) if exact else 1.0 / 10000,
            "exact": exact}


def t_interval(diffs: Any, level: float = CI_LEVEL) -> tuple[float, float]:
    """Student-t interval of a mean (of paired differences, or of one metric over seeds); NaN with fewer than two."""
    from scipy import stats

    diffs = np.asarray(diffs, dtype=np.float64)
    if len(diffs) < 2:
        return np.nan, np.nan
    half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * np.std(diffs, ddof=1) / np.sqrt(len(diffs))
    return float(diffs.mean() - half), float(diffs.mean() + half)


def paired_table(df: pd.DataFrame, group: str, baseline: Any, metrics: Sequence[str] | None = None,
                 pair_on: str = "seed", level: float = CI_LEVEL) -> pd.DataFrame:
    """Each value of `group` against `baseline`, per metric: paired difference over seeds, t interval, sign-flip p, Holm.

    Runs are paired by `pair_on` (the seed: same split, initialisation and data order), runs sharing a group value
    and a seed are averaged first. Holm's correction runs over every test in the table (all groups x all metrics),
    the family a reader scans. Rows without a pair (no baseline run with that seed) get n_pairs 0 and no test.
    """
    for column in (group, pair_on):
        if column not in df.columns:
            raise ValueError(f"df has no {column!r} column (columns: {list(df.columns)})")
    if metrics is None:
        metrics = [c for c in df.columns
                   if c not in (group, "baseline", pair_on) and pd.api.types.is_numeric_dtype(df[c])]
    missing = set(metrics) - set(df.columns)
    if missing:
        raise ValueError(f"df is missing metric column(s) {sorted(missing)}")
    means = df.groupby([group, pair_on])[list(metrics)].mean()
    values = sorted(set(means.index.get_level_values(group)), key=lambda v: (v != baseline, v))
    columns = [group, "metric", "n_pairs", "baseline_mean", "treated_mean", "mean_diff", "ci_low", "ci_high",
               "p_value", "min_p", "p_holm"]
    if baseline not in values:
        return pd.DataFrame(columns=columns)
    base = means.xs(baseline, level=group)
    rows = []
    for value in values[1:]:
        treated = means.xs(value, level=group)
        for metric in metrics:
            pairs = pd.concat([treated[metric].rename("a"), base[metric].rename("b")], axis=1, join="inner").dropna()
            diffs = (pairs["a"] - pairs["b"]).to_numpy(dtype=np.float64)
            row = {group: value, "metric": metric, "n_pairs": len(diffs),
                   "baseline_mean": float(pairs["b"].mean()) if len(diffs) else np.nan,
                   "treated_mean": float(pairs["a"].mean()) if len(diffs) else np.nan,
                   "mean_diff": float(diffs.mean()) if len(diffs) else np.nan,
                   "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan, "min_p": np.nan}
            if len(diffs):
                row["ci_low"], row["ci_high"] = t_interval(diffs, level)
                test = sign_flip_test(pairs["a"].to_numpy(), pairs["b"].to_numpy())
                row["p_value"], row["min_p"] = test["p_value"], test["min_p"]
            rows.append(row)
    table = pd.DataFrame(rows, columns=columns[:-1])
    table["p_holm"] = holm(table["p_value"].tolist()) if len(table) else []
    return table


def format_difference(row: Mapping[str, Any], digits: int = 3) -> str | None:
    """A paired_table row's mean difference with its t interval as text ("+0.120 [+0.014, +0.226]")."""
    if pd.isna(row["mean_diff"]):
        return None
    if pd.isna(row["ci_low"]):
        return f"{row['mean_diff']:+.{digits}f}"
    return f"{row['mean_diff']:+.{digits}f} [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]"


def paired_alpha_table(df: pd.DataFrame, metrics: Sequence[str] | None = None, baseline_alpha: float = 0.0,
                       pair_on: str = "seed", level: float = CI_LEVEL) -> pd.DataFrame:
    """Each alpha against the baseline alpha (ReLU), per metric: paired_table over alpha_table's runs."""
    if "alpha" not in df.columns:
        raise ValueError(f"df has no 'alpha' column (columns: {list(df.columns)}); expected alpha_table output")
    df = df.assign(alpha=df["alpha"].astype(float))
    return paired_table(df, "alpha", float(baseline_alpha), metrics, pair_on, level).rename(
        columns={"treated_mean": "alpha_mean"})


def choose_alpha(df: pd.DataFrame, criterion: str = "val_log_loss", lower_is_better: bool = True) -> float:
    """The alpha with the best mean validation criterion over its runs (ties: the smaller alpha); never a test metric."""
    if criterion not in df.columns:
        raise ValueError(f"df has no {criterion!r} column (columns: {list(df.columns)}); expected a validation metric")
    if not criterion.startswith("val_"):
        raise ValueError(f"criterion must be a validation metric (a 'val_' column), got {criterion!r}: "
                         "choosing on the test split would make its numbers optimistic")
    means = df.assign(alpha=df["alpha"].astype(float)).groupby("alpha")[criterion].mean().dropna()
    if means.empty:
        raise ValueError(f"no run has a value of {criterion!r}")
    best = means.min() if lower_is_better else means.max()
    return float(means[means == best].index.min())


# ----------------------------------------------------------------------------------------------------------------
# Plots: each is made by utils.figures, saved as PNG at `path` when given, shown in the notebook, and returned.
# ----------------------------------------------------------------------------------------------------------------

def plot_confusion_matrix(cm: Any, class_names: Sequence[str] = CLASS_NAMES,
                          path: str | os.PathLike | None = None, title: str | None = None):
    """Confusion matrix (rows true, columns predicted) with counts and row percentages."""
    cm = np.asarray(cm)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"cm must be a {k}x{k} matrix for classes {tuple(class_names)}, got shape {cm.shape}")
    fig, axes = new_figure(size=(4.5, 4.0))
    ax = axes[0, 0]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}\n{share[i, j]:.1%}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names)
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix")
    finish(fig, path)
    return fig


def plot_roc_pr(y_true: Any, p_fake: Any = None, path: str | os.PathLike | None = None, label: str | None = None):
    """ROC and precision-recall curves side by side; pass arrays, or a dict label -> (y_true, p_fake) as `y_true`."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    if isinstance(y_true, Mapping):
        curves = dict(y_true)
    else:
        curves = {label or "model": (y_true, p_fake)}
    fig, axes = new_figure(1, 2)
    roc_ax, pr_ax = axes[0]
    for name, (y, p) in curves.items():
        y, p = check_scores(y, p)
        if not _both_classes(y):
            raise ValueError(f"curve {name!r} needs both real (0) and fake (1) labels")
        fpr, tpr, _ = roc_curve(y, p)
        roc_ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
        precision, recall, _ = precision_recall_curve(y, p)
        pr_ax.step(recall, precision, where="post", label=f"{name} (AP {average_precision_score(y, p):.3f})")
    roc_ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate (real called fake)", ylabel="true positive rate (fake caught)",
               title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    pr_ax.set(xlabel="recall (fake)", ylabel="precision (fake)", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    roc_ax.legend(loc="lower right")
    pr_ax.legend(loc="lower left")
    finish(fig, path)
    return fig


def plot_reliability(y_true: Any, p_fake: Any, path: str | os.PathLike | None = None, n_bins: int = 15,
                     title: str = "Reliability of P(fake)"):
    """Reliability diagram of P(fake) (fraction of fakes per bin vs mean prediction) with the ECE and bin counts."""
    curve = reliability_curve(y_true, p_fake, n_bins)
    ece = expected_calibration_error(y_true, p_fake, n_bins)
    fig, axes = new_figure(size=(5.0, 5.0))
    ax = axes[0, 0]
    filled = curve["counts"] > 0
    ax.bar(curve["bin_centers"], curve["fraction_fake"], width=1.0 / len(curve["counts"]), alpha=0.3,
           edgecolor="tab:blue", label="fraction fake per bin")
    ax.plot(curve["mean_predicted"][filled], curve["fraction_fake"][filled], "o-", color="tab:blue",
            label=f"model (ECE {ece:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    counts_ax = ax.twinx()
    counts_ax.step(curve["bin_centers"], curve["counts"], where="mid", color="tab:orange", alpha=0.5, linewidth=1)
    counts_ax.set_ylim(bottom=0)
    counts_ax.set_ylabel("images per bin", color="tab:orange")
    ax.set(xlabel="predicted P(fake)", ylabel="observed fraction fake", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left")
    finish(fig, path)
    return fig


def plot_robustness(results: pd.DataFrame, path: str | os.PathLike | None = None, title: str | None = None):
    """One panel per transform: ROC AUC and accuracy against severity (axis runs from clean to most degraded)."""
    missing = {"transform", "severity", "accuracy", "roc_auc"} - set(results.columns)
    if missing:
        raise ValueError(f"results is missing column(s) {sorted(missing)}; expected the output of robustness_table")
    names = list(dict.fromkeys(results["transform"]))
    fig, axes = new_figure(1, max(1, len(names)), size=(3.6, 3.2))
    for ax, name in zip(axes[0], names):
        rows = results[results["transform"] == name]
        severity = rows["severity"].astype(float).to_numpy()
        ax.plot(severity, rows["roc_auc"].astype(float), "o-", label="ROC AUC")
        ax.plot(severity, rows["accuracy"].astype(float), "s--", label="accuracy")
        # JPEG quality and rescale factor get worse as they fall: flip those axes so degradation always grows rightwards.
        if len(severity) > 1 and severity[0] > severity[-1]:
            ax.invert_xaxis()
        ax.set(title=name, xlabel=name, ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("score")
    axes[0, 0].legend(loc="lower left")
    if title:
        fig.suptitle(title)
    finish(fig, path)
    return fig


def plot_alpha(df: pd.DataFrame, metrics: Sequence[str] = ("accuracy", "roc_auc"),
               path: str | os.PathLike | None = None):
    """Metrics against the LeakyReLU slope alpha (mean and std over runs sharing an alpha); alpha 0 = ReLU baseline."""
    summary = alpha_summary(df, metrics)
    alphas = summary["alpha"].to_numpy(dtype=float)
    fig, axes = new_figure(size=(6.0, 4.0))
    ax = axes[0, 0]
    for metric in metrics:
        std = summary[f"{metric}_std"].astype(float).fillna(0.0)
        ax.errorbar(alphas, summary[metric].astype(float), yerr=std, marker="o", capsize=3, label=metric)
    if (alphas == 0).any():
        ax.axvline(0.0, color="grey", linestyle=":", linewidth=1)
        baseline = summary[summary["alpha"] == 0].iloc[0]
        for metric in metrics:
            ax.scatter([0.0], [baseline[metric]], s=120, facecolors="none", edgecolors="black", zorder=3)
        ax.annotate("ReLU baseline", xy=(0.0, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -12),
                    textcoords="offset points", fontsize=9)
    ax.set(xlabel="LeakyReLU negative slope alpha", ylabel="score", title="Effect of alpha")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    finish(fig, path)
    return fig
