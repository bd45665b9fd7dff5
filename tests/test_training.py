"""Training: parameter checks, resume after an interruption, best checkpoint, run folder protection."""
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from utils import training

REPO_ROOT = Path(__file__).resolve().parent.parent
GOOD = {"alpha": 0.2, "epochs": 3, "batch_size": 8, "image_size": 64, "val_split": 0.25, "seed": 0,
        "learning_rate": 0.001, "data_dir": None, "max_images": None, "flip": "horizontal", "rotation": 0.1,
        "zoom": 0.1, "contrast": 0.1, "weights": None, "bn_momentum": 0.99, "early_stopping": 0,
        "output_dir": "out"}


def test_good_parameters_pass_and_ints_become_floats():
    params = training.validate_params({**GOOD, "val_split": 0.25, "alpha": 0, "unrelated": object()})
    assert params["alpha"] == 0.0 and isinstance(params["alpha"], float)
    assert "unrelated" not in params
    assert training.validate_params({**GOOD, "data_dir": "synthetic:bilinear"})["data_dir"] == "synthetic:bilinear"


@pytest.mark.parametrize("name, value, expected", [
    ("alpha", 1.5, "[0, 1)"), ("alpha", "0.2", "[0, 1)"), ("epochs", 0, ">= 1"), ("epochs", 2.5, ">= 1"),
    ("val_split", 1.0, "(0, 1)"), ("image_size", 16, ">= 32"), ("data_dir", "/no/such/folder", "existing folder"),
    ("data_dir", "synthetic:pixelshuffle", "synthetic:nearest"),
    ("flip", "diagonal", "horizontal"), ("weights", "missing.h5", "imagenet"), ("max_images", 1, ">= 2"),
    ("batch_size", True, ">= 1"), ("bn_momentum", 1.0, "(0, 1)"),
    ("resize_mode", "pad", "'crop'"), ("blur_prob", 1.5, "probability in [0, 1]"), ("jpeg_prob", -0.1, "[0, 1]"),
    ("noise_prob", "0.5", "probability"), ("blur_sigma", [3.0, 1.0], "0 <= low <= high <= 10"),
    ("blur_sigma", 2.0, "[low, high]"), ("jpeg_quality", [0, 90], "1 <= low <= high <= 100"),
    ("jpeg_quality", [30.5, 90], "integer JPEG qualities"), ("rescale_range", [0.5, 1.5], "<= high <= 1"),
    ("noise_sigma", [0.0, 80.0], "grey levels"), ("noise_sigma", [1.0, 2.0, 3.0], "[low, high]"),
])
def test_each_bad_parameter_is_named(name, value, expected):
    with pytest.raises(ValueError) as error:
        training.validate_params({**GOOD, name: value})
    assert f"parameter {name}=" in str(error.value) and expected in str(error.value)


def test_degradation_and_resize_mode_parameters_default_off_and_are_recorded_as_lists():
    params = training.validate_params(GOOD)  # a namespace without them (an older notebook) gets the defaults
    assert params["resize_mode"] == "resize" and params["blur_prob"] == 0.0 and params["jpeg_quality"] == [30, 100]
    params = training.validate_params({**GOOD, "resize_mode": "crop", "blur_prob": 1, "blur_sigma": (0, 3),
                                       "jpeg_quality": (40, 90)})
    assert params["resize_mode"] == "crop" and params["blur_prob"] == 1.0
    assert params["blur_sigma"] == [0.0, 3.0] and all(isinstance(v, float) for v in params["blur_sigma"])
    assert params["jpeg_quality"] == [40, 90] and all(isinstance(v, int) for v in params["jpeg_quality"])
    json.dumps(params)  # recorded in params.json and metrics.json as they are


def test_run_recorded_before_new_parameters_resumes_at_their_defaults(tmp_path):
    """An older params.json lacks resize_mode and the degradations: that run used the defaults, so it may continue."""
    params = training.validate_params({**GOOD, "output_dir": str(tmp_path)})
    older = {k: v for k, v in params.items() if k not in training.PARAMETER_DEFAULTS}
    (tmp_path / "params.json").write_text(json.dumps(older))
    (tmp_path / "backup").mkdir()
    training.claim_output_dir(tmp_path, params)
    (tmp_path / "params.json").write_text(json.dumps(older))
    with pytest.raises(ValueError, match=r"blur_prob: 0\.0 -> 0\.5"):
        training.claim_output_dir(tmp_path, {**params, "blur_prob": 0.5})


