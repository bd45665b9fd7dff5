"""The study's tests of its primary endpoint: per-image paired bootstrap per seed pair, the hierarchical bootstrap over
seeds then images, the paired t-test over seeds with its interval, the equivalence test (TOST), the power statement,
and the decision rule that turns them into one of four verdicts."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

LOG_LOSS_CLIP = 1e-7  # as utils.analysis.validation_metrics: one certain mistake costs 16 nats, not infinity
POWER = 0.8  # the power the detectable difference is stated at
VERDICTS = ("LeakyReLU better", "ReLU better", "equivalent within the margin", "inconclusive")


def per_image_log_loss(y: Any, p: Any) -> np.ndarray:
    """Each image's cross-entropy of P(fake) against its label (nats, P clipped to [1e-7, 1 - 1e-7])."""
    y, p = np.asarray(y, dtype=np.float64), np.clip(np.asarray(p, dtype=np.float64), LOG_LOSS_CLIP, 1 - LOG_LOSS_CLIP)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels and probabilities must be 1-D and the same length, got {y.shape} and {p.shape}")
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the mean difference is 0": twice the smaller tail share at 0, at most 1."""
    return float(min(1.0, 2 * min(np.mean(draws <= 0), np.mean(draws >= 0))))


def _image_means(diffs: np.ndarray, n_resamples: int, rng: np.random.Generator, chunk: int = 200) -> np.ndarray:
    """n_resamples means of `diffs` resampled with replacement (images drawn alike for both models of the pair)."""
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        means[start:stop] = diffs[rng.integers(0, len(diffs), size=(stop - start, len(diffs)))].mean(axis=1)
    return means


def paired_bootstrap(diffs: Any, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """One seed pair's per-image differences (treated minus baseline on the same images): mean, percentile interval
    and two-sided p of a bootstrap over images."""
    diffs = np.asarray(diffs, dtype=np.float64)
    if diffs.ndim != 1 or len(diffs) < 2:
        raise ValueError(f"paired_bootstrap needs at least two per-image differences, got shape {diffs.shape}")
    draws = _image_means(diffs, n_resamples, np.random.default_rng(seed))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"n_images": len(diffs), "mean_diff": float(diffs.mean()), "ci_low": float(low), "ci_high": float(high),
            "p_value": _bootstrap_p(draws)}


def hierarchical_bootstrap(diffs_per_seed: Sequence[Any], n_resamples: int = 2000, level: float = 0.95,
                           seed: int = 0) -> dict[str, Any]:
    """The mean difference over seed pairs, resampling seed pairs and then images within each drawn pair.

    Drawing seeds first carries the seed-to-seed spread into the interval (what another set of seeds would give);
    drawing images within each pair carries the test set's sampling noise. Each drawn pair gets its own image draw.
    """
    diffs = [np.asarray(d, dtype=np.float64) for d in diffs_per_seed]
    if len(diffs) < 2 or any(d.ndim != 1 or len(d) < 2 for d in diffs):
        raise ValueError("hierarchical_bootstrap needs at least two seed pairs, each with two or more images")
    rng = np.random.default_rng(seed)
    image_draws = np.stack([_image_means(d, n_resamples, rng) for d in diffs])  # seed pair x resample
    n = len(diffs)
    picked = rng.integers(0, n, size=(n_resamples, n))
    # Independent image draws for each position, so a seed pair drawn twice is not counted with the same draw twice.
    columns = np.stack([rng.permutation(n_resamples) for _ in range(n)], axis=1)
    draws = image_draws[picked, columns].mean(axis=1)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return {"n_pairs": n, "n_images": [len(d) for d in diffs],
            "mean_diff": float(np.mean([d.mean() for d in diffs])), "ci_low": float(low), "ci_high": float(high),
            "p_value": _bootstrap_p(draws)}


