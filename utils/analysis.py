"""Analysis of trained runs: re-index a run's data, held-out metrics with intervals, calibration, robustness, Grad-CAM,
other data, a trivial spectrum-probe baseline beside the CNN, and the paired comparison of alphas over seeds."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from utils import comparison, data, evaluation, metrics, pipeline, plots, probes, run_files, study_plan, study_tests
from utils.data import CLASS_NAMES, Split, cap_split
from utils.runtime import recorded_path, resolve_recorded_path, to_jsonable, write_json

THRESHOLD_METHOD = "youden"  # how the validation split picks the decision threshold (metrics.choose_threshold)
ECE_BINS = 15
PREDICT_BATCH = 64
BASELINE_TRAIN_IMAGES = 1000  # per class of the run's train split that the spectrum-probe baseline is fit on
ALPHA_CRITERION = "val_log_loss"  # how a best alpha is chosen: lowest mean validation cross-entropy over its runs
# Without an official test split the report split is the validation split, which also chose the best checkpoint and
# the threshold: every number and figure read on it is marked with this note rather than passed off as a test score.
OPTIMISTIC_NOTE = ("no official test split: these are validation numbers, and the validation split also chose the "
                   "checkpoint and the threshold, so they are optimistic")
# Flat per-run numbers that the alpha table and plot compare across runs.
SUMMARY_METRICS = ("accuracy", "accuracy_real", "accuracy_fake", "precision", "recall", "f1", "roc_auc",
                   "average_precision", "eer")


def split_label(report_split: str) -> str:
    """How tables and figure titles name a report split: "test", or "val (optimistic)" (see OPTIMISTIC_NOTE)."""
    return "test" if report_split == "test" else f"{report_split} (optimistic)"


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

    @property
    def resize_mode(self) -> str:
        """How the run brought images to size ("resize" or "crop"; "resize" for runs recorded before the choice)."""
        return pipeline.run_resize_mode(self.params)

    @property
    def report_label(self) -> str:
        """The report split as tables and figure titles name it: "test", or "val (optimistic)"."""
        return split_label(self.report_split)


def read_run(run_dir: str | os.PathLike) -> dict:
    """metrics.json of a training run folder, checked for what the analysis needs (params, model.keras)."""
    run_dir = Path(run_dir)
    metrics_path, model_path = run_dir / run_files.METRICS, run_dir / run_files.MODEL
    if not metrics_path.is_file() or not model_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a finished training run: expected metrics.json and model.keras "
                                f"(the output_dir of notebooks/train.ipynb)")
    record = json.loads(metrics_path.read_text())
    missing = {"alpha", "image_size", "seed", "val_split"} - set(record.get("params", {}))
    if missing:
        raise ValueError(f"{metrics_path} has no params {sorted(missing)}: not a metrics.json of notebooks/train.ipynb")
    return record


def resolve_run_dirs(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """The run folders `run_dirs` names: folders as they are; on Kaggle, a kernel ('owner/slug' or 'slug') whose
    output is attached (either mount layout) stands for the run folders in it. A name that is neither stops here,
    with what is attached, before any model is loaded."""
    from utils import runtime

    if isinstance(run_dirs, (str, os.PathLike)) or not run_dirs:
        raise ValueError(f"run_dirs={run_dirs!r} is invalid: expected a non-empty list of run folders or, on Kaggle, "
                         "of attached training kernels")
    found: list[str] = []
    for entry in run_dirs:
        if Path(entry).is_dir():
            found.append(str(entry))
            continue
        attached = runtime.attached_output(str(entry)) if runtime.on_kaggle() and str(entry).strip() else None
        if attached is None:
            where = f"; {runtime.describe_attached()}" if runtime.on_kaggle() else ""
            raise FileNotFoundError(f"run_dirs entry {str(entry)!r} is neither a folder nor an attached kernel's "
                                    f"output{where}")
        runs = runtime.find_run_dirs(attached)
        if not runs:
            raise FileNotFoundError(f"run_dirs entry {str(entry)!r}: the attached output {attached} holds no training "
                                    f"run (no {run_files.METRICS}); did that kernel finish?")
        found += [str(run) for run in runs]
    return found


def run_names(run_dirs: Sequence[str | os.PathLike]) -> list[str]:
    """A distinct short name per run folder: its folder name, with the parent's prefixed when names clash."""
    paths = [Path(d).resolve() for d in run_dirs]
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}-{p.name}" for p in paths]
    names = [n if names.count(n) == 1 else f"{n}-{i}" for i, n in enumerate(names)]
    return names