def test_several_datasets_and_holdout_source_are_checked(tmp_path):
    """A list data_dir is checked entry by entry; holdout_source must be able to name one of its sources."""
    a, b = str(tmp_path), "synthetic:nearest"
    params = training.validate_params({**GOOD, "data_dir": [a, b], "holdout_source": 1})
    assert params["data_dir"] == [a, b] and params["holdout_source"] == 1
    assert training.validate_params(GOOD)["holdout_source"] is None  # an older notebook: no holdout
    assert training.PARAMETER_DEFAULTS["holdout_source"] is None  # so runs recorded before it still match
    bad = [({"data_dir": []}, "data_dir is an empty list"),
           ({"data_dir": [a, str(tmp_path / "gone")]}, f"entry 1 ('{tmp_path / 'gone'}') does not exist"),
           ({"data_dir": [a, a]}, "entry 1 ('%s') repeats entry 0" % a),
           ({"data_dir": a, "holdout_source": "x"}, "holdout_source='x' is invalid: it needs data_dir to be a list"),
           ({"data_dir": [a, b], "holdout_source": 2}, "holdout_source=2 is invalid: expected an index of data_dir, 0 to 1"),
           ({"data_dir": [a, b], "holdout_source": -1}, "parameter holdout_source=-1 is invalid"),
           ({"data_dir": [a, b], "holdout_source": ""}, "parameter holdout_source='' is invalid")]
    for change, message in bad:
        with pytest.raises(ValueError) as error:
            training.validate_params({**GOOD, **change})
        assert message in str(error.value), (change, str(error.value))


def test_missing_parameter_is_named():
    params = dict(GOOD)
    del params["seed"]
    with pytest.raises(ValueError, match="missing parameter.*seed"):
        training.validate_params(params)


def test_cpu_setup_uses_default_strategy_and_float32():
    strategy = training.setup_accelerator(seed=0)
    assert strategy.num_replicas_in_sync == 1
    assert keras.mixed_precision.global_policy().name == "float32"
    assert training.global_batch_and_lr(32, 1e-3, 2) == (64, 2e-3)


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
    best_after_first = (tmp_path / "model.keras").stat().st_mtime_ns

    second = _Weights()
    resumed = _tiny_model()  # fresh weights: everything must come back from the backup
    history = training.fit(resumed, train_ds, val_ds, 4, tmp_path, train_images=64, extra_callbacks=[second])
    assert sorted(second.begin) == [1, 2, 3], "the rerun must start at epoch 2 (index 1)"
    np.testing.assert_array_equal(second.begin[1], first.end[0])
    assert int(keras.ops.convert_to_numpy(resumed.optimizer.iterations)) == 4 * 4  # 4 epochs x 4 steps, not 3 x 4
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert not (tmp_path / "backup").exists()
    # The best checkpoint kept track of epoch 1's val_loss across the interruption.
    assert history["val_loss"].min() <= history["val_loss"].iloc[0]
    assert (tmp_path / "model.keras").stat().st_mtime_ns >= best_after_first


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


def test_run_folder_with_other_parameters_is_protected(tmp_path):
    training.claim_output_dir(tmp_path, GOOD)
    (tmp_path / "model.keras").write_bytes(b"a trained model")
    training.claim_output_dir(tmp_path, {**GOOD, "epochs": 10})  # continuing with more epochs is fine
    with pytest.raises(ValueError, match=r"alpha: 0.2 -> 0.1"):
        training.claim_output_dir(tmp_path, {**GOOD, "alpha": 0.1})
    assert json.loads((tmp_path / "params.json").read_text())["epochs"] == 10


def test_summarize_history():
    import pandas as pd

    history = pd.DataFrame({"epoch": [0, 1, 2], "accuracy": [0.6, 0.9, 0.95], "loss": [0.7, 0.3, 0.2],
                            "val_accuracy": [0.5, 0.92, 0.9], "val_loss": [0.9, 0.25, 0.3]})
    summary = training.summarize_history(history)
    assert summary["epochs_run"] == 3 and summary["final"]["val_accuracy"] == 0.9
    assert summary["best"]["epoch"] == 2 and summary["best"]["val_accuracy"] == 0.92


# ---------------------------------------------------------------------------------------------- resuming on Kaggle


def _kaggle_run_folder(monkeypatch, tmp_path, record: dict | None):
    """A simulated /kaggle with a build record (None: no record) and the run folder working/train."""
    inputs, working = tmp_path / "input", tmp_path / "working"
    inputs.mkdir(parents=True)
    working.mkdir(parents=True)
    for name, value in {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "KAGGLE_INPUT_ROOT": str(inputs),
                        "KAGGLE_WORKING_ROOT": str(working)}.items():
        monkeypatch.setenv(name, value)
    if record is not None:
        (working / "kaggle-build.json").write_text(json.dumps(record))
    return inputs, working / "train"


def test_a_resume_that_finds_no_attached_run_stops_before_any_data(monkeypatch, tmp_path):
    """push --resume-from me/train-a, and its output is attached without this run folder: stop, name the ref, the
    folder looked for and what is attached."""
    inputs, out = _kaggle_run_folder(monkeypatch, tmp_path, {"slug": "train-b", "resume_from": "me/train-a"})
    (inputs / "datasets/xhlulu/140k-real-and-fake-faces/real_vs_fake").mkdir(parents=True)
    (inputs / "notebooks/me/train-a/other-run").mkdir(parents=True)
    (inputs / "notebooks/me/train-a/other-run/params.json").write_text("{}")
    with pytest.raises(training.ResumeNotFoundError) as error:
        training.claim_output_dir(out, GOOD)
    message = str(error.value)
    assert "--resume-from me/train-a" in message and "run folder train/ (with params.json)" in message
    assert "notebooks/me/train-a/[versions/<N>/]train/ and train-a/train/" in message
    assert "notebooks/me/train-a/: other-run/" in message and "datasets/xhlulu/140k-real-and-fake-faces/" in message
    assert not (out / "params.json").exists()  # nothing claimed


