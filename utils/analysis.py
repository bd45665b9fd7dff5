"""Analysis of trained runs: re-index a run's data, held-out metrics, calibration, robustness, Grad-CAM, other data."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from utils import data, evaluation
from utils.data import CLASS_NAMES, Split, cap_split
from utils.runtime import to_jsonable, write_json

THRESHOLD_METHOD = "youden"  # how the validation split picks the decision threshold (evaluation.choose_threshold)
THRESHOLD_FILE = "threshold.json"  # written into a run folder by the analysis; utils.predict reads it
ECE_BINS = 15
PREDICT_BATCH = 64
# Flat per-run numbers that the alpha table and plot compare across runs.
SUMMARY_METRICS = ("accuracy", "accuracy_real", "accuracy_fake", "precision", "recall", "f1", "roc_auc",
                   "average_precision", "eer")


@dataclass
class Run:
    """A trained run folder loaded for analysis: its record, model, re-indexed data and held-out predictions."""

    name: str
    run_dir: Path
    record: dict
    model: Any
    index: data.DatasetIndex
    report_split: str  # "test", or "val" when the dataset has no official test split
    splits: dict[str, Split]  # the evaluated (possibly capped) splits: "val" and report_split
    warning: str | None = None  # set when the re-indexed data is not what the run recorded
    y: dict[str, np.ndarray] = field(default_factory=dict)
    p: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def params(self) -> dict:
        """The training parameters recorded in metrics.json."""
        return self.record["params"]

    @property
    def image_size(self) -> int:
        """Input size the run was trained at."""
        return int(self.params["image_size"])


def read_run(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a training run folder, checked for what the analysis needs (params, model.keras)."""
    run_dir = Path(run_dir)
    metrics_path, model_path = run_dir / "metrics.json", run_dir / "model.keras"
    if not metrics_path.is_file() or not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished training run: expected metrics.json and model.keras "
                                f"(the output_dir of notebooks/train.ipynb)")
    record = json.loads(metrics_path.read_text())
    missing = {"alpha", "image_size", "seed", "val_split"} - set(record.get("params", {}))
    if missing:
        raise ValueError(f"{metrics_path} has no params {sorted(missing)}: not a metrics.json of notebooks/train.ipynb")
    return record


