"""Training conditions (resize, crop, train-time degradations) compared over seeds, from analysis.json files.

Every number here was computed by notebooks/analyze.ipynb on each run; this module only groups the runs by the
condition their own parameters record (never by folder name) and compares conditions seed by seed.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from utils import comparison, degradation, pipeline
from utils.figures import finish, new_figure

BASELINE_CONDITION = "resize"  # the study's protocol: whole image resized, no degradations
CONDITION_METRICS = ("accuracy", "roc_auc")  # per run on its report split at threshold 0.5


def condition(params: Mapping[str, Any]) -> str:
    """A run's training condition from its parameters: "resize" or "crop", plus " + degradations" when any is on."""
    mode = params.get("resize_mode") or pipeline.DEFAULT_RESIZE_MODE
    return mode + (" + degradations" if degradation.active(params) else "")


def load_analyses(analysis_dirs: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """analysis.json of each analysis folder (the output_dir of notebooks/analyze.ipynb), checked."""
    if not analysis_dirs:
        raise ValueError("analysis_dirs must name at least one analysis folder (output_dir of analyze.ipynb)")
    records = []
    for folder in analysis_dirs:
        path = Path(folder) / "analysis.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: expected the output_dir of notebooks/analyze.ipynb")
        record = json.loads(path.read_text())
        if not isinstance(record.get("runs"), dict) or not record["runs"]:
            raise ValueError(f"{path} holds no runs: expected an analysis.json of notebooks/analyze.ipynb")
        records.append(record)
    return records


