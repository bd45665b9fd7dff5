"""The alpha table and summary, Holm, the sign-flip test, and alphas paired with the ReLU baseline over seeds."""
from __future__ import annotations

import numpy as np
import pytest

from utils.comparison import alpha_summary, alpha_table, choose_alpha, holm, paired_alpha_table, sign_flip_test


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
