"""Metrics against scikit-learn, EER and ECE on constructed cases, robustness transforms, tables and plots."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn import metrics as skm

from utils.evaluation import (
    ROBUSTNESS_GRID,
    TRANSFORMS,
    alpha_summary,
    alpha_table,
    binary_metrics,
    blur_images,
    bootstrap_intervals,
    choose_alpha,
    choose_threshold,
    collect_predictions,
    equal_error_rate,
    expected_calibration_error,
    format_interval,
    holm,
    jpeg_images,
    noise_images,
    paired_alpha_table,
    plot_alpha,
    plot_confusion_matrix,
    plot_reliability,
    plot_robustness,
    plot_roc_pr,
    predict_proba,
    reliability_curve,
    rescale_images,
    robustness_table,
    sign_flip_test,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def scores():
    """Fixed labels and noisy-but-informative P(fake) scores (40 images, 18 real, 22 fake)."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 18 + [1] * 22)
    p = np.clip(0.35 + 0.3 * y + rng.normal(0, 0.2, len(y)), 0, 1)
    return y, p


def smooth_images(n: int = 4, size: int = 32, seed: int = 0) -> np.ndarray:
    """Face-like test batch: smooth gradients plus mild texture, float32 in 0..255."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([120 + 80 * np.sin(3 * xx + k) * np.cos(2 * yy - k) for k in range(3)], axis=-1)
    return np.clip(base[None] + rng.normal(0, 12, (n, size, size, 3)), 0, 255).astype(np.float32)


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared neighbour difference: large for sharp / noisy images, small for blurred ones."""
    return float(np.mean(np.diff(images, axis=1) ** 2) + np.mean(np.diff(images, axis=2) ** 2))


# ------------------------------------------------------------------ metrics

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


# ------------------------------------------------------------------ calibration

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


# ------------------------------------------------------------------ alpha sweep

def test_alpha_table_sorts_and_marks_baseline():
    runs = [{"alpha": 0.2, "accuracy": 0.91, "roc_auc": 0.95}, {"alpha": 0, "accuracy": 0.9, "roc_auc": 0.94},
            {"alpha": 0.1, "accuracy": 0.92, "roc_auc": 0.96}, {"alpha": 0.0, "accuracy": 0.88, "roc_auc": 0.93}]
    table = alpha_table(runs)
    assert table["alpha"].tolist() == [0.0, 0.0, 0.1, 0.2]
    assert table["baseline"].tolist() == [True, True, False, False]
    assert table["accuracy"].tolist() == [0.9, 0.88, 0.92, 0.91]  # stable: input order kept within an alpha
    with pytest.raises(ValueError, match="run 1 has no 'alpha'"):
        alpha_table([{"alpha": 0.1}, {"accuracy": 0.5}])


def test_alpha_summary_gives_mean_and_sample_std_per_alpha():
    table = alpha_table([{"run": "a", "alpha": 0.2, "accuracy": 0.90, "seed": 1},
                         {"run": "b", "alpha": 0.0, "accuracy": 0.80, "seed": 1},
                         {"run": "c", "alpha": 0.2, "accuracy": 0.94, "seed": 2},
                         {"run": "d", "alpha": 0.0, "accuracy": 0.84, "seed": 2},
                         {"run": "e", "alpha": 0.1, "accuracy": 0.70, "seed": 1}])
    summary = alpha_summary(table, ["accuracy"])
    assert list(summary.columns) == ["alpha", "runs", "accuracy", "accuracy_std"]
    assert summary["alpha"].tolist() == [0.0, 0.1, 0.2] and summary["runs"].tolist() == [2, 1, 2]
    np.testing.assert_allclose(summary["accuracy"], [0.82, 0.70, 0.92])
    np.testing.assert_allclose(summary["accuracy_std"].iloc[[0, 2]], [np.std([0.80, 0.84], ddof=1)] * 2)
    assert np.isnan(summary["accuracy_std"].iloc[1])  # one run: no spread to report
    # Default: every numeric column but alpha, the baseline flag and the seed (the run name is text, so left out).
    assert list(alpha_summary(table).columns) == ["alpha", "runs", "accuracy", "accuracy_std"]
    with pytest.raises(ValueError, match="missing column"):
        alpha_summary(table, ["roc_auc"])


