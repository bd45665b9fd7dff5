"""The study's statistics, each against scipy / statsmodels or a published example, and the verdict rule on
constructed inputs for all four verdicts."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from utils import comparison, study_tests

# Student (1908) / Cushny & Peebles: extra hours of sleep under two drugs, ten patients (R's `sleep` data set).
# R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833,
# 95 percent confidence interval -2.4598858 -0.7001142, mean difference -1.58 (group 1 minus group 2).
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_seed_t_test_matches_students_sleep_data():
    result = study_tests.seed_t_test(SLEEP_2, SLEEP_1)
    assert result["mean_diff"] == pytest.approx(1.58)
    assert result["statistic"] == pytest.approx(4.0621, abs=1e-4) and result["df"] == 9
    assert result["p_value"] == pytest.approx(0.002833, abs=1e-6)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    # comparison.t_interval is the same interval from the differences alone.
    assert comparison.t_interval(np.subtract(SLEEP_2, SLEEP_1)) == pytest.approx((0.7001142, 2.4598858), abs=1e-6)
    with pytest.raises(ValueError, match="two or more seeds"):
        study_tests.seed_t_test([1.0], [2.0])


def test_tost_is_two_one_sided_t_tests():
    a, b = np.array(SLEEP_2), np.array(SLEEP_1)
    d = a - b
    for margin in (1.0, 2.0, 3.0):
        expected = max(stats.ttest_1samp(d, -margin, alternative="greater").pvalue,
                       stats.ttest_1samp(d, margin, alternative="less").pvalue)
        result = study_tests.tost(a, b, margin)
        assert result["p_value"] == pytest.approx(expected, rel=1e-9)
        # The same decision as the 90% interval lying inside the margin.
        inside = -margin < result["ci_low"] and result["ci_high"] < margin
        assert inside == (result["p_value"] < 0.05)
    with pytest.raises(ValueError, match="margin"):
        study_tests.tost(a, b, 0)


def test_detectable_difference_has_the_stated_power():
    """At the returned difference the two-sided paired t-test's power, from the noncentral t, is 80%."""
    for n, sd in ((6, 0.05), (10, 1.0), (3, 0.2)):
        mde = study_tests.detectable_difference(n, sd)
        df, crit = n - 1, stats.t.ppf(0.975, n - 1)
        nc = mde / sd * np.sqrt(n)
        power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
        assert power == pytest.approx(0.8, abs=1e-4)
    assert np.isnan(study_tests.detectable_difference(1, 1.0))
    assert study_tests.pair_sd(0.03, 0.4, 400) == pytest.approx(np.sqrt(0.03 ** 2 + 0.4 ** 2 / 400))


def test_per_image_log_loss_averages_to_sklearns():
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 200), rng.uniform(0, 1, 200)
    p[:3] = [0.0, 1.0, 0.5]
    assert study_tests.per_image_log_loss(y, p).mean() == pytest.approx(
        log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))


def test_paired_bootstrap_agrees_with_the_t_interval_on_many_images():
    """With 2,000 images the bootstrap distribution of a mean is close to normal: its interval is scipy's."""
    diffs = np.random.default_rng(1).normal(0.05, 0.5, 2000)
    result = study_tests.paired_bootstrap(diffs, n_resamples=4000)
    t = stats.ttest_1samp(diffs, 0).confidence_interval()
    assert result["mean_diff"] == pytest.approx(diffs.mean())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((t.low, t.high), abs=0.004)
    assert result["p_value"] < 0.01 and result["n_images"] == 2000
    assert study_tests.paired_bootstrap(np.random.default_rng(2).normal(0, 1, 500))["p_value"] > 0.05


def test_hierarchical_bootstrap_carries_the_seed_spread():
    """Without image noise (each pair's images all differ alike) it is scipy's percentile bootstrap over the seed
    pairs; with a seed spread much larger than the image noise its interval is as wide, not image-level narrow."""
    seed_means = np.array([0.10, -0.05, 0.20, 0.02, 0.15, 0.08])
    flat = [np.full(50, m) for m in seed_means]
    result = study_tests.hierarchical_bootstrap(flat, n_resamples=4000)
    reference = stats.bootstrap((seed_means,), np.mean, n_resamples=4000, method="percentile",
                                random_state=0).confidence_interval
    assert result["mean_diff"] == pytest.approx(seed_means.mean())
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((reference.low, reference.high), abs=0.01)
    noisy = [m + np.random.default_rng(i).normal(0, 0.01, 300) for i, m in enumerate(seed_means)]
    pooled = study_tests.paired_bootstrap(np.concatenate(noisy))  # every image pooled: blind to the seeds
    hierarchical = study_tests.hierarchical_bootstrap(noisy)
    assert hierarchical["ci_high"] - hierarchical["ci_low"] > 5 * (pooled["ci_high"] - pooled["ci_low"])
    with pytest.raises(ValueError, match="two seed pairs"):
        study_tests.hierarchical_bootstrap([np.ones(5)])


def _inputs(diffs: list[float], margin: float) -> tuple[dict, dict]:
    """The t-test and TOST of constructed paired differences (treated = baseline + diff)."""
    baseline = np.linspace(0.2, 0.3, len(diffs))
    treated = baseline + np.asarray(diffs)
    return study_tests.seed_t_test(treated, baseline), study_tests.tost(treated, baseline, margin)


@pytest.mark.parametrize("diffs, margin, lower_is_better, expected, why", [
    ([-0.10, -0.12, -0.09, -0.11, -0.10, -0.13], 0.02, True, "LeakyReLU better", "excludes 0"),
    ([-0.10, -0.12, -0.09, -0.11, -0.10, -0.13], 0.02, False, "ReLU better", "excludes 0"),
    ([0.10, 0.12, 0.09, 0.11, 0.10, 0.13], 0.02, True, "ReLU better", "excludes 0"),
    ([0.001, -0.002, 0.0015, -0.001, 0.0005, 0.0], 0.02, True, "equivalent within the margin", "inside ±0.02"),
    ([0.010, 0.012, 0.009, 0.011, 0.010, 0.013], 0.05, True, "equivalent within the margin", "smaller than the margin"),
    ([0.05, -0.08, 0.10, -0.02, 0.07, -0.06], 0.02, True, "inconclusive", "contains 0 and reaches beyond"),
])
def test_verdict_gives_each_of_the_four(diffs, margin, lower_is_better, expected, why):
    t, eq = _inputs(diffs, margin)
    verdict, reason = study_tests.verdict(t, eq, lower_is_better)
    assert verdict == expected and verdict in study_tests.VERDICTS
    assert why in reason


def test_verdict_without_pairs_is_inconclusive():
    nan = float("nan")
    verdict, reason = study_tests.verdict({"n_pairs": 1, "mean_diff": 0.1, "ci_low": nan, "ci_high": nan,
                                           "p_value": nan}, {"margin": 0.1, "p_value": nan}, True)
    assert verdict == "inconclusive" and "fewer than two" in reason
