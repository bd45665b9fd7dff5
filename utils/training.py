"""Training: compile and fit (best checkpoint, history, resume backup, time budget, replica-exact validation) and
the run record."""
from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from utils import accelerator, data, run_files
from utils.figures import finish, new_figure
from utils.model import nested_layers
from utils.progress import TerminalProgress, expected_duration, say
from utils.runtime import EVALUATION_RESERVE_HOURS, KAGGLE_SESSION_HOURS, write_json

# The notebook imports this module in its first code cell: the session's clock for the time budget.
SESSION_STARTED = time.time()


def compile_model(model: keras.Model, learning_rate: float, steps_per_execution: int | None = None) -> keras.Model:
    """Adam and sparse cross-entropy on the softmax; loss scaling, XLA and steps per execution chosen for the device."""
    if steps_per_execution is None:
        # Batches per call into the compiled train function. A TPU or GPU step is short enough that the Python
        # round trip per step shows; on CPU a step takes far longer and N > 1 measured no faster
        # (results/bench), so keep 1 there. Callbacks here act per epoch, so N > 1 changes no result.
        steps_per_execution = {"tpu": 32, "gpu": 4}.get(accelerator.platform(), 1)
    # Loss scaling: under mixed_float16, Keras 3's compile wraps the optimizer in LossScaleOptimizer itself
    # (keras/src/trainers/trainer.py, auto_scale_loss=True); mixed_bfloat16 has float32's range and needs none.
    # XLA: under JAX every step is compiled. Under TensorFlow "auto" resolves to off on CPU, under any tf.distribute
    # strategy and for models holding RandomRotation/RandomZoom (supports_jit = False), i.e. for the study's model;
    # it is on only for a single GPU without those layers.
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  steps_per_execution=steps_per_execution, jit_compile="auto")
    return model


class EpochLog(keras.callbacks.Callback):
    """One readable line per epoch (papermill logs cannot show Keras' progress bars) with training throughput, in the
    notebook and on the kernel's terminal; after the first epoch this execution runs, the time the rest will take.

    images_per_second counts the training steps alone: from the epoch's start to its last training batch. The
    validation pass after it (Keras' own, or ReplicaValidation's in on_epoch_end, listed before this callback) is
    timed apart as validation_seconds; epoch_seconds is the whole epoch.
    """

    def __init__(self, epochs: int, train_images: int, on_cpu: bool = False):
        super().__init__()
        self.epochs, self.train_images, self.on_cpu = epochs, train_images, on_cpu
        self._estimated = False

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._trained = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._trained = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        training = max(self._trained - self._start, 1e-9)
        values = "  ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        say(f"epoch {epoch + 1}/{self.epochs}  {values}  {seconds:.1f} s ({training:.1f} s training, "
            f"{seconds - training:.1f} s validation)  {self.train_images / training:.1f} img/s training")
        if not self._estimated and epoch + 1 < self.epochs:
            self._estimated = True
            say(expected_duration(seconds, self.epochs - epoch - 1, self.on_cpu))
        if logs is not None:
            # Same dict the CSV logger writes next, so the history keeps the timing too (it survives a resume).
            logs["epoch_seconds"] = seconds
            logs["validation_seconds"] = seconds - training
            logs["images_per_second"] = self.train_images / training


class ReplicaValidation(keras.callbacks.Callback):
    """val_loss and val_accuracy over every validation image, on all replicas, in place of Keras' own validation.

    Keras 3 cannot validate every split size under a strategy: it averages the first batch over the replicas, which
    fails unless the batch splits evenly, and a replica given no image (a last batch smaller than the replicas)
    fails in batch normalisation. Padding the batches would make Keras count the padding in val_loss. So the
    epoch's validation runs here, on padded batches with the padding dropped from the outputs
    (evaluation.replica_predictor), and the compiled loss and accuracy are taken per image, each image counted once.
    Listed first, it fills the epoch's logs before the callbacks that read them (checkpoint, history, stopping).
    """

    def __init__(self, dataset: Any):
        super().__init__()
        self.dataset = dataset

    def on_epoch_end(self, epoch, logs=None):
        from utils.evaluation import replica_predictor

        average_moving_statistics(self.model)  # so the model validated is the model checkpointed
        labels, outputs = replica_predictor(self.model)(self.dataset)
        if logs is not None:
            logs.update(validation_logs(labels, outputs))


