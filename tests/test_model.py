"""The LeakyReLU-ResNet50: every ReLU swapped, stock topology and parameter count, alpha=0 is the stock network.

A ResNet50 build costs seconds, so each distinct model is built once for the module (the `stock` and `built`
fixtures). Shared models are only read, predicted with and copied from; a test that needs particular weights in a
shared model copies every one it uses into it first, so the order of the tests does not matter.
"""
import json

import keras
import numpy as np
import pytest

from utils.model import build_model, copy_weights_by_name, load_model

SIZE = 32
NO_AUGMENTATION = {"flip": None, "rotation": 0, "zoom": 0, "contrast": 0}


def _images(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


def _infer(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def _stock(weights=None):
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=(SIZE, SIZE, 3))


@pytest.fixture(scope="module")
def stock():
    """keras.applications.ResNet50 without its top (random weights), built once for the module."""
    return _stock()


@pytest.fixture(scope="module")
def built():
    """build_model(alpha, SIZE, **options), built once per distinct (alpha, options) in this module."""
    cache = {}

    def get(alpha, **options):
        key = (alpha, json.dumps(options, sort_keys=True))
        if key not in cache:
            cache[key] = build_model(alpha, SIZE, **options)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, stock):
    """The stock network's weights saved as a ResNet50 (no top) weights file."""
    path = tmp_path_factory.mktemp("weights") / "resnet50_notop.weights.h5"
    stock.save_weights(path)
    return path


@pytest.fixture(scope="module")
def from_file(weights_file):
    """A model with alpha 0.1 and BN momentum 0.9 whose ResNet50 weights come from weights_file."""
    return build_model(0.1, SIZE, weights=str(weights_file), bn_momentum=0.9)


