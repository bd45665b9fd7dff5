"""Metrics against scikit-learn, EER and ECE on constructed cases, bootstrap intervals."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from utils.metrics import (
    binary_metrics,
    bootstrap_intervals,
    choose_threshold,
    equal_error_rate,
    expected_calibration_error,
    format_interval,
    reliability_curve,
)


def test_binary_metrics_agree_with_sklearn(scores):
    y, p = scores
    for threshold in (0.5, 0.4):
        m = binary_metrics(y, p, threshold=threshold)
        pred = (p >= threshold).astype(int)
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
        assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
        assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
        assert m["average_precision"] == pytest.approx(skm.average_precision_score(y, p))
        assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
        cm = np.array(m["confusion_matrix"])
        assert m["accuracy_real"] == pytest.approx(cm[0, 0] / 18)
        assert m["accuracy_fake"] == pytest.approx(skm.recall_score(y, pred))
        assert (m["n"], m["n_real"], m["n_fake"], m["threshold"]) == (40, 18, 22, threshold)
    json.dumps(m)  # plain Python types only


def test_binary_metrics_small_known_case():
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    p = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    m = binary_metrics(y, p)
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]  # rows true (real, fake), columns predicted
    assert m["accuracy"] == m["accuracy_real"] == m["accuracy_fake"] == 0.75
    assert m["eer"] == pytest.approx(0.25) and m["eer_threshold"] == pytest.approx(0.6)


def test_binary_metrics_single_class_does_not_crash():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert m["roc_auc"] is None and m["average_precision"] is None and m["eer"] is None
    assert m["accuracy"] == pytest.approx(2 / 3) and m["accuracy_real"] is None
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]
    json.dumps(m)


def test_binary_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        binary_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="labels 0"):
        binary_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binary_metrics([0, 1], [0.5, 1.5])


def test_eer_known_cases():
    assert equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])[0] == 0.0  # separable
    assert equal_error_rate([0, 1], [0.9, 0.1])[0] == 1.0  # inverted
    # Crossing between operating points (FPR 0, FNR .5) and (FPR 1, FNR .5): interpolation gives exactly 0.5.
    eer, threshold = equal_error_rate([0, 1, 1], [0.5, 0.4, 0.9])
    assert eer == pytest.approx(0.5) and 0.5 <= threshold <= 0.9
    # Equal-sized overlapping classes: one real above one fake at each end gives FPR = FNR = 1/4.
    eer, threshold = equal_error_rate([0, 0, 0, 0, 1, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    assert eer == pytest.approx(0.25) and threshold == pytest.approx(0.6)


def test_eer_matches_the_rates_at_its_threshold(scores):
    y, p = scores
    m = binary_metrics(y, p)
    at = binary_metrics(y, p, threshold=m["eer_threshold"])
    fpr, fnr = 1 - at["accuracy_real"], 1 - at["accuracy_fake"]
    # With 18/22 samples one image moves a rate by ~0.05; the EER sits between the two rates.
    assert min(fpr, fnr) - 0.06 <= m["eer"] <= max(fpr, fnr) + 0.06


def test_choose_threshold(scores):
    y, p = scores
    youden = choose_threshold(y, p, "youden")
    fpr, tpr, thresholds = skm.roc_curve(y, p)
    best_j = max(tpr - fpr)
    at = binary_metrics(y, p, threshold=youden)
    assert at["accuracy_fake"] - (1 - at["accuracy_real"]) == pytest.approx(best_j)
    assert youden not in p  # mid-gap: no validation score sits on the threshold
    # Perfectly separated scores: the middle of the gap between the classes, not the lowest fake score.
    separated = choose_threshold([0, 0, 1, 1], [0.1, 0.3, 0.999, 0.9995], "youden")
    assert separated == pytest.approx((0.3 + 0.999) / 2)
    # A model no better than inverted: still a finite threshold within the scores (J = 0 there), never inf.
    inverted = choose_threshold([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], "youden")
    assert 0.1 <= inverted <= 0.9
    assert choose_threshold(y, p, "eer") == pytest.approx(binary_metrics(y, p)["eer_threshold"])
    with pytest.raises(ValueError, match="method"):
        choose_threshold(y, p, "best")


def test_ece_zero_for_perfect_calibration():
    # P(fake) = 0.25 on 4 images with 1 fake, 0.75 on 4 images with 3 fakes.
    y = [1, 0, 0, 0, 1, 1, 1, 0]
    p = [0.25] * 4 + [0.75] * 4
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.0)


def test_ece_known_value_for_miscalibration():
    assert expected_calibration_error([0, 1, 0, 1], [0.9] * 4) == pytest.approx(0.4)
    # Bin at 0.1 with 5/10 fakes (gap 0.4), bin at 0.9 with 9/10 fakes (gap 0): weighted 0.5 * 0.4 = 0.2.
    y = [1] * 5 + [0] * 5 + [1] * 9 + [0]
    p = [0.1] * 10 + [0.9] * 10
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.2)


def test_reliability_curve_bins():
    curve = reliability_curve([0, 1, 1, 0], [0.0, 1.0, 0.55, 0.45], n_bins=4)
    assert curve["counts"].tolist() == [1, 1, 1, 1]  # p == 1.0 lands in the last bin
    assert curve["bin_centers"].tolist() == [0.125, 0.375, 0.625, 0.875]
    assert curve["fraction_fake"].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert np.allclose(curve["mean_predicted"], [0.0, 0.45, 0.55, 1.0])
    sparse = reliability_curve([0, 1], [0.1, 0.9], n_bins=5)
    assert np.isnan(sparse["fraction_fake"][2]) and sparse["counts"][2] == 0


def _noisy_scores(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_per_class), np.ones(n_per_class)].astype(int)
    return y, np.clip(0.4 + 0.2 * y + rng.normal(0, 0.2, len(y)), 0, 1)


def test_bootstrap_resample_metrics_agree_with_sklearn(scores):
    from utils.metrics import _curve_metrics

    y, p = scores
    accuracy, auc, ap, eer = _curve_metrics(y, p, 0.5)
    assert accuracy == pytest.approx(skm.accuracy_score(y, p >= 0.5))
    assert auc == pytest.approx(skm.roc_auc_score(y, p))
    assert ap == pytest.approx(skm.average_precision_score(y, p))
    assert eer == pytest.approx(equal_error_rate(y, p)[0])
    tied = np.round(p, 1)  # ties: one ROC point per distinct score
    assert _curve_metrics(y, tied, 0.5)[2] == pytest.approx(skm.average_precision_score(y, tied))


def test_bootstrap_intervals_contain_the_estimate_and_narrow_with_n():
    small = bootstrap_intervals(*_noisy_scores(20), n_resamples=400)
    large = bootstrap_intervals(*_noisy_scores(400), n_resamples=400)
    for result in (small, large):
        json.dumps(result)
        assert result["level"] == 0.95 and result["n_resamples"] == 400
        for name in ("accuracy", "roc_auc", "average_precision", "eer"):
            entry = result["metrics"][name]
            assert entry["low"] <= entry["estimate"] <= entry["high"], name
    for name in ("accuracy", "roc_auc"):
        width = {k: r["metrics"][name]["high"] - r["metrics"][name]["low"] for k, r in (("s", small), ("l", large))}
        assert width["l"] < 0.5 * width["s"], name  # ~ 1/sqrt(n): 20x the images, about a quarter of the width
    y, p = _noisy_scores(20)
    assert bootstrap_intervals(y, p, n_resamples=100, seed=3) == bootstrap_intervals(y, p, n_resamples=100, seed=3)
    assert small["metrics"]["accuracy"]["estimate"] == binary_metrics(y, p)["accuracy"]


def test_bootstrap_intervals_edge_cases():
    perfect = bootstrap_intervals([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], n_resamples=50)
    assert perfect["metrics"]["accuracy"] == {"estimate": 1.0, "low": 1.0, "high": 1.0}  # collapses: said in reports
    one_class = bootstrap_intervals([1, 1, 1], [0.9, 0.4, 0.8], n_resamples=50)
    assert one_class["metrics"]["roc_auc"] == {"estimate": None, "low": None, "high": None}
    assert one_class["metrics"]["accuracy"]["low"] <= 2 / 3 <= one_class["metrics"]["accuracy"]["high"]
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_intervals([0, 1], [0.2, 0.8], n_resamples=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_intervals([0, 1], [0.2, 0.8], level=95)


def test_format_interval():
    assert format_interval({"estimate": 0.96666, "low": 0.93, "high": 0.99}) == "0.967 [0.930, 0.990]"
    assert format_interval({"estimate": 0.5, "low": None, "high": None}, digits=2) == "0.50"
    assert format_interval({"estimate": None, "low": None, "high": None}) is None