def average_moving_statistics(model: keras.Model) -> int:
    """Give every replica the mean of the replicas' batch-norm moving statistics; returns the variables averaged.

    Under a strategy Keras 3 keeps the moving mean and variance as mirrored variables without aggregation: each
    replica updates its own copy from its own batches, the copies drift apart, inference on a replica uses its own
    and a saved model the first replica's. The mean (what tf.keras reported) makes them one again. Training steps
    use batch statistics, so this changes no gradient. Under JAX's DataParallel there is nothing to average: each
    statistic is one replicated variable, updated from the whole global batch.
    """
    if keras.backend.backend() != "tensorflow":
        return 0
    import tensorflow as tf

    strategy = model.distribute_strategy
    averaged = 0
    for norm in (layer for layer in nested_layers(model) if isinstance(layer, keras.layers.BatchNormalization)):
        for variable in (norm.moving_mean, norm.moving_variance):
            copies = strategy.experimental_local_results(getattr(variable, "value", variable))
            if len(copies) > 1:
                mean = tf.add_n([tf.convert_to_tensor(copy) for copy in copies]) / len(copies)
                for copy in copies:
                    copy.assign(mean)
                averaged += 1
    return averaged


def split_seed_streams(model: keras.Model) -> int:
    """Give each replica's copy of every SeedGenerator in the model a stream of its own; returns the generators split.

    Under a strategy Keras 3 mirrors a SeedGenerator's state: every replica starts from the same state and steps it
    alike, so both replicas draw the same flips, angles, zooms and contrasts for their halves of the batch
    (measured: two replicas' augmented outputs of one batch were identical). Replica r > 0 gets the first replica's
    state with its seed replaced by stream_seed(seed, r), its step count kept; the first replica's stream, the one
    a single device draws, is left alone, so the draws stay exact for a given seed and replica count.
    """
    from utils.augmentation import stream_seed

    strategy = model.distribute_strategy
    split = 0
    for generator in (g for layer in [model, *nested_layers(model)] for g in getattr(layer, "_seed_generators", [])):
        copies = strategy.experimental_local_results(getattr(generator.state, "value", generator.state))
        if len(copies) < 2:
            continue
        seed, step = (int(v) for v in np.asarray(copies[0]))
        for replica, copy in enumerate(copies[1:], start=1):
            copy.assign(np.array([stream_seed(seed, replica), step], dtype=copy.dtype.as_numpy_dtype))
        split += 1
    return split


class ReplicaSeedStreams(keras.callbacks.Callback):
    """split_seed_streams at the start of training, after BackupAndRestore has restored the model."""

    def on_train_begin(self, logs=None):
        split_seed_streams(self.model)


