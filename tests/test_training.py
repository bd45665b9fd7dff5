"""Training: parameter checks, resume after an interruption, best checkpoint, run folder protection."""
import json

import keras
import numpy as np
import pytest

from utils import training

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