def reindex_run(record: Mapping[str, Any], data_dir: str | Sequence[str] | None = None) -> data.DatasetIndex:
    """The run's dataset indexed with its own val_split/seed/max_images, so its validation split is the one it used.

    Without data_dir: the run's data_dir parameter (a list: its sources, pooled and held out as in training), else
    the dataset root its metrics.json records (the auto default as it resolved then, which a later default may no
    longer be), else today's auto default.
    """
    params = record["params"]
    recorded_root = resolve_recorded_path(record.get("dataset", {}).get("root"))
    source = next((d for d in (data_dir, params.get("data_dir")) if d not in (None, "")), None)
    if source is None and recorded_root and os.path.isdir(recorded_root):
        source = recorded_root
    return data.index_dataset(source, val_split=float(params["val_split"]), seed=int(params["seed"]),
                              max_images=params.get("max_images"), holdout_source=params.get("holdout_source"))


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
    info = {"name": index.name, "root": recorded_path(index.root), "layout": index.layout, "counts": split.counts(),
            "skipped": len(index.skipped)}
    return split, info


def predict_split(model: Any, split: Split, image_size: int, batch_size: int = PREDICT_BATCH,
                  resize_mode: str = pipeline.DEFAULT_RESIZE_MODE) -> tuple[np.ndarray, np.ndarray]:
    """(labels, P(fake)) of a split, images decoded and sized as the run evaluated them (utils.pipeline.make_dataset)."""
    ds = pipeline.make_dataset(split, image_size, batch_size, training=False, cache=False, resize_mode=resize_mode)
    return evaluation.collect_predictions(model, ds)


def load_run(run_dir: str | os.PathLike, data_dir: str | Sequence[str] | None = None, max_images: int | None = None,
             name: str | None = None, batch_size: int = PREDICT_BATCH) -> Run:
    """Load a run folder (record, best model), re-index its data and predict its validation and report splits."""
    from utils.model import load_model

    run_dir = Path(run_dir)
    record = read_run(run_dir)
    model = load_model(run_dir / run_files.MODEL)
    index = reindex_run(record, data_dir)
    report_split = "test" if index.test is not None else "val"
    seed = int(record["params"]["seed"])
    splits = {"val": cap_split(index.val, max_images, seed)}
    if report_split == "test":
        splits["test"] = cap_split(index.test, max_images, seed)
    run = Run(name or run_dir.resolve().name, run_dir, record, model, index, report_split, splits,
              warning=data_check(record, index))
    for split_name, split in splits.items():
        run.y[split_name], run.p[split_name] = predict_split(model, split, run.image_size, batch_size, run.resize_mode)
    return run


# ------------------------------------------------------------------------------------------------ held-out metrics

def validation_metrics(run: Run) -> dict[str, Any]:
    """Validation metrics at 0.5 plus the cross-entropy (log loss): what a best alpha may be chosen on."""
    from sklearn.metrics import log_loss

    y, p = run.y["val"], run.p["val"]
    return metrics.binary_metrics(y, p, 0.5) | {"log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7),
                                                                           labels=[0, 1]))}


