"""Every evaluation figure is returned and written as a PNG."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest
from matplotlib.figure import Figure

from utils.comparison import alpha_table
from utils.evaluation import ROBUSTNESS_GRID
from utils.metrics import binary_metrics
from utils.plots import plot_alpha, plot_confusion_matrix, plot_reliability, plot_robustness, plot_roc_pr

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_return_figures_and_write_png(tmp_path, scores):
    y, p = scores
    # A robustness table as evaluation.robustness_table makes it: every transform and severity of the grid.
    table = pd.DataFrame([{"transform": name, "severity": severity, "accuracy": 0.9 - k / 20, "roc_auc": 0.95 - k / 20}
                          for name, severities in ROBUSTNESS_GRID.items() for k, severity in enumerate(severities)])
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