# ------------------------------------------------------------------ uncertainty

def _noisy_scores(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n_per_class), np.ones(n_per_class)].astype(int)
    return y, np.clip(0.4 + 0.2 * y + rng.normal(0, 0.2, len(y)), 0, 1)


def test_bootstrap_resample_metrics_agree_with_sklearn(scores):
    from utils.evaluation import _curve_metrics

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


# ------------------------------------------------------------------ paired tests over seeds

def test_holm_matches_a_worked_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> monotone: 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.2, None, 0.6, np.nan])  # untested entries stay NaN and do not enlarge the family
    np.testing.assert_allclose(adjusted[[0, 2]], [0.4, 0.6])
    assert np.isnan(adjusted[[1, 3]]).all()
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).shape == (0,)
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        holm([1.5])


def test_sign_flip_test_enumerates_every_sign_pattern():
    three = sign_flip_test([0.9, 0.95, 1.0], [0.8, 0.8, 0.8])
    assert three == {"n": 3, "p_value": 0.25, "min_p": 0.25, "exact": True}  # the smallest p 3 seeds can give
    # diffs 1, -2, 3, 4 (sum 6): of the 16 sign patterns, 6 have |sum| >= 6 -> p = 0.375.
    assert sign_flip_test([1, -2, 3, 4], [0, 0, 0, 0])["p_value"] == pytest.approx(0.375)
    assert sign_flip_test([1, -2, 3, 4], [0, 0, 0, 0])["min_p"] == 0.125
    assert sign_flip_test([0.5, 0.7], [0.5, 0.7])["p_value"] == 1.0  # no difference at all
    assert sign_flip_test([2.0], [1.0])["p_value"] == 1.0  # one pair: both signs tie
    with pytest.raises(ValueError, match="paired"):
        sign_flip_test([1, 2], [1])


def _sweep_rows():
    """ReLU and two slopes over seeds 1-3 (alpha 0.1 is +0.05 in every seed), one unpaired seed, one repeated run."""
    rows = [{"run": f"r0-{s}", "alpha": 0.0, "seed": s, "accuracy": a, "val_log_loss": 0.30}
            for s, a in ((1, 0.80), (2, 0.90), (3, 0.85))]
    rows += [{"run": f"r1-{s}", "alpha": 0.1, "seed": s, "accuracy": a + 0.05, "val_log_loss": 0.10}
             for s, a in ((1, 0.80), (2, 0.90), (3, 0.85))]
    rows += [{"run": "r2-1", "alpha": 0.2, "seed": 1, "accuracy": 0.70, "val_log_loss": 0.10},
             {"run": "r2-1b", "alpha": 0.2, "seed": 1, "accuracy": 0.90, "val_log_loss": 0.10},  # same seed: averaged
             {"run": "r2-9", "alpha": 0.2, "seed": 9, "accuracy": 1.00, "val_log_loss": 0.10}]  # no ReLU run to pair
    return alpha_table(rows)


