"""Training: resume after an interruption from the backup, best checkpoint, history, replica-exact validation."""
import io
import json
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from utils import accelerator, training

REPO_ROOT = Path(__file__).resolve().parent.parent


def _tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    return training.compile_model(model, 0.01)


def _datasets():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16), tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


class _Weights(keras.callbacks.Callback):
    """Records the first kernel at the start and end of every epoch."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = {}, {}

    def on_epoch_begin(self, epoch, logs=None):
        self.begin[epoch] = self.model.get_weights()[0].copy()

    def on_epoch_end(self, epoch, logs=None):
        self.end[epoch] = self.model.get_weights()[0].copy()


def test_interrupted_training_resumes_at_the_next_epoch(tmp_path):
    train_ds, val_ds = _datasets()
    first = _Weights()
    with pytest.raises(KeyboardInterrupt):
        training.fit(_tiny_model(), train_ds, val_ds, 4, tmp_path, train_images=64,
                     extra_callbacks=[first, training.StopAfterEpoch(1)])
    assert (tmp_path / "backup").is_dir()
    assert list(training.read_history(tmp_path / "history.csv")["epoch"]) == [0]
    # Make epoch 1 the best of the whole run, so the resumed session must keep its checkpoint, never overwrite it.
    history_csv = tmp_path / "history.csv"
    first_rows = history_csv.read_text().splitlines()
    column = first_rows[0].split(",").index("val_loss")
    cells = first_rows[1].split(",")
    cells[column] = "0.0"
    history_csv.write_text("\n".join([first_rows[0], ",".join(cells)]) + "\n")

    second = _Weights()
    resumed = _tiny_model()  # fresh weights: everything must come back from the backup
    history = training.fit(resumed, train_ds, val_ds, 4, tmp_path, train_images=64, extra_callbacks=[second])
    assert sorted(second.begin) == [1, 2, 3], "the rerun must start at epoch 2 (index 1)"
    np.testing.assert_array_equal(second.begin[1], first.end[0])
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 4 * 4  # 4 epochs x 4 steps, not 3 x 4
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()
    # The best checkpoint kept track of epoch 1's val_loss across the interruption: it is still epoch 1's model.
    assert training.summarize_history(history)["best"]["epoch"] == 1
    assert (history["val_loss"].iloc[1:] > 0).all()
    saved = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_array_equal(saved.get_weights()[0], first.end[0])
    assert not np.array_equal(saved.get_weights()[0], second.end[3])


def test_a_resume_on_another_replica_count_stops_unless_allowed(tmp_path):
    train_ds, val_ds = _datasets()
    with pytest.raises(KeyboardInterrupt):
        training.fit(_tiny_model(), train_ds, val_ds, 3, tmp_path, train_images=64,
                     extra_callbacks=[training.StopAfterEpoch(1)])
    record = tmp_path / "replicas.json"
    assert json.loads(record.read_text()) == {"replicas": 1, "earlier": []}
    record.write_text(json.dumps({"replicas": 2, "earlier": []}))  # as if the first session had run on two GPUs
    with pytest.raises(training.ReplicaChangeError) as error:
        training.fit(_tiny_model(), train_ds, val_ds, 3, tmp_path, train_images=64)
    assert "trained on 2 replica(s); this session has 1" in str(error.value)
    assert "allow_replica_change" in str(error.value)
    assert list(training.read_history(tmp_path / "history.csv")["epoch"]) == [0]  # nothing trained
    history = training.fit(_tiny_model(), train_ds, val_ds, 3, tmp_path, train_images=64, allow_replica_change=True)
    assert list(history["epoch"]) == [0, 1, 2]
    assert history.attrs["replicas"] == {"replicas": 1, "earlier": [2]}
    params = {"batch_size": 16, "learning_rate": 0.01, "seed": 0}
    assert training._training_record(params, history.attrs["replicas"]) == {
        "replicas": 1, "global_batch": 16, "effective_learning_rate": 0.01,
        "lr_scaling": accelerator.LR_SCALING, "keras_backend": "tensorflow",
        "precision": keras.mixed_precision.global_policy().name, "earlier_replicas": [2]}


def test_finished_training_is_reused_not_repeated(tmp_path, capsys):
    train_ds, val_ds = _datasets()
    training.fit(_tiny_model(), train_ds, val_ds, 2, tmp_path, train_images=64)
    capsys.readouterr()
    history = training.fit(_tiny_model(), train_ds, val_ds, 2, tmp_path, train_images=64)
    assert "already complete" in capsys.readouterr().out and len(history) == 2


def test_best_checkpoint_only_saves_improvements(tmp_path):
    model = _tiny_model()
    checkpoint = training.BestCheckpoint(tmp_path / "model.keras", tmp_path / "history.csv")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"val_loss": 0.5})
    saved = (tmp_path / "model.keras").stat().st_mtime_ns
    checkpoint.on_epoch_end(1, {"val_loss": 0.7})
    assert (tmp_path / "model.keras").stat().st_mtime_ns == saved and checkpoint.best == 0.5
    assert not list(tmp_path.glob(".tmp-*"))
    # What inference and the analysis load, without Adam's moment buffers (those are in the resume backup).
    with zipfile.ZipFile(tmp_path / "model.keras") as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as h5:
        assert "optimizer" not in h5 and "layers" in h5
    assert model.optimizer is not None  # the model goes on training with its optimizer


def test_throughput_counts_the_training_steps_not_the_validation(capsys):
    import time

    log = training.EpochLog(epochs=1, train_images=100)
    log.on_epoch_begin(0)
    time.sleep(0.2)
    log.on_train_batch_end(0)  # the epoch's last training step
    time.sleep(0.4)  # what the validation pass takes after it
    logs = {"loss": 0.5}
    log.on_epoch_end(0, logs)
    assert logs["validation_seconds"] >= 0.4 and logs["epoch_seconds"] >= 0.6
    training_seconds = logs["epoch_seconds"] - logs["validation_seconds"]
    assert 0.2 <= training_seconds < 0.4
    assert logs["images_per_second"] == pytest.approx(100 / training_seconds)
    assert "s validation" in capsys.readouterr().out


def test_summarize_history():
    import pandas as pd

    history = pd.DataFrame({"epoch": [0, 1, 2], "accuracy": [0.6, 0.9, 0.95], "loss": [0.7, 0.3, 0.2],
                            "val_accuracy": [0.5, 0.92, 0.9], "val_loss": [0.9, 0.25, 0.3]})
    summary = training.summarize_history(history)
    assert summary["epochs_run"] == 3 and summary["final"]["val_accuracy"] == 0.9
    assert summary["best"]["epoch"] == 2 and summary["best"]["val_accuracy"] == 0.92


# ---------------------------------------------------------------------------------------------- resuming on Kaggle


# ---------------------------------------------------------------------------------------------- two replicas


def test_validation_logs_are_keras_loss_and_accuracy_per_image():
    """The mean cross-entropy and accuracy Keras reports for a softmax (from its logits, so unclipped), each image
    once; a probability that underflowed to 0 stays finite."""
    logits = np.array([[2.0, -1.0], [0.5, 0.25], [-3.0, 4.0], [1.0, 1.5], [0.0, 30.0]], dtype=np.float32)
    labels = np.array([0, 1, 1, 0, 0])
    outputs = np.asarray(keras.ops.softmax(logits), dtype=np.float32)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    logs = training.validation_logs(labels, outputs)
    assert logs["val_loss"] == pytest.approx(float(expected), rel=1e-5)  # image 5: p = 9e-14, below Keras' clip
    assert logs["val_accuracy"] == pytest.approx(2 / 5)
    assert np.isfinite(training.validation_logs([0], [[0.0, 1.0]])["val_loss"])
    with pytest.raises(ValueError, match=r"labels \[N\] and softmax outputs \[N, 2\]"):
        training.validation_logs([], np.zeros((0, 2)))


def test_two_replicas_train_validate_and_predict_every_split_size(tmp_path):
    """Under the rehearsal's MirroredStrategy over 2 logical CPUs with mixed_float16 (a fresh process: the devices
    are split before TensorFlow starts), a tiny model trains on 15 images in one batch (8/7 unfixed), validates on
    5 as Keras evaluates its checkpoint on one device, and predicts odd counts exactly, one batch of them leaving a
    replica without an image (unfixed), through every prediction path: evaluation, predict_files and Grad-CAM."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    done = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["replicas"] == 2 and record["policy"] == "mixed_float16"
    fit = record["fit"]
    assert fit["epochs"] == [0, 1] and "epoch 2/2" in done.stdout
    # Every one of the 5 images counted, by the model that was checkpointed (Keras' own result on one device).
    best = int(np.argmin(fit["val_loss"]))
    assert fit["val_loss"][best] == pytest.approx(fit["checkpoint_val_loss"], rel=1e-4)
    assert fit["val_accuracy"][best] == pytest.approx(fit["checkpoint_val_accuracy"])
    assert fit["moving_statistics_agree"]  # the replicas' batch-norm statistics averaged, not drifting apart
    assert fit["steps"] == 2  # 2 epochs of 1 step: 15 images and one repeated, 8 per replica
    assert fit["replicas"] == {"replicas": 2, "earlier": []}  # what run_record puts in metrics.json's "training"
    for n, result in record["sizes"].items():
        assert result["count"] == int(n) and result["labels_in_order"], (n, result)
        assert max(result["collect"], result["proba"], result["proba_dataset"]) < 1e-3, (n, result)
    assert record["predict_files"] == {"rows": 3, "unreadable": 0, "max_difference": pytest.approx(0, abs=1e-3)}
    assert record["grad_cam"] == [3, 16, 16]
    # Each replica draws its own augmentation: the share of 256 images given the same draw on both replicas.
    same = record["same_draws"]
    assert set(same) == {"random_flip", "random_rotation", "random_zoom", "random_contrast"}
    assert same["random_flip"] < 0.7 and max(v for k, v in same.items() if k != "random_flip") < 0.05, same


