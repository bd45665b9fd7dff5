"""The evaluation's figures: confusion matrix, ROC and PR curves, reliability, robustness and the alpha sweep.

Each is made by utils.figures, saved as PNG at `path` when given, shown in the notebook, and returned.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from utils import comparison, metrics
from utils.data import CLASS_NAMES
from utils.figures import finish, new_figure


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
        y, p = metrics.check_scores(y, p)
        if not metrics.both_classes(y):
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
    curve = metrics.reliability_curve(y_true, p_fake, n_bins)
    ece = metrics.expected_calibration_error(y_true, p_fake, n_bins)
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
    summary = comparison.alpha_summary(df, metrics)
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