def validation_logs(labels: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    """val_loss and val_accuracy of softmax outputs [N, 2], the mean over images of compile_model's loss and metric."""
    labels, outputs = np.asarray(labels, dtype=np.int64), np.asarray(outputs, dtype=np.float64)
    if len(labels) == 0 or outputs.shape != (len(labels), len(data.CLASS_NAMES)):
        raise ValueError(f"validation_logs needs labels [N] and softmax outputs [N, {len(data.CLASS_NAMES)}] with "
                         f"N >= 1, got {labels.shape} and {outputs.shape}")
    # Keras takes the cross-entropy of a softmax layer from its logits, unclipped; -log p equals it but where p
    # underflows to 0, which is only kept finite here (its own clip to [1e-7, 1 - 1e-7] would differ).
    p_true = np.maximum(outputs[np.arange(len(labels)), labels], np.finfo(np.float32).tiny)
    return {"val_loss": float(np.mean(-np.log(p_true))),
            "val_accuracy": float(np.mean(np.argmax(outputs, axis=1) == labels))}


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model with the lowest val_loss atomically; after a resume it remembers the best of the earlier epochs."""

    def __init__(self, path: Path, history_csv: Path, monitor: str = "val_loss"):
        super().__init__()
        self.path, self.monitor = Path(path), monitor
        previous = read_history(history_csv)
        self.best = float(previous[monitor].min()) if monitor in previous and self.path.exists() else math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best = float(value)
            tmp = self.path.with_name(f".tmp-{self.path.name}")
            save_for_inference(self.model, tmp)
            os.replace(tmp, self.path)


def save_for_inference(model: keras.Model, path: str | os.PathLike) -> None:
    """Save the model (architecture, weights) without its optimizer state: what inference and the analysis load.

    Keras' .keras format ignores include_optimizer, and Adam's two moment buffers triple the file (the demo's
    checkpoint: 283 MB with them, 95 MB without); the optimizer state a resume needs is in the backup instead.
    """
    optimizer = model.optimizer
    model.optimizer = None
    try:
        model.save(path)
    finally:
        model.optimizer = optimizer


class TimeBudgetReached(Exception):
    """Raised by TimeBudget to end training with the resume backup in place (a normal stop would delete it)."""


class TimeBudget(keras.callbacks.Callback):
    """End training after the last epoch that fits before `deadline` (a time.time() value), judged by the longest epoch."""

    def __init__(self, deadline: float, epochs: int):
        super().__init__()
        self.deadline, self.epochs, self.longest = deadline, epochs, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        self.longest = max(self.longest, now - self._start)
        if epoch + 1 < self.epochs and now + self.longest > self.deadline:
            raise TimeBudgetReached(f"time budget reached after epoch {epoch + 1}/{self.epochs}: another epoch "
                                    f"(~{self.longest:.0f} s) would end {now + self.longest - self.deadline:.0f} s "
                                    "past it")


def resolve_time_budget(time_budget_hours: float | None) -> float | None:
    """Hours of this execution training may use: the parameter, or on Kaggle (None) the session limit less a reserve."""
    from utils.runtime import on_kaggle

    if time_budget_hours is None:
        return KAGGLE_SESSION_HOURS - EVALUATION_RESERVE_HOURS if on_kaggle() else None
    return float(time_budget_hours) or None  # 0 switches it off


class StopAfterEpoch(keras.callbacks.Callback):
    """Simulate an interruption after a given epoch (used by the resume test and for time-boxed runs)."""

    def __init__(self, epoch: int):
        super().__init__()
        self.stop_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.stop_epoch:
            raise KeyboardInterrupt(f"stopped after epoch {epoch + 1}")


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    """The per-epoch history CSV, one row per epoch (a row repeated by a resume keeps its last version)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    history = pd.read_csv(path)
    return history.drop_duplicates("epoch", keep="last").reset_index(drop=True)


class ReplicaChangeError(RuntimeError):
    """A resume on another number of replicas than the run trained on, without allow_replica_change."""


def check_replicas(output_dir: str | os.PathLike, replicas: int, resuming: bool,
                   allow_replica_change: bool = False) -> dict[str, Any]:
    """Record the replica count training runs on (run_files.REPLICAS); refuse a resume on another count unless allowed.

    Another count changes the global batch and, through it, the learning rate in the middle of a run. Returns the
    record: {"replicas": this session's count, "earlier": the counts of earlier sessions that differed}.
    """
    path = Path(output_dir) / run_files.REPLICAS
    try:
        previous = json.loads(path.read_text()) if resuming else {}
    except (OSError, ValueError):
        previous = {}
    trained_on = previous.get("replicas")
    earlier = list(previous.get("earlier", []))
    if trained_on is not None and trained_on != replicas:
        if not allow_replica_change:
            raise ReplicaChangeError(
                f"{output_dir} holds a run trained on {trained_on} replica(s); this session has {replicas}: resuming "
                f"would change the global batch (batch_size x replicas) and the learning rate mid-run. Resume where "
                f"it has {trained_on} replica(s), or set allow_replica_change = True to continue on {replicas} (the "
                f"record then names both counts).")
        earlier.append(trained_on)
    record = {"replicas": replicas, "earlier": earlier}
    write_json(path, record)
    return record


def fit(model: keras.Model, train_ds: Any, val_ds: Any, epochs: int, output_dir: str | os.PathLike,
        train_images: int, early_stopping: int = 0, extra_callbacks: list | None = None,
        time_budget_hours: float | None = None, started: float | None = None,
        allow_replica_change: bool = False) -> pd.DataFrame:
    """Train with best checkpoint, per-epoch CSV history and resume-after-interruption; returns the history.

    The history's attrs say whether training finished ("finished") and why it stopped early ("stopped"): a time
    budget (the time_budget_hours parameter, resolved by resolve_time_budget) counted from `started` (default:
    when the notebook imported this module) ends it after the last epoch that fits, keeping the resume backup.
    attrs["replicas"] is check_replicas' record: a resume on another replica count stops unless allow_replica_change.

    A model built under a strategy of several replicas trains on batches filled up to a multiple of them
    (pipeline.fill_batches: every replica gets an equal share whatever the split's size) and is validated on every image
    by ReplicaValidation in place of Keras' validation.
    """
    from utils.evaluation import model_replicas
    from utils.pipeline import fill_batches

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    backup_dir, history_csv = output_dir / run_files.BACKUP, output_dir / run_files.HISTORY
    done = read_history(history_csv)
    replicas = model_replicas(model)
    if not backup_dir.exists() and len(done) >= epochs and (output_dir / run_files.MODEL).exists():
        print(f"training already complete in {output_dir} ({len(done)} epochs); reusing it", flush=True)
        try:
            trained = json.loads((output_dir / run_files.REPLICAS).read_text())
        except (OSError, ValueError):
            trained = None  # a run recorded before replicas.json existed
        done.attrs.update(finished=True, stopped=None, replicas=trained)
        return done
    trained = check_replicas(output_dir, replicas, backup_dir.exists(), allow_replica_change)
    if not backup_dir.exists():
        # No interrupted run to resume: start the history afresh instead of appending to an old one.
        history_csv.unlink(missing_ok=True)
    else:
        print(f"resuming from {backup_dir}", flush=True)
    validation = []
    if replicas > 1:
        train_ds, validation, val_ds = fill_batches(train_ds, replicas), [ReplicaValidation(val_ds)], None
    on_cpu = accelerator.platform() == "cpu"
    callbacks = [
        *validation,  # first: it fills the logs the others read
        keras.callbacks.BackupAndRestore(str(backup_dir)),
        *([ReplicaSeedStreams()] if replicas > 1 and keras.backend.backend() == "tensorflow" else []),
        TerminalProgress(train_images),
        EpochLog(epochs, train_images, on_cpu),
        BestCheckpoint(output_dir / run_files.MODEL, history_csv),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
    ]
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(patience=early_stopping, restore_best_weights=True))
    budget = resolve_time_budget(time_budget_hours)
    if budget:
        deadline = (SESSION_STARTED if started is None else started) + budget * 3600
        callbacks.append(TimeBudget(deadline, epochs))  # last: the epoch's backup and history row are written first
        print(f"time budget: {budget:g} h, until {time.strftime('%H:%M:%S', time.localtime(deadline))}", flush=True)
    stopped = None
    try:
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks + (extra_callbacks or []),
                  shuffle=False, verbose=0)
    except TimeBudgetReached as exc:
        stopped = str(exc)
        print(f"{stopped}; the backup in {backup_dir} lets the next session continue", flush=True)
    history = read_history(history_csv)
    history.attrs.update(finished=stopped is None, stopped=stopped, replicas=trained)
    return history