def _run_key(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The columns that place a run: its dataset, condition, seed and alpha."""
    params = summary["params"]
    return {"dataset": summary["dataset"]["name"], "condition": condition(params), "seed": int(params["seed"]),
            "alpha": float(params["alpha"])}


def _check_one_alpha(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame itself, when each dataset's runs share one alpha (conditions are compared at a fixed slope)."""
    for dataset, alphas in frame.groupby("dataset")["alpha"].unique().items():
        if len(alphas) > 1:
            raise ValueError(f"the runs on {dataset} have several alphas ({', '.join(f'{a:g}' for a in sorted(alphas))})"
                             ": a robustness study compares training conditions at one alpha; analyse each alpha "
                             "separately (an alpha sweep is compared by analyze.ipynb itself)")
    return frame


def runs_frame(analyses: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: dataset, condition, seed, report split, its clean accuracy and ROC AUC, cross-dataset AUCs."""
    rows = []
    for record in analyses:
        for name, summary in record["runs"].items():
            held = summary["held_out"]
            row = {**_run_key(summary), "run": name, "report_split": held["report_split"],
                   "optimistic": bool(held.get("optimistic")),
                   **{metric: held["metrics"][metric] for metric in CONDITION_METRICS}}
            for source, result in (summary.get("extra") or {}).items():
                row[f"roc_auc on {source}"] = result["metrics"]["roc_auc"]
            rows.append(row)
    return _check_one_alpha(pd.DataFrame(rows))


def robustness_records(analyses: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long table: one row per run, transform and severity, with ROC AUC and accuracy (analyze.ipynb's rows)."""
    rows = [{**_run_key(summary), "run": name, **entry}
            for record in analyses for name, summary in record["runs"].items()
            for entry in summary.get("robustness", [])]
    if not rows:
        raise ValueError("no run has robustness rows: run analyze.ipynb with a robustness grid")
    return _check_one_alpha(pd.DataFrame(rows))


def _mean_interval(values: Sequence[float], digits: int = 3) -> str:
    """"mean [low, high]" with the t 95% interval over seeds; the mean alone for a single seed."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return "n/a"
    low, high = comparison.t_interval(values)
    if np.isnan(low):
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} [{max(low, 0.0):.{digits}f}, {min(high, 1.0):.{digits}f}]"


def _per_seed(frame: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Runs sharing the keys and a seed averaged into one value (the same training analysed twice counts once)."""
    return frame.groupby(keys + ["seed"], sort=False)[metric].mean().reset_index()


def severity_table(robustness: pd.DataFrame, metric: str = "roc_auc") -> pd.DataFrame:
    """Per dataset, transform and severity, one column per condition: mean over seeds with its t 95% interval."""
    keys = ["dataset", "transform", "severity"]
    per_seed = _per_seed(robustness, keys + ["condition"], metric)
    cells = per_seed.groupby(keys + ["condition"], sort=False)[metric].apply(_mean_interval).unstack("condition")
    order = pd.MultiIndex.from_frame(robustness[keys].drop_duplicates())  # the grid's own order, mildest setting first
    cells = cells.reindex(order)[list(dict.fromkeys(robustness["condition"]))]
    seeds = per_seed.groupby("condition")["seed"].nunique()
    cells.columns = [f"{c} (n={seeds[c]})" for c in cells.columns]
    return cells.fillna("-")  # a condition not trained on that dataset (crop on images no larger than image_size)


def paired_severity(robustness: pd.DataFrame, baseline: str = BASELINE_CONDITION,
                    metric: str = "roc_auc") -> pd.DataFrame:
    """Each condition minus the baseline condition, seed by seed, at every transform and severity, per dataset.

    comparison.paired_table per dataset (t interval over the seed pairs, exact sign-flip test, Holm over the
    dataset's whole table).
    """
    tables = []
    for dataset, rows in robustness.groupby("dataset", sort=False):
        wide = rows.assign(metric=rows["transform"] + " " + rows["severity"].map("{:g}".format)).pivot_table(
            index=["condition", "seed"], columns="metric", values=metric, sort=False).reset_index()
        metrics = [c for c in wide.columns if c not in ("condition", "seed")]
        table = comparison.paired_table(wide, "condition", baseline, metrics)
        tables.append(table.assign(dataset=dataset))
    if not tables:
        return pd.DataFrame()
    return pd.concat(tables, ignore_index=True)[["dataset", "condition", "metric", "n_pairs", "baseline_mean",
                                                  "treated_mean", "mean_diff", "ci_low", "ci_high", "p_value",
                                                  "min_p", "p_holm"]]


def paired_condition_frame(paired: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """paired_severity for reading: the difference with its interval in one cell, p-values rounded."""
    if paired.empty:
        return paired
    return pd.DataFrame({"dataset": paired["dataset"], "condition": paired["condition"], "setting": paired["metric"],
                         "pairs": paired["n_pairs"], "baseline": paired["baseline_mean"].round(digits),
                         "condition mean": paired["treated_mean"].round(digits),
                         "difference [95% CI]": paired.apply(comparison.format_difference, axis=1, digits=digits),
                         "p (sign-flip)": paired["p_value"].round(3), "p (Holm)": paired["p_holm"].round(3)})


def summary_table(runs: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Per dataset and condition: seeds, report split, and every numeric metric as mean [t 95% interval] over seeds."""
    metrics = [c for c in runs.columns if c in CONDITION_METRICS or c.startswith("roc_auc on ")]
    rows = []
    for (dataset, cond), group in runs.groupby(["dataset", "condition"], sort=False):
        split = group["report_split"].iloc[0] + (" (optimistic)" if group["optimistic"].any() else "")
        per_seed = group.groupby("seed")[metrics].mean()
        rows.append({"dataset": dataset, "condition": cond, "seeds": len(per_seed), "report split": split,
                     **{m: _mean_interval(per_seed[m], digits) for m in metrics if per_seed[m].notna().any()}})
    return pd.DataFrame(rows).set_index(["dataset", "condition"]).fillna("-")  # "-": not scored on that dataset


def plot_curves(robustness: pd.DataFrame, metric: str = "roc_auc", path: str | os.PathLike | None = None):
    """ROC AUC against severity, one row of panels per dataset and one panel per transform; a colour per condition:
    each seed a thin line, the mean over seeds a thick one."""
    datasets = list(dict.fromkeys(robustness["dataset"]))
    transforms = list(dict.fromkeys(robustness["transform"]))
    conditions = list(dict.fromkeys(robustness["condition"]))
    colours = {c: f"C{i}" for i, c in enumerate(conditions)}
    fig, axes = new_figure(len(datasets), len(transforms), size=(3.4, 3.0), sharey=True)
    for r, dataset in enumerate(datasets):
        for c, transform in enumerate(transforms):
            ax = axes[r, c]
            rows = robustness[(robustness["dataset"] == dataset) & (robustness["transform"] == transform)]
            for cond, group in rows.groupby("condition", sort=False):
                per_seed = _per_seed(group, ["severity"], metric)
                for _, seed_rows in per_seed.groupby("seed"):
                    ax.plot(seed_rows["severity"], seed_rows[metric], color=colours[cond], alpha=0.3, linewidth=0.8)
                mean = per_seed.groupby("severity", sort=False)[metric].mean()
                ax.plot(mean.index, mean.to_numpy(), "o-", color=colours[cond], linewidth=2,
                        label=f"{cond} ({group['seed'].nunique()} seeds)")
            severities = rows["severity"].drop_duplicates().to_numpy(dtype=float)
            if len(severities) > 1 and severities[0] > severities[-1]:
                ax.invert_xaxis()  # JPEG quality and rescale factor: degradation grows rightwards in every panel
            ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
            ax.set(title=f"{dataset}: {transform}", xlabel=transform, ylim=(0.3, 1.02))
            ax.grid(alpha=0.3)
        axes[r, 0].set_ylabel(metric.replace("roc_auc", "ROC AUC"))
        axes[r, 0].legend(loc="lower left", fontsize=7)
    finish(fig, path)
    return fig
