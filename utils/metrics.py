"""Metrics of one evaluated split (fake = positive): accuracy, ROC AUC, AP, EER, calibration, bootstrap intervals."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

CI_LEVEL = 0.95  # of every interval: one run's bootstrap and the paired differences across runs (utils.comparison)
BOOTSTRAP_RESAMPLES = 1000
# The metrics that get an interval: threshold accuracy and the three threshold-free ranking metrics.
INTERVAL_METRICS = ("accuracy", "roc_auc", "average_precision", "eer")


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


def both_classes(y: np.ndarray) -> bool:
    """True when both real and fake labels are present (ranking metrics are undefined otherwise)."""
    return bool((y == 0).any() and (y == 1).any())


def equal_error_rate(y_true: Any, p_fake: Any) -> tuple[float, float]:
    """(EER, threshold) where the false-positive and false-negative rates cross on the ROC curve, linearly interpolated."""
    from sklearn.metrics import roc_curve

    y, p = check_scores(y_true, p_fake)
    if not both_classes(y):
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
    ranked = both_classes(y)
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
    if not both_classes(y):
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
    ranked = both_classes(y)
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