def summarize_history(history: pd.DataFrame) -> dict[str, Any]:
    """The study's table: final and best train/val accuracy and loss, and the epoch of the best val_loss."""
    best = history.loc[history["val_loss"].idxmin()]
    return {
        "epochs_run": int(len(history)),
        "final": {k: float(history[k].iloc[-1]) for k in ("accuracy", "loss", "val_accuracy", "val_loss")},
        "best": {"epoch": int(best["epoch"]) + 1, "val_loss": float(best["val_loss"]),
                 "val_accuracy": float(best["val_accuracy"]),
                 "max_val_accuracy": float(history["val_accuracy"].max()),
                 "max_accuracy": float(history["accuracy"].max()), "min_loss": float(history["loss"].min())},
    }


def plot_history(history: pd.DataFrame, path: str | os.PathLike | None = None) -> Any:
    """Training curves: loss and accuracy of train and validation per epoch (saved at `path`, shown in the notebook)."""
    figure, axes = new_figure(1, 2, size=(5.0, 3.8))
    epochs = history["epoch"] + 1
    for ax, metric in zip(axes[0], ("loss", "accuracy")):
        ax.plot(epochs, history[metric], marker="o", label="train")
        ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        ax.grid(alpha=0.3)
        ax.legend()
    finish(figure, path)
    return figure


def environment() -> dict[str, str]:
    """Versions, Keras backend and accelerator, for the run record."""
    import tensorflow as tf

    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "keras_backend": keras.backend.backend()}
    if keras.backend.backend() == "jax":
        import jax

        versions["jax"] = jax.__version__
    return {**versions, "numpy": np.__version__, "accelerator": accelerator.describe_devices(),
            "replicas": accelerator.replica_count(), "precision": keras.mixed_precision.global_policy().name,
            "platform": platform.platform()}