def test_paired_alpha_table_pairs_by_seed_and_corrects_with_holm():
    table = paired_alpha_table(_sweep_rows(), ["accuracy", "val_log_loss"])
    assert list(table["alpha"]) == [0.1, 0.1, 0.2, 0.2] and list(table["metric"]) == ["accuracy", "val_log_loss"] * 2
    acc = table.iloc[0]
    assert acc["n_pairs"] == 3 and acc["mean_diff"] == pytest.approx(0.05)
    assert acc["ci_low"] == pytest.approx(0.05) and acc["ci_high"] == pytest.approx(0.05)  # identical gains
    assert acc["p_value"] == 0.25 and acc["min_p"] == 0.25
    assert acc["baseline_mean"] == pytest.approx(0.85) and acc["alpha_mean"] == pytest.approx(0.90)
    pair = table.iloc[2]  # alpha 0.2: only seed 1 pairs, its two runs averaged to 0.80
    assert pair["n_pairs"] == 1 and pair["mean_diff"] == pytest.approx(0.0) and np.isnan(pair["ci_low"])
    np.testing.assert_allclose(table["p_holm"], holm(table["p_value"].tolist()))
    spread = paired_alpha_table(alpha_table([{"alpha": a, "seed": s, "m": v} for a, s, v in
                                             ((0, 1, 0.1), (0, 2, 0.2), (0, 3, 0.3), (0, 4, 0.4),
                                              (1e-2, 1, 0.3), (1e-2, 2, 0.3), (1e-2, 3, 0.6), (1e-2, 4, 0.5))]))
    row = spread.iloc[0]  # diffs 0.2, 0.1, 0.3, 0.1: mean 0.175, sd 0.0957, t(3) 3.182
    assert row["ci_low"] == pytest.approx(0.175 - 3.182446 * 0.0957427 / 2, abs=1e-4)
    assert row["ci_high"] == pytest.approx(0.175 + 3.182446 * 0.0957427 / 2, abs=1e-4)
    assert row["p_value"] == pytest.approx(0.125)  # every diff positive: 2 of 16 sign patterns
    no_baseline = paired_alpha_table(alpha_table([{"alpha": 0.2, "seed": 1, "accuracy": 0.9}]))
    assert no_baseline.empty and "p_holm" in no_baseline.columns
    with pytest.raises(ValueError, match="'seed'"):
        paired_alpha_table(alpha_table([{"alpha": 0.0, "accuracy": 0.9}]))


def test_choose_alpha_uses_validation_only():
    rows = _sweep_rows()
    assert choose_alpha(rows) == 0.1  # 0.1 and 0.2 tie on val_log_loss: the smaller slope
    assert choose_alpha(rows, "val_log_loss", lower_is_better=False) == 0.0
    with pytest.raises(ValueError, match="validation metric"):
        choose_alpha(rows, "accuracy")
    with pytest.raises(ValueError, match="no 'val_auc'"):
        choose_alpha(rows, "val_auc")


# ------------------------------------------------------------------ plots

def test_plots_return_figures_and_write_png(tmp_path, scores):
    y, p = scores
    x = smooth_images(4)
    labels = np.array([0, 1, 0, 1])
    table = robustness_table(lambda im: np.clip(im.mean(axis=(1, 2, 3)) / 255, 0, 1), x, labels)
    sweep = alpha_table([{"alpha": a, "accuracy": 0.8 + a / 10, "roc_auc": 0.9, "seed": s}
                         for a in (0, 0.1, 0.2) for s in (0, 1)])
    figures = {
        "cm.png": lambda path: plot_confusion_matrix(binary_metrics(y, p)["confusion_matrix"], path=path, title="t"),
        "roc.png": lambda path: plot_roc_pr(y, p, path=path, label="alpha 0.2"),
        "roc_many.png": lambda path: plot_roc_pr({"a": (y, p), "b": (y, 1 - p)}, path=path),
        "reliability.png": lambda path: plot_reliability(y, p, path=path),
        "robustness.png": lambda path: plot_robustness(table, path=path),
        "alpha.png": lambda path: plot_alpha(sweep, path=path),
    }
    for name, make in figures.items():
        path = tmp_path / "plots" / name  # parent folder does not exist yet
        fig = make(path)
        assert isinstance(fig, Figure), name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
    assert isinstance(plot_roc_pr(y, p), Figure)  # no path: nothing written, figure still returned
    robustness = plot_robustness(table)
    assert len([ax for ax in robustness.axes if ax.lines]) == len(ROBUSTNESS_GRID)
    alpha_fig = plot_alpha(sweep)
    assert any("ReLU baseline" in text.get_text() for text in alpha_fig.axes[0].texts)
    with pytest.raises(ValueError, match="2x2"):
        plot_confusion_matrix([[1, 2, 3]])
    with pytest.raises(ValueError, match="missing column"):
        plot_robustness(pd.DataFrame({"transform": ["x"]}))