def seed_t_test(treated: Any, baseline: Any, level: float = 0.95) -> dict[str, Any]:
    """Paired Student-t test over seeds (scipy.stats.ttest_rel) and its interval of the mean paired difference."""
    from scipy import stats

    a, b = np.asarray(treated, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"seed_t_test needs two paired 1-D samples of two or more seeds, got {a.shape} and {b.shape}")
    result = stats.ttest_rel(a, b)
    interval = result.confidence_interval(confidence_level=level)
    return {"n_pairs": len(a), "mean_diff": float(np.mean(a - b)), "sd_diff": float(np.std(a - b, ddof=1)),
            "statistic": float(result.statistic), "df": int(result.df), "p_value": float(result.pvalue),
            "ci_low": float(interval.low), "ci_high": float(interval.high)}


def tost(treated: Any, baseline: Any, margin: float, level: float = 0.95) -> dict[str, Any]:
    """Two one-sided paired t-tests that the mean difference lies inside (-margin, +margin) (statsmodels' ttost_paired),
    with the (1 - 2 alpha) interval whose inclusion in the margin is the same decision."""
    from statsmodels.stats.weightstats import ttost_paired

    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin!r}")
    a, b = np.asarray(treated, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    p_value, _, _ = ttost_paired(a, b, -margin, margin)
    alpha = 1 - level
    interval = seed_t_test(a, b, level=1 - 2 * alpha)
    return {"margin": float(margin), "p_value": float(p_value), "level": 1 - 2 * alpha,
            "ci_low": interval["ci_low"], "ci_high": interval["ci_high"]}


def pair_sd(seed_sd: float, image_sd: float, test_images: int) -> float:
    """The SD of one seed pair's measured difference: the seed-to-seed spread plus the test set's sampling noise."""
    return float(np.sqrt(seed_sd ** 2 + image_sd ** 2 / test_images))


def detectable_difference(n_pairs: int, sd: float, level: float = 0.95, power: float = POWER) -> float:
    """The smallest true mean difference the two-sided paired t-test over n_pairs seeds detects with `power`
    (statsmodels' TTestPower), given the SD of one pair's difference; NaN below two pairs."""
    from statsmodels.stats.power import TTestPower

    if n_pairs < 2:
        return float("nan")
    effect = TTestPower().solve_power(effect_size=None, nobs=n_pairs, alpha=1 - level, power=power,
                                      alternative="two-sided")
    return float(effect * sd)


def verdict(t_test: dict[str, Any], equivalence: dict[str, Any], lower_is_better: bool,
            significance: float = 0.05) -> tuple[str, str]:
    """One of VERDICTS and why, from the primary endpoint's paired t-test (LeakyReLU minus ReLU) and its TOST.

    Equivalence first: a difference the test detects but that lies inside the margin is smaller than what matters.
    Then superiority, when the t-test rejects "no difference"; else inconclusive, saying where the interval reaches.
    """
    margin, level = equivalence["margin"], 1 - significance
    low, high, diff = t_test["ci_low"], t_test["ci_high"], t_test["mean_diff"]
    interval = f"{level:.0%} interval [{low:+.4g}, {high:+.4g}]"
    if t_test.get("n_pairs", 2) < 2 or not np.isfinite([low, high, equivalence["p_value"]]).all():
        return "inconclusive", "fewer than two seed pairs with a finite result: nothing to test"
    if equivalence["p_value"] < significance:
        detected = " (a difference is detected, but smaller than the margin)" if t_test["p_value"] < significance else ""
        return VERDICTS[2], (f"TOST p = {equivalence['p_value']:.3g} < {significance:g}: the "
                             f"{equivalence['level']:.0%} interval [{equivalence['ci_low']:+.4g}, "
                             f"{equivalence['ci_high']:+.4g}] lies inside ±{margin:g}{detected}")
    if t_test["p_value"] < significance:
        leaky_better = (diff < 0) == lower_is_better
        return (VERDICTS[0] if leaky_better else VERDICTS[1],
                f"paired t-test p = {t_test['p_value']:.3g} < {significance:g}; {interval} excludes 0")
    reaches = [f"+{margin:g}"] * (high >= margin) + [f"-{margin:g}"] * (low <= -margin)
    beyond = f" and reaches beyond {' and '.join(reaches)}" if reaches else ""
    return VERDICTS[3], (f"paired t-test p = {t_test['p_value']:.3g} and TOST p = {equivalence['p_value']:.3g}, "
                         f"neither below {significance:g}: the {interval} contains 0{beyond}")