def _two_replica_check(out: Path) -> None:
    """The body of the test above, run as a script in a fresh process; writes what it measured to record.json."""
    import os

    from PIL import Image

    from utils.accelerator import REHEARSAL_REPLICAS_ENV
    from utils.runtime import set_quiet_log_env

    os.environ[REHEARSAL_REPLICAS_ENV] = "2"
    set_quiet_log_env()
    import tensorflow as tf

    from tests.test_augmentation import transformation_draws
    from utils import evaluation, explanation, predict
    from utils.augmentation import build_augmentation

    strategy = accelerator.setup_accelerator(0)

    def build() -> keras.Model:
        inputs = keras.Input((16, 16, 3))
        x = build_augmentation(seed=0)(inputs)  # augmentation and batch norm, as in the study's model
        x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, name="features")(x))
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Activation("relu")(x))
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", dtype="float32")(x))

    with strategy.scope():
        model = training.compile_model(build(), 0.01)
    single = training.compile_model(build(), 0.01)  # one device, Keras' own loops: the reference
    rng = np.random.default_rng(0)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.uniform(0, 255, (n, 16, 16, 3)).astype("float32"), (np.arange(n) % 2).astype("int32")

    def batches(x: np.ndarray, y: np.ndarray, size: int) -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)

    record: dict = {"replicas": strategy.num_replicas_in_sync, "policy": keras.mixed_precision.global_policy().name}
    (x, y), (xv, yv) = images(15), images(5)
    history = training.fit(model, batches(x, y, 16), batches(xv, yv, 16), 2, out / "run", train_images=15)
    checkpoint = keras.models.load_model(out / "run" / "model.keras")  # the epoch of the lowest val_loss
    loss, accuracy = checkpoint.evaluate(batches(xv, yv, 16), verbose=0)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    copies = strategy.experimental_local_results(norms[0].moving_variance.value)
    record["fit"] = {"epochs": history["epoch"].tolist(), "val_loss": history["val_loss"].tolist(),
                     "val_accuracy": history["val_accuracy"].tolist(), "checkpoint_val_loss": loss,
                     "checkpoint_val_accuracy": accuracy, "steps": int(model.optimizer.iterations.numpy()),
                     "replicas": history.attrs["replicas"],
                     "moving_statistics_agree": bool(np.array_equal(*[np.asarray(c) for c in copies]))}
    single.set_weights(model.get_weights())
    record["sizes"] = {}
    for n in (1, 3, 5, 17):  # batches of 4: 17 ends in a batch of 1, which leaves one replica without an image
        x, y = images(n)
        reference = single.predict(x, batch_size=4, verbose=0)[:, 1]
        labels, p_fake = evaluation.collect_predictions(model, batches(x, y, 4))
        record["sizes"][n] = {
            "count": len(p_fake), "labels_in_order": bool(np.array_equal(labels, y)),
            "collect": float(np.abs(p_fake - reference).max()),
            "proba": float(np.abs(evaluation.predict_proba(model, x, batch_size=4) - reference).max()),
            "proba_dataset": float(np.abs(evaluation.predict_proba(model, batches(x, y, 4)) - reference).max())}
    paths = []
    for i, image in enumerate(images(3)[0]):
        paths.append(str(out / f"face-{i}.png"))
        Image.fromarray(image.astype(np.uint8)).save(paths[-1])
    rows, unreadable = predict.predict_files(model, paths, batch_size=2)
    from utils.pipeline import load_images

    reference = single.predict(load_images(paths, 16), verbose=0)[:, 1]
    record["predict_files"] = {"rows": len(rows), "unreadable": len(unreadable),
                               "max_difference": float(np.abs([r["p_fake"] for r in rows] - reference).max())}
    record["grad_cam"] = list(explanation.grad_cam(model, images(3)[0], layer_name="features").shape)
    # After fit: the same 256 images on each replica, each augmentation layer's draws per replica.
    augmentation, same_images = model.get_layer("augmentation"), tf.constant(images(256)[0])
    draws = strategy.run(lambda: {layer.name: transformation_draws(layer, same_images) for layer in augmentation.layers})
    record["same_draws"] = {name: float(np.mean(np.equal(*[np.asarray(c) for c in strategy.experimental_local_results(v)])))
                            for name, v in draws.items()}
    (out / "record.json").write_text(json.dumps(record))


if __name__ == "__main__":
    import sys

    _two_replica_check(Path(sys.argv[1]))