def test_a_resume_continues_the_attached_run_in_either_layout(monkeypatch, tmp_path):
    """The run folder attached at notebooks/<owner>/<slug>/versions/<N>/ (2026) is copied; so is <slug>/ (older)."""
    inputs, out = _kaggle_run_folder(monkeypatch, tmp_path, {"resume_from": "me/train-a/3"})
    attached = inputs / "notebooks/me/train-a/versions/3/train"
    (attached / "backup").mkdir(parents=True)
    (attached / "params.json").write_text(json.dumps(GOOD))
    (attached / "backup" / "training_metadata.json").write_text('{"epoch": 0}')
    training.claim_output_dir(out, GOOD)
    assert (out / "backup" / "training_metadata.json").read_text() == '{"epoch": 0}'

    inputs, out = _kaggle_run_folder(monkeypatch, tmp_path / "legacy", {"resume_from": "train-a"})
    (inputs / "train-a/train").mkdir(parents=True)
    (inputs / "train-a/train/params.json").write_text(json.dumps(GOOD))
    (inputs / "train-a/train/model.keras").write_bytes(b"a finished run")
    training.claim_output_dir(out, GOOD)
    assert (out / "model.keras").read_bytes() == b"a finished run"


def test_no_resume_asked_or_a_run_of_its_own_needs_nothing_attached(monkeypatch, tmp_path):
    _, out = _kaggle_run_folder(monkeypatch, tmp_path, {"resume_from": None})
    training.claim_output_dir(out, GOOD)  # a fresh run
    assert json.loads((out / "params.json").read_text()) == GOOD
    _, out = _kaggle_run_folder(monkeypatch, tmp_path / "own", {"resume_from": "me/train-a"})
    (out / "backup").mkdir(parents=True)  # this session's own interrupted run (a rerun in the same session)
    training.claim_output_dir(out, GOOD)
    _, out = _kaggle_run_folder(monkeypatch, tmp_path / "outside", {"resume_from": "me/train-a"})
    with pytest.raises(training.ResumeNotFoundError, match="lies outside the working folder"):
        training.claim_output_dir(tmp_path / "elsewhere", GOOD)


@pytest.mark.parametrize("mount", ["datasets/me/resnet50-notop/versions/3", "datasets/me/resnet50-notop",
                                   "resnet50-notop"])
def test_weights_file_in_an_attached_dataset_of_either_layout(tmp_path, mount):
    """weights may name a file under an attached dataset: /kaggle/input/datasets/<owner>/<slug>/[versions/<N>/]
    since 2026, /kaggle/input/<slug>/ before; any existing file passes, whatever the layout."""
    path = tmp_path / "input" / mount / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert training.validate_params({**GOOD, "weights": str(path)})["weights"] == str(path)
    with pytest.raises(ValueError, match="parameter weights=.* is invalid"):
        training.validate_params({**GOOD, "weights": str(path.with_name("missing.h5"))})


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
    for n, result in record["sizes"].items():
        assert result["count"] == int(n) and result["labels_in_order"], (n, result)
        assert max(result["collect"], result["proba"], result["proba_dataset"]) < 1e-3, (n, result)
    assert record["predict_files"] == {"rows": 3, "unreadable": 0, "max_difference": pytest.approx(0, abs=1e-3)}
    assert record["grad_cam"] == [3, 16, 16]


def _two_replica_check(out: Path) -> None:
    """The body of the test above, run as a script in a fresh process; writes what it measured to record.json."""
    import os

    from PIL import Image

    from utils.runtime import REHEARSAL_REPLICAS_ENV, set_quiet_log_env

    os.environ[REHEARSAL_REPLICAS_ENV] = "2"
    set_quiet_log_env()
    import tensorflow as tf

    from utils import evaluation, explanation, predict

    strategy = training.setup_accelerator(0)

    def build() -> keras.Model:
        inputs = keras.Input((16, 16, 3))
        x = keras.layers.RandomFlip("horizontal")(inputs)  # augmentation and batch norm, as in the study's model
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
    from utils.data import load_images

    reference = single.predict(load_images(paths, 16), verbose=0)[:, 1]
    record["predict_files"] = {"rows": len(rows), "unreadable": len(unreadable),
                               "max_difference": float(np.abs([r["p_fake"] for r in rows] - reference).max())}
    record["grad_cam"] = list(explanation.grad_cam(model, images(3)[0], layer_name="features").shape)
    (out / "record.json").write_text(json.dumps(record))


if __name__ == "__main__":
    import sys

    _two_replica_check(Path(sys.argv[1]))
