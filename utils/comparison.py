"""Comparison across runs: the alpha table, and each alpha paired with the ReLU baseline over seeds (tests, intervals)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from utils.metrics import CI_LEVEL


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


def holm(p_values: Sequence[float | None]) -> np.ndarray:
    """Holm's step-down adjusted p-values (statsmodels' multipletests); None/NaN entries stay NaN and do not count."""
    from statsmodels.stats.multitest import multipletests

    p = np.array([np.nan if v is None else float(v) for v in p_values], dtype=np.float64)
    adjusted = np.full(len(p), np.nan)
    tested = np.flatnonzero(np.isfinite(p))
    if len(tested) == 0:
        return adjusted
    if ((p[tested] < 0) | (p[tested] > 1)).any():
        raise ValueError("p_values must lie in [0, 1]")
    adjusted[tested] = multipletests(p[tested], method="holm")[1]
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
    if np.ptp(diffs) == 0:  # no spread: scipy's interval is NaN, the mean is known exactly
        return float(diffs[0]), float(diffs[0])
    # One-sample t on the differences: the same test and interval as scipy.stats.ttest_rel on the pairs.
    interval = stats.ttest_1samp(diffs, 0.0).confidence_interval(confidence_level=level)
    return float(interval.low), float(interval.high)


def paired_table(df: pd.DataFrame, group: str, baseline: Any, metrics: Sequence[str] | None = None,
                 pair_on: str = "seed", level: float = CI_LEVEL) -> pd.DataFrame:
    """Each value of `group` against `baseline`, per metric: paired difference over seeds, t interval, sign-flip p, Holm.

    Runs are paired by `pair_on` (the seed: same split, initialisation and data order), runs sharing a group value
    and a seed are averaged first. Holm's correction runs over every test in the table (all groups x all metrics):
    pass only the family a plan declares. Rows without a pair (no baseline run with that seed) get n_pairs 0 and no test.
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