@pytest.mark.parametrize("alpha", [0.2, 0.05])
def test_every_relu_is_leaky_with_slope_alpha(alpha, built, stock):
    model = built(alpha)
    leaky = [layer for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    assert len(leaky) == 49
    assert all(layer.negative_slope == pytest.approx(alpha) for layer in leaky)
    relus = [layer for layer in model.layers if isinstance(layer, keras.layers.ReLU)
             or layer.get_config().get("activation") == "relu"]
    assert relus == []
    # Stock names kept: the activations sit where keras.applications.ResNet50 has its ReLUs.
    stock_relu_names = {layer.name for layer in stock.layers if layer.get_config().get("activation") == "relu"}
    assert {layer.name for layer in leaky} == stock_relu_names


def test_leaky_slope_is_applied_to_negative_inputs(built):
    layer = built(0.2).get_layer("conv1_relu")
    out = keras.ops.convert_to_numpy(layer(np.array([[-10.0, 0.0, 3.0]], dtype="float32")))
    np.testing.assert_allclose(out, [[-2.0, 0.0, 3.0]])


def test_parameter_count_equals_stock_resnet50(built):
    stock = keras.applications.ResNet50(weights=None, input_shape=(SIZE, SIZE, 3), classes=2)
    assert built(0.2).count_params() == stock.count_params() == 23_591_810


def test_alpha_zero_is_numerically_the_stock_relu_network(built, stock):
    ours = built(0.0, augmentation=NO_AUGMENTATION)
    assert copy_weights_by_name(stock, ours) == len([layer for layer in stock.layers if layer.weights])
    features = keras.Model(ours.inputs, ours.get_layer("conv5_block3_out").output)
    x = _images(3)
    # Inference calls, not predict(): the same numbers without tracing a predict function for each of three models.
    expected = _infer(stock, keras.applications.resnet50.preprocess_input(x.copy()))
    np.testing.assert_allclose(_infer(features, x), expected, rtol=1e-4, atol=1e-4)
    # And a positive alpha really changes the function computed with the same weights.
    leaky = built(0.2, augmentation=NO_AUGMENTATION)
    copy_weights_by_name(stock, leaky)
    leaky_features = _infer(keras.Model(leaky.inputs, leaky.get_layer("conv5_block3_out").output), x)
    assert np.abs(leaky_features - expected).max() > 1e-2


def test_augmentation_only_active_in_training(built):
    model = built(0.2, augmentation={"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3}, seed=0)
    plain = built(0.2, augmentation=NO_AUGMENTATION)
    copy_weights_by_name(model, plain)
    x = _images(4)
    inference = model(x, training=False)
    np.testing.assert_allclose(inference, model(x, training=False))
    np.testing.assert_allclose(inference, plain(x, training=False), rtol=1e-5, atol=1e-6)
    augment = model.get_layer("augmentation")
    assert [layer.name for layer in augment.layers] == ["random_flip", "random_rotation", "random_zoom",
                                                        "random_contrast"]
    assert not np.allclose(keras.ops.convert_to_numpy(augment(x, training=True)), x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(augment(x, training=False)), x)


def test_zero_factors_switch_layers_off(built):
    model = built(0.2, augmentation={"flip": None, "rotation": 0.1, "zoom": 0, "contrast": None})
    assert [layer.name for layer in model.get_layer("augmentation").layers] == ["random_rotation"]
    assert "augmentation" not in [layer.name for layer in built(0.2, augmentation=NO_AUGMENTATION).layers]


def test_softmax_head_in_float32_and_sums_to_one(built):
    model = built(0.2)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    probs = model.predict(_images(3), verbose=0)
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_weights_file_loads_by_name(from_file, stock):
    for name in ("conv1_conv", "conv3_block2_2_bn", "conv5_block3_3_conv"):
        for got, want in zip(from_file.get_layer(name).get_weights(), stock.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="alpha"):
        build_model(1.5, SIZE)
    with pytest.raises(ValueError, match="weights"):
        build_model(0.2, SIZE, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(FileNotFoundError, match="model.keras"):
        load_model(tmp_path / "nothing.keras")


def test_save_and_load_round_trip(from_file, tmp_path):
    model = from_file
    model.save(tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    x = _images(2)
    np.testing.assert_allclose(model.predict(x, verbose=0), loaded.predict(x, verbose=0), rtol=1e-6)
    assert loaded.get_layer("conv2_block1_out").negative_slope == pytest.approx(0.1)
    assert loaded.get_layer("conv1_bn").momentum == pytest.approx(0.9)


# Run by the test below in a fresh process, as a user's laptop loads a model trained on Kaggle's T4s.
_LOAD_IN_FRESH_PROCESS = """
import json, sys
import keras, numpy as np
from utils.model import build_model, load_model
path, x = sys.argv[1], np.load(sys.argv[2])
loaded, asked = load_model(path), load_model(path, dtype="bfloat16")
reference = build_model(0.2, x.shape[1], augmentation={"flip": None, "rotation": 0, "zoom": 0, "contrast": 0})
reference.set_weights(loaded.get_weights())  # the same network built under this process's float32 policy

def policies(model):
    found, pending = [], list(model.layers)
    while pending:
        layer = pending.pop()
        if not isinstance(layer, keras.layers.InputLayer):  # its dtype is the input's, not a policy
            found.append(layer.dtype_policy.name)
        pending.extend(getattr(layer, "layers", []))
    return sorted(set(found))

print(json.dumps({"policies": policies(loaded), "asked": policies(asked),
                  "difference": float(np.abs(loaded.predict(x, verbose=0) - reference.predict(x, verbose=0)).max())}))
"""


def test_a_model_saved_under_mixed_float16_loads_computing_in_float32(tmp_path):
    """A model trained under mixed_float16 (Kaggle's T4s) and loaded in a fresh process scores in float32, as the
    same network built in float32 does; a dtype the caller asks for is honoured."""
    import subprocess
    import sys
    from pathlib import Path

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        build_model(0.2, SIZE, augmentation=NO_AUGMENTATION, seed=0).save(tmp_path / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.save(tmp_path / "x.npy", _images(4))
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", _LOAD_IN_FRESH_PROCESS, str(tmp_path / "model.keras"),
                           str(tmp_path / "x.npy")], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["policies"] == ["float32"]
    assert result["asked"] == ["bfloat16"]
    assert result["difference"] < 1e-5  # float16 compute differs from float32 by about 1e-3 here