def held_out_metrics(run: Run, n_bins: int = ECE_BINS,
                     n_resamples: int = metrics.BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """Report-split metrics at 0.5 and at the validation threshold, the ECE, and bootstrap intervals of both splits."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    try:
        threshold = metrics.choose_threshold(run.y["val"], run.p["val"], THRESHOLD_METHOD)
    except ValueError:  # a validation split with one class cannot rank; keep the default threshold
        threshold = None
    return {
        "report_split": run.report_split,
        "optimistic": run.report_split != "test",
        "note": None if run.report_split == "test" else OPTIMISTIC_NOTE,
        "metrics": metrics.binary_metrics(y, p, 0.5),
        "intervals": metrics.bootstrap_intervals(y, p, 0.5, n_resamples),
        "val_threshold": threshold,
        "threshold_method": THRESHOLD_METHOD,
        "metrics_at_val_threshold": metrics.binary_metrics(y, p, threshold) if threshold is not None else None,
        "ece": metrics.expected_calibration_error(y, p, n_bins),
        "ece_bins": n_bins,
        "val_metrics": validation_metrics(run),
        "val_intervals": metrics.bootstrap_intervals(run.y["val"], run.p["val"], 0.5, n_resamples),
    }


def metrics_frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run: alpha, report split, the headline metrics at 0.5, accuracy at the val threshold, ECE."""
    rows = []
    for name, result in results.items():
        held = result["held_out"]
        m, mt = held["metrics"], held["metrics_at_val_threshold"] or {}
        rows.append({"run": name, "alpha": result["alpha"], "split": split_label(held["report_split"]), "n": m["n"],
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
        return write_json(run.run_dir / run_files.THRESHOLD, payload)
    except OSError:  # a read-only run folder (e.g. an attached Kaggle dataset): the analysis still holds the value
        return None


# Which runs get per-run figures: a seeded sweep has many runs per alpha, and fifteen copies of each figure would
# bury the comparison (and the report's size); their numbers are in the tables either way.
PER_RUN_FIGURES = ("all", "first-per-alpha", "none")


def figure_runs(runs: Sequence[Run], mode: str = "all") -> list[Run]:
    """The runs whose per-run figures the report shows: all of them, the first run of each alpha, or none."""
    if mode not in PER_RUN_FIGURES:
        raise ValueError(f"per_run_figures must be one of {PER_RUN_FIGURES}, got {mode!r}")
    if mode == "none":
        return []
    if mode == "all":
        return list(runs)
    seen: set[float] = set()
    chosen = []
    for run in runs:
        alpha = float(run.params["alpha"])
        if alpha not in seen:
            seen.add(alpha)
            chosen.append(run)
    return chosen


def plot_held_out(run: Run, out: str | os.PathLike | None = None) -> list:
    """Confusion matrix at 0.5 and ROC/PR curves of the report split (saved under `out` when given)."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    out = Path(out) if out is not None else None
    m = metrics.binary_metrics(y, p)
    title = f"{run.name}: {run.report_label} split, threshold 0.5"
    figures = [plots.plot_confusion_matrix(m["confusion_matrix"], title=title,
                                           path=out / "confusion_matrix.png" if out else None)]
    if m["roc_auc"] is not None:
        figures.append(plots.plot_roc_pr(y, p, label=f"{run.name}, {run.report_label}",
                                         path=out / "roc_pr.png" if out else None))
    return figures


def plot_calibration(run: Run, out: str | os.PathLike | None = None):
    """Reliability diagram of P(fake) on the report split (saved under `out` when given)."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    return plots.plot_reliability(y, p, n_bins=ECE_BINS, path=Path(out) / "reliability.png" if out else None,
                                  title=f"{run.name}: reliability of P(fake), {run.report_label} split")


# ------------------------------------------------------------------------------------------------ per source

def source_intervals(run: Run, n_resamples: int = metrics.BOOTSTRAP_RESAMPLES,
                     threshold: float = 0.5) -> dict[str, dict[str, dict]]:
    """Per evaluated split (val, report split) and source: metrics with bootstrap intervals; {} for one source.

    Read off the run's predictions (no new inference) by training.source_metrics, which the training run's own
    by_source came from. A source without images in a split (no official test split, or in training only beside a
    held-out one) has no entry there.
    """
    from utils import training

    return training.source_metrics(run.index, run.splits, {k: (run.y[k], run.p[k]) for k in run.splits},
                                   threshold, n_resamples)


def source_interval_frame(by_source: Mapping[str, Mapping[str, Mapping[str, Any]]], digits: int = 3) -> pd.DataFrame:
    """One row per (run, split, source): n, accuracy and ROC AUC as "estimate [low, high]" at threshold 0.5."""
    rows = []
    for name, splits in by_source.items():
        report = "test" if "test" in splits else "val"
        for split, sources in splits.items():
            label = split_label(split) if split == report else split  # "val (optimistic)" when val is reported
            for source, entry in sources.items():
                intervals = entry["intervals"]["metrics"]
                rows.append({"run": name, "split": label, "source": source, "n": entry["n"],
                             **{metric: metrics.format_interval(intervals[metric], digits)
                                for metric in ("accuracy", "roc_auc")}})
    return pd.DataFrame(rows, columns=["run", "split", "source", "n", "accuracy", "roc_auc"])


# ------------------------------------------------------------------------------------------------ robustness

def robustness(run: Run, grid: Mapping[str, Iterable[float]] = evaluation.ROBUSTNESS_GRID,
               max_images: int | None = 100, threshold: float = 0.5,
               batch_size: int = PREDICT_BATCH) -> pd.DataFrame:
    """AUC and accuracy of the run on (at most max_images per class of) its report split under each degradation."""
    split = cap_split(run.splits[run.report_split], max_images, int(run.params["seed"]))
    images = pipeline.load_images(split.paths, run.image_size, run.resize_mode)

    def predict(x: np.ndarray) -> np.ndarray:
        return evaluation.predict_proba(run.model, x, batch_size)

    table = evaluation.robustness_table(predict, images, split.labels, grid, threshold)
    return table.assign(n=len(split))


# ------------------------------------------------------------------------------------------------ Grad-CAM

def robustness_by_run(tables: Mapping[str, pd.DataFrame], metric: str = "roc_auc") -> pd.DataFrame:
    """One row per transform and severity in the grid's order (mildest setting first), one column per run."""
    long = pd.concat(tables, names=["run"]).reset_index(level=0)
    wide = long.pivot_table(index=["transform", "severity"], columns="run", values=metric, sort=False)
    return wide.reindex(pd.MultiIndex.from_frame(long[["transform", "severity"]].drop_duplicates()))[list(tables)]


GROUP_TITLES = {"true_real": "real, called real", "true_fake": "fake, called fake",
                "false_real": "fake called real", "false_fake": "real called fake"}


def _titles(run: Run, idx: Sequence[int], heading: str | None = None) -> list[str]:
    """'<outcome>\nP(fake) x' per image; the outcome of a mistake follows from its label when no heading is given."""
    y, p = run.y[run.report_split], run.p[run.report_split]
    return [f"{heading or GROUP_TITLES['false_fake' if y[i] == 0 else 'false_real']}\nP(fake) {p[i]:.2f}" for i in idx]


def gradcam_figures(run: Run, per_group: int = 4, mistakes: int = 8, out: str | os.PathLike | None = None
                    ) -> tuple[dict[str, Any], list]:
    """Grad-CAM (fake evidence) over true/false real/fake examples and the most confident mistakes.

    The layer is the deepest with a map of at least 7x7 cells at the run's image size (utils.model.gradcam_layer),
    named in the record with its map size: at 64 px the last block (2x2) could only show "everywhere".
    """
    from utils import explanation
    from utils.model import gradcam_layer

    split = run.splits[run.report_split]
    y, p = run.y[run.report_split], run.p[run.report_split]
    out = Path(out) if out is not None else None
    groups = explanation.select_examples(y, p, per_group=per_group)
    wrong = [int(i) for i in explanation.most_confident_mistakes(y, p, k=mistakes)]
    layer, cells = gradcam_layer(run.model)
    record = {"layer": layer, "map_cells": list(cells), "image_size": run.image_size,
              "groups": {g: [recorded_path(split.paths[i]) for i in idx] for g, idx in groups.items()},
              "mistakes": [{"path": recorded_path(split.paths[i]), "label": CLASS_NAMES[int(y[i])],
                            "p_fake": float(p[i])} for i in wrong]}
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
        images = pipeline.load_images([split.paths[i] for i in idx], run.image_size, run.resize_mode)
        heatmaps = explanation.grad_cam(run.model, images, layer_name=layer)
        # The first panel names the layer and the split, so a saved figure says what it shows on its own.
        titles = [f"{t}\n{layer} {cells[0]}x{cells[1]}, {run.report_label}" if k == 0 else t
                  for k, t in enumerate(titles)]
        figures.append(explanation.plot_gradcam_grid(images, heatmaps, titles, ncols=max(per_group, 4),
                                                     path=out / f"{name}.png" if out else None))
    return record, figures


# ------------------------------------------------------------------------------------------------ other datasets

def extra_datasets(run: Run, data_dirs: Sequence[str], max_images: int | None = None, threshold: float | None = None,
                   batch_size: int = PREDICT_BATCH, n_resamples: int = metrics.BOOTSTRAP_RESAMPLES
                   ) -> dict[str, dict]:
    """Metrics (with bootstrap intervals) of the run on every image of each other dataset (cross-generator tests)."""
    results = {}
    for data_dir in data_dirs:
        split, info = dataset_split(data_dir, max_images, int(run.params["seed"]))
        y, p = predict_split(run.model, split, run.image_size, batch_size, run.resize_mode)
        key = str(data_dir)
        results[key] = {"dataset": info, "metrics": metrics.binary_metrics(y, p, 0.5),
                        "intervals": metrics.bootstrap_intervals(y, p, 0.5, n_resamples),
                        "metrics_at_val_threshold": (metrics.binary_metrics(y, p, threshold)
                                                     if threshold is not None else None),
                        "ece": metrics.expected_calibration_error(y, p, ECE_BINS)}
    return results


def _own_split(report_split: str) -> str:
    """How tables name a run's own report split: "own test split" or "own val (optimistic) split"."""
    return f"own {split_label(report_split)} split"


def extra_frame(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (run, dataset): the run's own report split first, then each extra dataset."""
    rows = []
    for name, result in results.items():
        held = result["held_out"]
        entries = [(_own_split(held["report_split"]), held["metrics"], held["ece"])]
        entries += [(data_dir, extra["metrics"], extra["ece"]) for data_dir, extra in result.get("extra", {}).items()]
        for dataset, m, ece in entries:
            rows.append({"run": name, "dataset": dataset, "n": m["n"], "accuracy": m["accuracy"],
                         "accuracy_real": m["accuracy_real"], "accuracy_fake": m["accuracy_fake"],
                         "roc_auc": m["roc_auc"], "average_precision": m["average_precision"], "eer": m["eer"],
                         "ece": ece})
    return pd.DataFrame(rows)


def interval_frame(results: Mapping[str, Mapping[str, Any]], which: str = "all", digits: int = 3) -> pd.DataFrame:
    """One row per (run, evaluated split): n and each interval metric as "estimate [low, high]" at threshold 0.5.

    which: "own" (validation and report split), "extra" (the extra datasets) or "all".
    """
    if which not in ("own", "extra", "all"):
        raise ValueError(f"which must be 'own', 'extra' or 'all', got {which!r}")
    rows = []
    for name, result in results.items():
        held = result["held_out"]
        entries = []
        if which in ("own", "all"):
            entries = [("val", held.get("val_intervals")), (_own_split(held["report_split"]), held.get("intervals"))]
            if held["report_split"] == "val":
                entries = entries[1:]  # the report split is the validation split: one row, marked optimistic
        if which in ("extra", "all"):
            entries += [(data_dir, extra.get("intervals")) for data_dir, extra in result.get("extra", {}).items()]
        for split, intervals in entries:
            if not intervals:
                continue
            rows.append({"run": name, "split": split, "n": intervals["n"],
                         **{metric: metrics.format_interval(intervals["metrics"][metric], digits)
                            for metric in metrics.INTERVAL_METRICS}})
    return pd.DataFrame(rows, columns=["run", "split", "n", *metrics.INTERVAL_METRICS])


# ------------------------------------------------------------------------------------------------ trivial baseline

def image_spectra(paths: Sequence[str], image_size: int, chunk: int = 256,
                  resize_mode: str = pipeline.DEFAULT_RESIZE_MODE) -> np.ndarray:
    """1-D log spectra (utils.probes) of images decoded and sized exactly as the CNN sees them, in chunks."""
    parts = [probes.spectra_from_images(pipeline.load_images(list(paths[i:i + chunk]), image_size, resize_mode))
             for i in range(0, len(paths), chunk)]
    return np.concatenate(parts) if parts else np.zeros((0, probes.SPECTRUM_BINS))


def spectrum_baseline(run: Run, data_dirs: Sequence[str] = (), max_images: int | None = None,
                      train_images: int | None = BASELINE_TRAIN_IMAGES,
                      n_resamples: int = metrics.BOOTSTRAP_RESAMPLES) -> dict[str, Any]:
    """The 1-D spectrum probe fit on the run's train split, scored on its report split and every extra dataset.

    It sees the pixels the CNN sees (same decoding and resize) and is scored on the same images at P(fake) 0.5,
    so the CNN's margin over it is what the network adds to a linear read-out of one global frequency profile.
    """
    seed = int(run.params["seed"])
    train = cap_split(run.index.train, train_images, seed)
    probe = probes.fit_spectrum_probe(image_spectra(train.paths, run.image_size, resize_mode=run.resize_mode),
                                      train.labels, seed)
    splits = {_own_split(run.report_split): run.splits[run.report_split]}
    splits |= {str(d): dataset_split(d, max_images, seed)[0] for d in data_dirs}
    scored = {}
    for key, split in splits.items():
        y = np.asarray(split.labels)
        p = probes.probe_p_fake(probe, image_spectra(split.paths, run.image_size, resize_mode=run.resize_mode))
        scored[key] = {"metrics": metrics.binary_metrics(y, p, 0.5),
                       "intervals": metrics.bootstrap_intervals(y, p, 0.5, n_resamples)}
    return {"probe": probes.SPECTRUM_PROBE, "features": f"{probes.SPECTRUM_BINS}-bin azimuthal log spectrum",
            "model": "standardised logistic regression, balanced class weights", "image_size": run.image_size,
            "train_counts": train.counts(), "threshold": 0.5, "results": scored}


def spectrum_baselines(runs: Sequence[Run], data_dirs: Sequence[str] = (), max_images: int | None = None,
                       train_images: int | None = BASELINE_TRAIN_IMAGES,
                       n_resamples: int = metrics.BOOTSTRAP_RESAMPLES) -> dict[str, dict[str, Any]]:
    """spectrum_baseline per run name, computed once per distinct input (same images, size and seed)."""
    # The probe does not depend on alpha: the runs of a sweep that share a seed share one fit.
    cache: dict[tuple, dict[str, Any]] = {}
    baselines = {}
    for run in runs:
        key = (run.image_size, run.resize_mode, int(run.params["seed"]), tuple(run.index.train.paths),
               tuple(run.splits[run.report_split].paths), run.report_split)
        if key not in cache:
            cache[key] = spectrum_baseline(run, data_dirs, max_images, train_images, n_resamples)
        baselines[run.name] = cache[key]
    return baselines


def baseline_frame(results: Mapping[str, Mapping[str, Any]], digits: int = 3) -> pd.DataFrame:
    """Per (run, dataset): the CNN's and the spectrum probe's accuracy and ROC AUC with intervals, and the AUC gain."""
    rows = []
    for name, result in results.items():
        baseline = result.get("baseline")
        if not baseline:
            continue
        held = result["held_out"]
        cnn = {_own_split(held["report_split"]): held.get("intervals")}
        cnn |= {d: extra.get("intervals") for d, extra in result.get("extra", {}).items()}
        for dataset, probe in baseline["results"].items():
            model = cnn.get(dataset)
            if not model:
                continue
            row = {"run": name, "dataset": dataset, "n": probe["intervals"]["n"]}
            for metric in ("accuracy", "roc_auc"):
                row[f"CNN {metric}"] = metrics.format_interval(model["metrics"][metric], digits)
                row[f"probe {metric}"] = metrics.format_interval(probe["intervals"]["metrics"][metric], digits)
            cnn_auc, probe_auc = model["metrics"]["roc_auc"]["estimate"], probe["metrics"]["roc_auc"]
            row["AUC gain over probe"] = (round(cnn_auc - probe_auc, digits)
                                          if cnn_auc is not None and probe_auc is not None else None)
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ several runs

def summary_row(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """Flat numbers of one run for comparison.alpha_table: held-out metrics, ECE, worst robustness and extra-data AUCs."""
    held = result["held_out"]
    at_threshold = held.get("metrics_at_val_threshold") or {}
    val = held.get("val_metrics") or {}
    row = {"run": name, "alpha": result["alpha"], "seed": result["params"]["seed"],
           **{k: held["metrics"][k] for k in SUMMARY_METRICS},
           "accuracy_at_val_threshold": at_threshold.get("accuracy"), "ece": held["ece"],
           # Validation numbers: what a best alpha may be chosen on (never a test number).
           "val_log_loss": val.get("log_loss"), "val_accuracy": val.get("accuracy"), "val_roc_auc": val.get("roc_auc")}
    for entry in result.get("robustness", []):
        # The most degraded setting of each transform: the grid lists severities from mildest to worst.
        row[f"roc_auc_{entry['transform']}_worst"] = entry["roc_auc"]
    for dataset, entry in result.get("extra", {}).items():
        row[f"roc_auc_{dataset}"] = entry["metrics"]["roc_auc"]
    return row


def tested_metrics(df: pd.DataFrame) -> list[str]:
    """The alpha table's columns compared across alphas: numeric held-out results, not the validation columns."""
    # recall (of the fake class) is accuracy_fake: tested once, so Holm's family holds no number twice.
    return [c for c in df.columns if c not in ("alpha", "baseline", "seed", *study_plan.SAME_NUMBER)
            and not c.startswith("val_") and pd.api.types.is_numeric_dtype(df[c])]


def alpha_comparison(df: pd.DataFrame, baseline_alpha: float = 0.0) -> dict[str, Any]:
    """Paired differences against the ReLU baseline over seeds (Holm-corrected) and the alpha chosen on validation."""
    paired = comparison.paired_alpha_table(df, tested_metrics(df), baseline_alpha)
    best = None
    if df["alpha"].nunique() > 1 and ALPHA_CRITERION in df.columns and df[ALPHA_CRITERION].notna().any():
        alpha = comparison.choose_alpha(df, ALPHA_CRITERION)
        rows = df[df["alpha"] == alpha]
        best = {"alpha": alpha, "criterion": ALPHA_CRITERION, "chosen_on": "val", "runs": int(len(rows)),
                "reported": {m: float(rows[m].mean()) for m in ("accuracy", "roc_auc", "average_precision", "eer")
                             if m in rows and rows[m].notna().any()}}
    n_pairs = sorted(set(paired["n_pairs"].astype(int))) if len(paired) else []
    return {"paired": paired, "best_alpha": best, "tests": int(paired["p_value"].notna().sum()) if len(paired) else 0,
            "n_pairs": n_pairs, "min_p": float(paired["min_p"].min()) if paired["min_p"].notna().any() else None,
            "test": "two-sided sign-flip permutation test of the mean paired difference (exact)",
            "interval": "Student-t 95% interval of the mean paired difference", "correction": "Holm"}


def paired_alpha_frame(paired: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """The paired alpha table for a report: difference with its interval as text, p-values, pairs and minimum p."""
    if paired.empty:
        return pd.DataFrame(columns=["alpha", "metric", "pairs", "ReLU mean", "alpha mean", "difference [95% CI]",
                                     "p (sign-flip)", "min attainable p", "p (Holm)"])

    return pd.DataFrame({"alpha": paired["alpha"], "metric": paired["metric"], "pairs": paired["n_pairs"],
                         "ReLU mean": paired["baseline_mean"].round(digits),
                         "alpha mean": paired["alpha_mean"].round(digits),
                         "difference [95% CI]": paired.apply(comparison.format_difference, axis=1, digits=digits),
                         "p (sign-flip)": paired["p_value"].round(3), "min attainable p": paired["min_p"].round(3),
                         "p (Holm)": paired["p_holm"].round(3)})


# ------------------------------------------------------------------------------------------------ the study plan

def _images(run: Run) -> list[tuple[str, int]]:
    """The report split's images as (path relative to the dataset root, label): the same images read from two mounts
    of one dataset compare equal."""
    split = run.splits[run.report_split]
    return [(os.path.relpath(path, run.index.root), int(label)) for path, label in zip(split.paths, split.labels)]


def _primary_losses(plan: Mapping[str, Any], runs: Sequence[Run]) -> tuple[list[int], dict[int, tuple], list[str]]:
    """Per seed pair of the plan: the per-image losses of (ReLU, LeakyReLU) on their shared report images; and the
    planned runs that are missing."""
    base, treated = plan["slopes"]
    by_key: dict[tuple[float, int], Run] = {}
    for run in runs:
        key = (float(run.params["alpha"]), int(run.params["seed"]))
        if key in by_key:
            raise ValueError(f"runs {by_key[key].name} and {run.name} are both alpha {key[0]:g}, seed {key[1]}: "
                             "a plan has one run per slope and seed")
        by_key[key] = run
    missing = [f"alpha {a:g} seed {s}" for a in (base, treated) for s in plan["seeds"] if (a, s) not in by_key]
    seeds, losses = [], {}
    for seed in plan["seeds"]:
        if (base, seed) not in by_key or (treated, seed) not in by_key:
            continue
        relu, leaky = by_key[(base, seed)], by_key[(treated, seed)]
        if relu.report_split != leaky.report_split or _images(relu) != _images(leaky):
            raise ValueError(f"runs {relu.name} and {leaky.name} (seed {seed}) were not scored on the same images: "
                             "the per-image paired tests need them")
        split = relu.report_split
        losses[seed] = (study_tests.per_image_log_loss(relu.y[split], relu.p[split]),
                        study_tests.per_image_log_loss(leaky.y[split], leaky.p[split]))
        seeds.append(seed)
    return seeds, losses, missing


def study_answer(plan: Mapping[str, Any], runs: Sequence[Run], df: pd.DataFrame) -> dict[str, Any]:
    """The plan's answer: its runs checked against it (refused with the run and parameter), the primary endpoint's
    tests (per seed pair, hierarchical bootstrap, paired t-test, sign-flip, TOST) and verdict, and the secondary
    metrics, Holm-corrected over the plan's family only (exploratory)."""
    plan = study_plan.checked_plan(plan)
    study_plan.check_runs(plan, {run.name: run.params for run in runs})
    study_plan.check_same_protocol({run.name: run.record.get("training") for run in runs})
    primary = plan["primary"]
    level, resamples = 1 - primary["significance_level"], primary["bootstrap_resamples"]
    seeds, losses, missing = _primary_losses(plan, runs)
    per_pair = [{"seed": seed, **study_tests.paired_bootstrap(losses[seed][1] - losses[seed][0], resamples, level,
                                                              seed=seed)} for seed in seeds]
    relu = np.array([losses[seed][0].mean() for seed in seeds])
    leaky = np.array([losses[seed][1].mean() for seed in seeds])
    answer: dict[str, Any] = {
        "plan": plan, "metric": primary["metric"], "split": runs[0].report_split if runs else None,
        "n_pairs": len(seeds), "planned_pairs": len(plan["seeds"]), "missing_runs": missing,
        "relu_mean": float(relu.mean()) if len(seeds) else None,
        "leaky_mean": float(leaky.mean()) if len(seeds) else None, "per_pair": per_pair,
        "t_test": None, "tost": None, "sign_flip": None, "hierarchical_bootstrap": None}
    if len(seeds) >= 2:
        answer["t_test"] = study_tests.seed_t_test(leaky, relu, level)
        answer["tost"] = study_tests.tost(leaky, relu, primary["margin"], level)
        answer["sign_flip"] = comparison.sign_flip_test(leaky, relu)
        answer["hierarchical_bootstrap"] = study_tests.hierarchical_bootstrap(
            [losses[seed][1] - losses[seed][0] for seed in seeds], resamples, level)
        answer["verdict"], answer["why"] = study_tests.verdict(
            answer["t_test"], answer["tost"], study_plan.PRIMARY_METRICS[primary["metric"]],
            primary["significance_level"])
    else:
        answer["verdict"], answer["why"] = "inconclusive", f"{len(seeds)} seed pair(s): the t-test needs two or more"
    if missing:
        answer["why"] += (f"; only {len(seeds)} of the plan's {len(plan['seeds'])} seed pairs finished "
                          f"(missing: {', '.join(missing)})")
    planned = df[df["alpha"].isin(plan["slopes"])]
    answer["secondary"] = comparison.paired_alpha_table(planned, plan["secondary"], plan["slopes"][0], level=level)
    return answer


def study_heading(answer: Mapping[str, Any]) -> str:
    """The plan's question, its endpoint and the verdict with why, as the report's first lines of the comparison."""
    plan, primary = answer["plan"], answer["plan"]["primary"]
    means = (f"; mean test {answer['metric']} ReLU {answer['relu_mean']:.4f}, LeakyReLU {answer['leaky_mean']:.4f}"
             if answer["n_pairs"] else "")
    return (f"{plan['question']}\nplan {plan['name']} ({plan['hash']}): primary endpoint test {answer['metric']} "
            f"({'lower' if study_plan.PRIMARY_METRICS[answer['metric']] else 'higher'} is better), "
            f"LeakyReLU minus ReLU over {answer['n_pairs']} seed pair(s){means}; level "
            f"{primary['significance_level']:g}, equivalence margin ±{primary['margin']:g}\n"
            f"VERDICT: {answer['verdict']} ({answer['why']})")


def study_frames(answer: Mapping[str, Any], digits: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The primary endpoint's tests as a table (LeakyReLU minus ReLU), and its per-seed-pair paired bootstraps."""
    def text(result: Mapping[str, Any] | None, mean: float | None = None) -> str | None:
        return comparison.format_difference({**result, "mean_diff": result.get("mean_diff", mean)}, digits) \
            if result else None

    t, eq, hier, sign = (answer.get(k) for k in ("t_test", "tost", "hierarchical_bootstrap", "sign_flip"))
    primary = answer["plan"]["primary"]
    level = 1 - primary["significance_level"]
    rows = [(f"paired t-test over seeds (primary), {level:.0%} t interval", text(t), t),
            (f"TOST against ±{primary['margin']:g} (equivalence), {1 - 2 * primary['significance_level']:.0%} "
             "t interval", text(eq, t and t["mean_diff"]), eq),
            ("sign-flip over seeds (exact)", None, sign),
            (f"hierarchical bootstrap, seeds then images, {level:.0%} percentile interval", text(hier), hier)]
    table = pd.DataFrame([{"test": name, "pairs": answer["n_pairs"], "difference [CI]": diff,
                           "p": round(result["p_value"], 4) if result else None} for name, diff, result in rows])
    pairs = pd.DataFrame([{"seed": r["seed"], "images": r["n_images"], "difference [CI]": text(r),
                           "p (paired bootstrap over images)": round(r["p_value"], 4)} for r in answer["per_pair"]])
    return table, pairs


def run_summary(run: Run, held: dict, robustness_table: pd.DataFrame | None, gradcam: dict,
                extra: dict, baseline: dict | None = None, by_source: dict | None = None) -> dict[str, Any]:
    """The analysis.json entry of one run from its parts; a multi-source run adds its sources and by_source."""
    dataset = {"name": run.index.name, "root": recorded_path(run.index.root), "layout": run.index.layout,
               "counts": {k: s.counts() for k, s in run.splits.items()}}
    if run.index.sources:
        sources = [{**source, "root": recorded_path(source["root"])} for source in run.index.sources]
        dataset |= {"sources": sources, "holdout_source": run.index.holdout_source}
    return to_jsonable({
        "run_dir": recorded_path(run.run_dir.resolve()), "alpha": float(run.params["alpha"]), "params": run.params,
        "dataset": dataset,
        "data_warning": run.warning, "held_out": held,
        "robustness": robustness_table.to_dict("records") if robustness_table is not None else [],
        "gradcam": gradcam, "extra": extra, "baseline": baseline,
        **({"by_source": by_source} if by_source else {}),
    })