def run_names(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct short name per run folder: its folder name, with the parent's prefixed when names clash."""
    paths = [Path(d).resolve() for d in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}-{p.name}" for p in paths]
    names = [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]
    return names


def reindex_run(record: Mapping[str, Any], data_dir: str | None = None) -> data.DatasetIndex:
    """The run's dataset indexed with its own val_split/seed/max_images, so its validation split is the one it used.

    Without data_dir: the run's data_dir parameter, else the dataset root its metrics.json records (the auto default
    as it resolved then, which a later default may no longer be), else today's auto default.
    """
    params = record["params"]
    recorded_root = record.get("dataset", {}).get("root")
    source = next((d for d in (data_dir, params.get("data_dir")) if d not in (None, "")), None)
    if source is None and recorded_root and os.path.isdir(recorded_root):
        source = recorded_root
    return data.index_dataset(source, val_split=float(params["val_split"]), seed=int(params["seed"]),
                              max_images=params.get("max_images"))


def data_check(record: Mapping[str, Any], index: data.DatasetIndex) -> str | None:
    """A warning when the re-indexed counts differ from those the run recorded (other data than it trained on)."""
    recorded = record.get("dataset", {}).get("counts")
    if recorded and recorded != index.counts():
        return (f"the re-indexed data ({index.root}: {index.counts()}) differs from what the run recorded "
                f"({recorded}): its validation split is not the one it trained with")
    return None


def dataset_split(data_dir: str, max_images: int | None = None, seed: int = 0) -> tuple[Split, dict]:
    """Every image of a dataset (all splits, at most max_images per class) as one test Split, and its description."""
    index = data.index_dataset(data_dir, seed=seed)
    pooled = index.pooled()
    order = sorted(range(len(pooled)), key=pooled.paths.__getitem__)
    pooled = Split([pooled.paths[i] for i in order], [pooled.labels[i] for i in order])
    split = cap_split(pooled, max_images, seed)
    info = {"name": index.name, "root": index.root, "layout": index.layout, "counts": split.counts(),
            "skipped": len(index.skipped)}
    return split, info


def predict_split(model: Any, split: Split, image_size: int, batch_size: int = PREDICT_BATCH
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(fake)) of a split, images decoded and resized as in training (utils.data.make_dataset)."""
    ds = data.make_dataset(split, image_size, batch_size, training=False, cache=False)
    return evaluation.collect_predictions(model, ds)


def load_run(run_dir: str | os.PathLike, data_dir: str | None = None, max_images: int | None = None,
             name: str | None = None, batch_size: int = PREDICT_BATCH) -> Run:
    """Load a run folder (record, best model), re-index its data and predict its validation and report splits."""
    from utils.model import load_model

    run_dir = Path(run_dir)
    record = read_run(run_dir)
    model = load_model(run_dir / "model.keras")
    index = reindex_run(record, data_dir)
    report_split = "test" if index.test is not None else "val"
    seed = int(record["params"]["seed"])
    splits = {"val": cap_split(index.val, max_images, seed)}
    if report_split == "test":
        splits["test"] = cap_split(index.test, max_images, seed)
    run = Run(name or run_dir.resolve().name, run_dir, record, model, index, report_split, splits,
              warning=data_check(record, index))
    for split_name, split in splits.items():
        run.y[split_name], run.p[split_name] = predict_split(model, split, run.image_size, batch_size)
    return run


# ------------------------------------------------------------------------------------------------ held-out metrics

def held_out_metrics(run: Run, n_bins: int = ECE_BINS) -> dict[str, Any]:
    """Report-split metrics at 0.5 and at the validation-chosen threshold, plus the ECE of P(fake)."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    try:
        threshold = evaluation.choose_threshold(run.y["val"], run.p["val"], THRESHOLD_METHOD)
    except ValueError:  # a validation split with one class cannot rank; keep the default threshold
        threshold = None
    return {
        "report_split": run.report_split,
        "metrics": evaluation.binary_metrics(y, p, 0.5),
        "val_threshold": threshold,
        "threshold_method": THRESHOLD_METHOD,
        "metrics_at_val_threshold": evaluation.binary_metrics(y, p, threshold) if threshold is not None else None,
        "ece": evaluation.expected_calibration_error(y, p, n_bins),
        "ece_bins": n_bins,
    }


def metrics_frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: alpha, report split, the headline metrics at 0.5, accuracy at the val threshold, ECE."""
    rows = []
    for name, result in results.items():
        held = result["held_out"]
        m, mt = held["metrics"], held["metrics_at_val_threshold"] or {}
        rows.append({"run": name, "alpha": result["alpha"], "split": held["report_split"], "n": m["n"],
                     **{k: m[k] for k in SUMMARY_METRICS}, "ece": held["ece"],
                     "val_threshold": held["val_threshold"], "accuracy_at_val_threshold": mt.get("accuracy")})
    return pd.DataFrame(rows).set_index("run")


def record_threshold(run: Run, threshold: float | None) -> Path | None:
    """Write the validation-chosen threshold into the run folder for utils.predict; None when it cannot be written."""
    if threshold is None:
        return None
    payload = {"threshold": float(threshold), "method": THRESHOLD_METHOD, "chosen_on": "val",
               "n_val": int(len(run.y["val"]))}
    try:
        return write_json(run.run_dir / THRESHOLD_FILE, payload)
    except OSError:  # a read-only run folder (e.g. an attached Kaggle dataset): the analysis still holds the value
        return None


def plot_held_out(run: Run, out: str | os.PathLike | None = None) -> list:
    """Confusion matrix at 0.5 and ROC/PR curves of the report split (saved under `out` when given)."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    out = Path(out) if out is not None else None
    m = evaluation.binary_metrics(y, p)
    title = f"{run.name}: {run.report_split} split, threshold 0.5"
    figures = [evaluation.plot_confusion_matrix(m["confusion_matrix"], title=title,
                                               path=out / "confusion_matrix.png" if out else None)]
    if m["roc_auc"] is not None:
        figures.append(evaluation.plot_roc_pr(y, p, label=run.name, path=out / "roc_pr.png" if out else None))
    return figures


def plot_calibration(run: Run, out: str | os.PathLike | None = None):
    """Reliability diagram of P(fake) on the report split (saved under `out` when given)."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    return evaluation.plot_reliability(y, p, n_bins=ECE_BINS, path=Path(out) / "reliability.png" if out else None,
                                       title=f"{run.name}: reliability of P(fake), {run.report_split} split")


# ------------------------------------------------------------------------------------------------ robustness

def robustness(run: Run, grid: Mapping[str, Iterable[float]] = evaluation.ROBUSTNESS_GRID,
               max_images: int | None = 100, threshold: float = 0.5,
               batch_size: int = PREDICT_BATCH) -> pd.DataFrame:
    """AUC and accuracy of the run on (at most max_images per class of) its report split under each degradation."""
    split = cap_split(run.splits[run.report_split], max_images, int(run.params["seed"]))
    images = data.load_images(split.paths, run.image_size)

    def predict(x: np.ndarray) -> np.ndarray:
        return evaluation.predict_proba(run.model, x, batch_size)

    table = evaluation.robustness_table(predict, images, split.labels, grid, threshold)
    return table.assign(n=len(split))


# ------------------------------------------------------------------------------------------------ Grad-CAM

GROUP_TITLES = {"true_real": "real, called real", "true_fake": "fake, called fake",
                "false_real": "fake called real", "false_fake": "real called fake"}


def _titles(run: Run, idx: Sequence[int], heading: str | None = None) -> list[str]:
    """'<outcome>\nP(fake) x' per image; the outcome of a mistake follows from its label when no heading is given."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    return [f"{heading or GROUP_TITLES['false_fake' if y[i] == 0 else 'false_real']}\nP(fake) {p[i]:.2f}" for i in idx]


def gradcam_figures(run: Run, per_group: int = 4, mistakes: int = 8, out: str | os.PathLike | None = None
                    ) -> tuple[dict[str, Any], list]:
    """Grad-CAM (fake evidence, last conv block) over true/false real/fake examples and the most confident mistakes."""
    from utils import explanation

    split = run.splits[run.report_split]
    y, p = run.y[run.report_split], run.p[run.report_split]
    out = Path(out) if out is not None else None
    groups = explanation.select_examples(y, p, per_group=per_group)
    wrong = [int(i) for i in explanation.most_confident_mistakes(y, p, k=mistakes)]
    record = {"groups": {g: [split.paths[i] for i in idx] for g, idx in groups.items()},
              "mistakes": [{"path": split.paths[i], "label": CLASS_NAMES[int(y[i])], "p_fake": float(p[i])}
                           for i in wrong]}
    figures = []
    for name, idx, titles in (
            ("gradcam_examples", [i for g in explanation.GROUPS for i in groups[g]],
             [t for g in explanation.GROUPS for t in _titles(run, groups[g], GROUP_TITLES[g])]),
            ("gradcam_mistakes", wrong, _titles(run, wrong))):
        if not idx:
            if out is not None:
                # A figure left by an earlier analysis in this folder would otherwise pass for this one's.
                (out / f"{name}.png").unlink(missing_ok=True)
            continue
        images = data.load_images([split.paths[i] for i in idx], run.image_size)
        heatmaps = explanation.grad_cam(run.model, images)
        figures.append(explanation.plot_gradcam_grid(images, heatmaps, titles, ncols=max(per_group, 4),
                                                     path=out / f"{name}.png" if out else None))
    return record, figures


# ------------------------------------------------------------------------------------------------ other datasets

def extra_datasets(run: Run, data_dirs: Sequence[str], max_images: int | None = None, threshold: float | None = None,
                   batch_size: int = PREDICT_BATCH) -> dict[str, dict]:
    """Metrics of the run on every image of each other dataset (cross-dataset / cross-generator generalisation)."""
    results = {}
    for data_dir in data_dirs:
        split, info = dataset_split(data_dir, max_images, int(run.params["seed"]))
        y, p = predict_split(run.model, split, run.image_size, batch_size)
        key = str(data_dir)
        results[key] = {"dataset": info, "metrics": evaluation.binary_metrics(y, p, 0.5),
                        "metrics_at_val_threshold": (evaluation.binary_metrics(y, p, threshold)
                                                     if threshold is not None else None),
                        "ece": evaluation.expected_calibration_error(y, p, ECE_BINS)}
    return results


def extra_frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (run, dataset): the run's own report split first, then each extra dataset."""
    rows = []
    for name, result in results.items():
        held = result["held_out"]
        entries = [(f"own {held['report_split']} split", held["metrics"], held["ece"])]
        entries += [(data_dir, extra["metrics"], extra["ece"]) for data_dir, extra in result.get("extra", {}).items()]
        for dataset, m, ece in entries:
            rows.append({"run": name, "dataset": dataset, "n": m["n"], "accuracy": m["accuracy"],
                         "accuracy_real": m["accuracy_real"], "accuracy_fake": m["accuracy_fake"],
                         "roc_auc": m["roc_auc"], "average_precision": m["average_precision"], "eer": m["eer"],
                         "ece": ece})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ several runs

def summary_row(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Flat numbers of one run for evaluation.alpha_table: held-out metrics, ECE, worst robustness and extra-data AUCs."""
    held = result["held_out"]
    row = {"run": name, "alpha": result["alpha"], "seed": result["params"]["seed"],
           **{k: held["metrics"][k] for k in SUMMARY_METRICS},
           "ece": held["ece"]}
    for entry in result.get("robustness", []):
        # The most degraded setting of each transform: the grid lists severities from clean to worst.
        row[f"roc_auc_{entry['transform']}_worst"] = entry["roc_auc"]
    for dataset, entry in result.get("extra", {}).items():
        row[f"roc_auc_{dataset}"] = entry["metrics"]["roc_auc"]
    return row


def analyze_run(run_dir: str | os.PathLike, data_dir: str | None = None, extra_data_dirs: Sequence[str] = (),
                robustness_grid: Mapping[str, Iterable[float]] = evaluation.ROBUSTNESS_GRID,
                robustness_images: int | None = 100, gradcam_samples: int = 4, max_images: int | None = None,
                output_dir: str | os.PathLike | None = None, name: str | None = None,
                run: Run | None = None) -> dict[str, Any]:
    """The whole analysis of one run as a JSON-ready dict; figures saved under output_dir when given."""
    run = run or load_run(run_dir, data_dir, max_images, name)
    out = Path(output_dir) if output_dir is not None else None
    held = held_out_metrics(run)
    record_threshold(run, held["val_threshold"])
    plot_held_out(run, out)
    plot_calibration(run, out)
    table = robustness(run, robustness_grid, robustness_images)
    if out is not None:
        evaluation.plot_robustness(table, path=out / "robustness.png")
    gradcam, _ = gradcam_figures(run, gradcam_samples, out=out) if gradcam_samples > 0 else ({}, [])
    return to_jsonable(run_summary(run, held, table, gradcam,
                                   extra_datasets(run, extra_data_dirs, max_images, held["val_threshold"])))


def run_summary(run: Run, held: dict, robustness_table: pd.DataFrame | None, gradcam: dict,
                extra: dict) -> dict[str, Any]:
    """The analysis.json entry of one run from its parts."""
    return to_jsonable({
        "run_dir": str(run.run_dir.resolve()), "alpha": float(run.params["alpha"]), "params": run.params,
        "dataset": {"name": run.index.name, "root": run.index.root, "layout": run.index.layout,
                    "counts": {k: s.counts() for k, s in run.splits.items()}},
        "data_warning": run.warning, "held_out": held,
        "robustness": robustness_table.to_dict("records") if robustness_table is not None else [],
        "gradcam": gradcam, "extra": extra,
    })