def source_metrics(index: Any, splits: dict[str, Any], predictions: dict[str, tuple[np.ndarray, np.ndarray]],
                   threshold: float = 0.5, n_resamples: int | None = None) -> dict[str, dict[str, dict]]:
    """Per held-out split and source, binary_metrics of that source's images (with bootstrap intervals when
    n_resamples is given); {} for a single source. Predictions must be in the split's order (never shuffled)."""
    from utils.metrics import group_metrics

    if len(index.source_names()) < 2:
        return {}
    return {name: group_metrics(*predictions[name], index.source_of(split), threshold, n_resamples)
            for name, split in splits.items()}


def source_frame(by_source: dict[str, dict[str, dict]]) -> pd.DataFrame:
    """One row per (split, source): images, accuracy overall and per class, ROC AUC, at threshold 0.5."""
    rows = [{"split": split, "source": source, "n": m["n"], "accuracy": m["accuracy"],
             "accuracy_real": m["accuracy_real"], "accuracy_fake": m["accuracy_fake"], "roc_auc": m["roc_auc"]}
            for split, per_source in by_source.items() for source, m in per_source.items()]
    return pd.DataFrame(rows, columns=["split", "source", "n", "accuracy", "accuracy_real", "accuracy_fake",
                                       "roc_auc"])


def run_record(params: dict[str, Any], index: Any, history: pd.DataFrame, evaluations: dict[str, dict],
               wall_time: float, cache: dict[str, bool], by_source: dict[str, dict] | None = None) -> dict[str, Any]:
    """Everything metrics.json reports: the study's table, held-out metrics, data, speed, parameters, environment.

    Several sources add dataset["sources"] (counts per source and split), dataset["holdout_source"] and by_source
    (source_metrics); a single-source record is as before.
    """
    speed = history["images_per_second"].dropna() if "images_per_second" in history else pd.Series(dtype=float)
    from utils.runtime import recorded_path

    dataset = {"name": index.name, "root": recorded_path(index.root), "layout": index.layout,
               "counts": index.counts(), "skipped": index.skipped, "cached_in_memory": cache}
    if getattr(index, "sources", None):
        sources = [{**source, "root": recorded_path(source["root"])} for source in index.sources]
        dataset |= {"sources": sources, "holdout_source": index.holdout_source}
    return {
        # False when a time budget ended training early: epochs_run says how far it got, backup/ how to go on.
        "finished": bool(history.attrs.get("finished", True)),
        "stopped": history.attrs.get("stopped"),
        **summarize_history(history),
        **evaluations,
        # Training steps only, validation apart (EpochLog); the first epoch, which traces the step, left out.
        "images_per_second": float(speed.iloc[1:].median() if len(speed) > 1 else speed.median()) if len(speed) else None,
        "validation_seconds": (round(float(history["validation_seconds"].sum()), 1)
                               if "validation_seconds" in history else None),
        # Sum of the epochs' times: the training cost even when this execution resumed or reused the run.
        "training_seconds": round(float(history["epoch_seconds"].sum()), 1) if "epoch_seconds" in history else None,
        "wall_time_seconds": round(wall_time, 1),  # this execution only (a reused run: loading and evaluation)
        "dataset": dataset,
        **({"by_source": by_source} if by_source else {}),
        "params": params,
        # The effective values behind batch_size and learning_rate (None: a reused run recorded before they were).
        "training": _training_record(params, history.attrs.get("replicas")),
        "seed": params["seed"],
        "environment": environment(),
    }


def _training_record(params: dict[str, Any], replicas: dict[str, Any] | None) -> dict[str, Any] | None:
    """accelerator.training_scale of the run's replica count, with the counts of earlier sessions that differed."""
    if not replicas:
        return None
    scale = accelerator.training_scale(params["batch_size"], params["learning_rate"], replicas["replicas"])
    return {**scale, "earlier_replicas": replicas.get("earlier", [])}


def clean_backup(output_dir: str | os.PathLike) -> None:
    """Remove the resume backup once the run has finished and its record is written (kept while it is unfinished)."""
    try:
        finished = json.loads((Path(output_dir) / run_files.METRICS).read_text()).get("finished", True)
    except (OSError, ValueError, AttributeError):
        finished = True
    if finished is False:
        print(f"unfinished run: {Path(output_dir) / 'backup'} kept for the next session "
              "(python -m tools.kaggle push ... --resume-from SLUG)", flush=True)
        return
    shutil.rmtree(Path(output_dir) / run_files.BACKUP, ignore_errors=True)
