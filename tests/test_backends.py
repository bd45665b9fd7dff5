"""The model on JAX and PyTorch as on TensorFlow (tests/test_model.py's checks), model.keras files moving between
backends, and the train-step benchmark where TensorFlow is absent.

Keras fixes its backend when first imported and the rest of the suite imports it on TensorFlow, so each other
backend runs in a subprocess: this file run as `python -m tests.test_backends WORK` under KERAS_BACKEND, with
TensorFlow hidden (importing it fails there), so nothing passes by leaning on it. One module-scoped fixture starts
them side by side (each builds its models once, at 32 px) and the tests assert on what they leave in WORK: facts
(JSON), arrays (npz), their model.keras and the benchmark's record. A backend that is not installed is skipped.
"""
from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SIZE = 32
ALPHA = 0.2
NO_AUGMENTATION = {"flip": None, "rotation": 0, "zoom": 0, "contrast": 0}
STRONG_AUGMENTATION = {"flip": "horizontal", "rotation": 0.2, "zoom": 0.2, "contrast": 0.3}
STOCK_PARAMS = 23_591_810  # keras.applications.ResNet50(weights=None, classes=2), as tests/test_model.py has it
HEAD_PARAMS = 2048 * 2 + 2  # Dense(2) on the 2048 pooled features
# Softmax outputs of one saved model, loaded under two backends (different kernels, float32 throughout).
CROSS_BACKEND_ATOL = 1e-5
# A deterministic objective (no augmentation, one batch) and small steps: Adam moves every weight by about the
# learning rate per step, which at 1e-3 makes the loss on 4 images jump up and down; at 1e-4 it falls within 5 steps
# (not always at the first: batch norm over 4 images makes single steps noisy).
TRAIN_LEARNING_RATE = 1e-4
TRAIN_STEPS = 5
BACKENDS = [pytest.param(name, marks=pytest.mark.skipif(importlib.util.find_spec(name) is None,
                                                        reason=f"{name} is not installed"))
            for name in ("jax", "torch")]
SUBPROCESS_TIMEOUT_S = 900
CPUS_ENV = "TEST_BACKENDS_CPUS"  # the cores a subprocess keeps to (set before its backend starts its threads)


def _images(n: int = 4, seed: int = 0) -> np.ndarray:
    """n random RGB images of SIZE px in 0..255 (float32)."""
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


# ---------------------------------------------------------------------------------------------- subprocess side


class HideTensorFlow(importlib.abc.MetaPathFinder):
    """A meta-path finder that finds what the one it wraps finds, tensorflow excepted.

    With every finder wrapped, `import tensorflow` fails and importlib.util.find_spec answers None, as on a machine
    without it (Keras and PyTorch both probe for it that way).
    """

    def __init__(self, finder: Any):
        self.finder = finder

    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] == "tensorflow" or not hasattr(self.finder, "find_spec"):
            return None
        return self.finder.find_spec(name, path, target)

    def invalidate_caches(self):
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def _numpy(value: Any) -> np.ndarray:
    """A backend tensor as a numpy array."""
    import keras

    return keras.ops.convert_to_numpy(value)


def collect_facts(work: Path) -> None:
    """Build, check, train and save the model under this process' backend; write WORK/<backend>-facts.json, -arrays.npz."""
    started = time.perf_counter()
    import keras

    from utils.model import build_model, copy_weights_by_name, load_model

    backend = keras.backend.backend()
    x = np.load(work / "images.npy")
    keras.utils.set_random_seed(0)
    model = build_model(ALPHA, SIZE, augmentation=STRONG_AUGMENTATION, seed=0)
    plain = build_model(ALPHA, SIZE, augmentation=NO_AUGMENTATION)
    zero = build_model(0.0, SIZE, augmentation=NO_AUGMENTATION)
    stock = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    leaky = [layer for layer in model.layers if isinstance(layer, keras.layers.LeakyReLU)]
    facts: dict[str, Any] = {
        "backend": backend,
        "leaky_slopes": [float(layer.negative_slope) for layer in leaky],
        "leaky_names": sorted(layer.name for layer in leaky),
        "relus_left": [layer.name for layer in model.layers if isinstance(layer, keras.layers.ReLU)
                       or layer.get_config().get("activation") == "relu"],
        "stock_relu_names": sorted(layer.name for layer in stock.layers
                                   if layer.get_config().get("activation") == "relu"),
        "slope_on_negative_inputs": _numpy(model.get_layer("conv1_relu")(np.array([[-10.0, 0.0, 3.0]], "float32"))
                                           ).tolist(),
        "params": model.count_params(), "stock_notop_params": stock.count_params(),
    }
    arrays: dict[str, np.ndarray] = {}

    # Augmentation: active in training only, so inference equals the model without it (same weights).
    copy_weights_by_name(model, plain)
    augment = model.get_layer("augmentation")
    facts["augmentation_layers"] = [layer.name for layer in augment.layers]
    arrays["inference"], arrays["inference_again"] = _numpy(model(x, training=False)), _numpy(model(x, training=False))
    arrays["plain_inference"] = _numpy(plain(x, training=False))
    arrays["augmented_training"] = _numpy(augment(x, training=True))
    arrays["augmented_inference"] = _numpy(augment(x, training=False))
    if backend == "jax":
        import jax

        # utils.augmentation.allow_jit lets jax.jit compile these layers: same seeds, same images, jitted or not.
        def augmented(seeds: list, images: Any) -> Any:
            return augment.stateless_call([], seeds, images, training=True)[0]

        seeds = [variable.value for variable in augment.non_trainable_variables]
        arrays["augmented_eager"] = _numpy(augmented(seeds, x))
        arrays["augmented_jitted"] = _numpy(jax.jit(augmented)(seeds, x))

    # alpha = 0 with the stock weights computes the stock network; alpha = 0.2 with the same weights does not.
    facts["weights_copied"] = copy_weights_by_name(stock, zero)
    facts["stock_weighted_layers"] = len([layer for layer in stock.layers if layer.weights])
    copy_weights_by_name(stock, plain)
    arrays["stock_features"] = _numpy(stock(keras.applications.resnet50.preprocess_input(x.copy()), training=False))
    for name, ours in (("alpha0_features", zero), ("alpha02_features", plain)):
        arrays[name] = _numpy(keras.Model(ours.inputs, ours.get_layer("conv5_block3_out").output)(x, training=False))

    # Train steps on one batch; train_on_batch returns the loss before its update.
    plain.compile(optimizer=keras.optimizers.Adam(TRAIN_LEARNING_RATE), loss=keras.losses.SparseCategoricalCrossentropy())
    y = np.arange(len(x)) % 2
    facts["train_losses"] = [float(plain.train_on_batch(x, y)) for _ in range(TRAIN_STEPS)]

    # Saved with the trained weights and batch-norm statistics (outputs that differ between images), then the
    # TensorFlow-saved model loaded here.
    copy_weights_by_name(plain, model)
    model.save(work / f"{backend}.keras")
    arrays["saved_probs"] = _numpy(model(x, training=False))
    from_tf = load_model(work / "tensorflow.keras")
    arrays["tensorflow_model_probs"] = _numpy(from_tf(x, training=False))
    facts["tensorflow_model_slope"] = float(from_tf.get_layer("conv2_block1_out").negative_slope)
    facts["tensorflow_loaded"] = sys.modules.get("tensorflow") is not None
    facts["seconds"] = round(time.perf_counter() - started, 1)
    np.savez(work / f"{backend}-arrays.npz", **arrays)
    (work / f"{backend}-facts.json").write_text(json.dumps(facts, indent=2))


def run_benchmark(work: Path) -> None:
    """The train-step benchmark at a tiny size under this process' backend, records in WORK/bench-<backend>."""
    from benchmarks import train_step

    backend = os.environ["KERAS_BACKEND"]
    train_step.main(["--backend", backend, "--image-size", str(SIZE), "--batch-size", "2", "--steps", "2",
                     "--warmup", "1", "--out", str(work / f"bench-{backend}")])


# ---------------------------------------------------------------------------------------------- pytest side


def _start(backend: str, work: Path, cpus: list[int]) -> subprocess.Popen:
    """Start `python -m tests.test_backends WORK` under `backend`, on the CPU and on `cpus`; its log: WORK/<backend>.log."""
    env = {**os.environ, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "",
           CPUS_ENV: ",".join(map(str, cpus))}
    with open(work / f"{backend}.log", "w") as log:  # the child holds its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "tests.test_backends", str(work)], cwd=REPO_ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def _finish(process: subprocess.Popen, backend: str, work: Path) -> None:
    """Wait for a backend's subprocess; fail with the end of its log if it failed."""
    try:
        code = process.wait(timeout=SUBPROCESS_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        code = f"killed after {SUBPROCESS_TIMEOUT_S} s"
    if code != 0:
        pytest.fail(f"the {backend} subprocess exited with {code}:\n{(work / f'{backend}.log').read_text()[-4000:]}")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """WORK once every installed backend's subprocess is done; TensorFlow's model and probabilities in it too."""
    import keras

    from utils.model import build_model

    work = tmp_path_factory.mktemp("backends")
    x = _images()
    np.save(work / "images.npy", x)
    keras.utils.set_random_seed(0)
    model = build_model(ALPHA, SIZE, seed=0)
    model.save(work / "tensorflow.keras")
    np.save(work / "tensorflow-probs.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    installed = [name for name in ("jax", "torch") if importlib.util.find_spec(name) is not None]
    # Side by side, each on its own share of the cores: their thread pools then do not fight over the same ones.
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    shares = [cores[i::len(installed)] or cores for i in range(len(installed))]
    running = {name: _start(name, work, share) for name, share in zip(installed, shares)}
    for name, process in running.items():
        _finish(process, name, work)
    return work


def _facts(work: Path, backend: str) -> dict[str, Any]:
    return json.loads((work / f"{backend}-facts.json").read_text())


def _arrays(work: Path, backend: str) -> Any:
    return np.load(work / f"{backend}-arrays.npz")


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_relu_is_leaky_with_slope_alpha(work, backend):
    facts = _facts(work, backend)
    assert facts["backend"] == backend and facts["tensorflow_loaded"] is False  # the premise: TensorFlow was hidden
    assert len(facts["leaky_slopes"]) == 49
    assert facts["leaky_slopes"] == pytest.approx([ALPHA] * 49)
    assert facts["relus_left"] == []
    assert facts["leaky_names"] == facts["stock_relu_names"] and len(set(facts["stock_relu_names"])) == 49
    np.testing.assert_allclose(facts["slope_on_negative_inputs"], [[-2.0, 0.0, 3.0]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_parameter_count_equals_stock_resnet50(work, backend):
    facts = _facts(work, backend)
    assert facts["params"] == facts["stock_notop_params"] + HEAD_PARAMS == STOCK_PARAMS


@pytest.mark.parametrize("backend", BACKENDS)
def test_augmentation_only_active_in_training(work, backend):
    arrays, x = _arrays(work, backend), _images()
    assert _facts(work, backend)["augmentation_layers"] == ["random_flip", "random_rotation", "random_zoom",
                                                            "random_contrast"]
    np.testing.assert_array_equal(arrays["inference"], arrays["inference_again"])
    np.testing.assert_allclose(arrays["inference"], arrays["plain_inference"], rtol=1e-5, atol=1e-6)
    assert np.abs(arrays["augmented_training"] - x).mean() > 1.0  # pixels are 0..255
    np.testing.assert_allclose(arrays["augmented_inference"], x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_alpha_zero_is_numerically_the_stock_relu_network(work, backend):
    facts, arrays = _facts(work, backend), _arrays(work, backend)
    assert facts["weights_copied"] == facts["stock_weighted_layers"] > 50
    np.testing.assert_allclose(arrays["alpha0_features"], arrays["stock_features"], rtol=1e-4, atol=1e-4)
    assert np.abs(arrays["alpha02_features"] - arrays["stock_features"]).max() > 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_steps_lower_the_loss(work, backend):
    losses = _facts(work, backend)["train_losses"]
    assert len(losses) == TRAIN_STEPS and all(np.isfinite(losses))
    assert losses[-1] < losses[0] / 2, f"{TRAIN_STEPS} steps on one batch did not halve the loss: {losses}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_saved_under_backend_loads_under_tensorflow(work, backend):
    from utils.model import load_model

    saved = _arrays(work, backend)["saved_probs"]
    loaded = load_model(work / f"{backend}.keras")
    assert loaded.get_layer("conv2_block1_out").negative_slope == pytest.approx(ALPHA)
    assert np.ptp(saved[:, 1]) > 10 * CROSS_BACKEND_ATOL  # outputs that differ between images: a sharp comparison
    np.testing.assert_allclose(loaded.predict(_images(), verbose=0), saved, atol=CROSS_BACKEND_ATOL, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_model_saved_under_tensorflow_loads_under_backend(work, backend):
    expected = np.load(work / "tensorflow-probs.npy")
    assert _facts(work, backend)["tensorflow_model_slope"] == pytest.approx(ALPHA)
    assert np.ptp(expected[:, 1]) > 10 * CROSS_BACKEND_ATOL
    np.testing.assert_allclose(_arrays(work, backend)["tensorflow_model_probs"], expected, atol=CROSS_BACKEND_ATOL,
                               rtol=0)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] == "jax"])
def test_augmentation_compiles_under_jax_and_computes_what_it_computes_eagerly(work, backend):
    arrays = _arrays(work, backend)
    np.testing.assert_allclose(arrays["augmented_jitted"], arrays["augmented_eager"], atol=1e-3)
    assert np.abs(arrays["augmented_jitted"] - _images()).mean() > 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_step_benchmark_runs_without_tensorflow(work, backend):
    from benchmarks.common import FLOP_PER_MAC, TRAIN_PASSES

    out = work / f"bench-{backend}"
    record = json.loads((out / f"train-step-cpu-{backend}.json").read_text())
    assert record["backend"] == backend and record["tensorflow_loaded"] is False  # it ran with TensorFlow hidden
    assert record["device"]["platform"] == "cpu" and record["device"]["name"] == "cpu"  # as the backend names it
    assert record["device"]["backend_version"] == importlib.metadata.version(backend)
    t = record["train_step"]
    assert (t["image_size"], t["batch_size"], t["steps"], t["warmup_steps"]) == (SIZE, 2, 2, 1)
    for name in ("leakyrelu", "stock_relu"):
        m = t[name]
        assert 0 < m["min_step_s"] <= m["median_step_s"]
        # Rounded to 0.1 in the record.
        assert m["images_per_s"] == pytest.approx(2 / m["median_step_s"], rel=0.01, abs=0.051)
        assert m["achieved_gflop_per_s"] == pytest.approx(2 / m["median_step_s"] * t["train_gflop_per_image"],
                                                          rel=0.01, abs=0.051)
        assert m["jit_compile"] is (backend == "jax")  # XLA under JAX (allow_jit), eager under torch
    assert t["ratio_leakyrelu_over_stock"] == pytest.approx(t["leakyrelu"]["median_step_s"] /
                                                            t["stock_relu"]["median_step_s"], abs=1e-3)
    assert t["train_gflop_per_image"] == pytest.approx(TRAIN_PASSES * FLOP_PER_MAC * t["forward_gmac_per_image"],
                                                       rel=1e-3)
    # Keras' ResNet50 (v1: stride 2 in the first 1x1 convolution of a stage) costs 3.86 GMAC at 224 px; He et al.
    # give 3.8 x 10^9 multiply-adds. The count scales with the pixels: x 49 from 32 px.
    assert 3.8 < t["forward_gmac_per_image"] * (224 / SIZE) ** 2 < 3.9
    markdown = (out / f"train-step-cpu-{backend}.md").read_text()
    assert f"**{t['ratio_leakyrelu_over_stock']:.3f}**" in markdown and "| leakyrelu |" in markdown


# ---------------------------------------------------------------------------------------------- entry point


def main(argv: list[str]) -> None:
    """`WORK`: the facts, then the benchmark, under $KERAS_BACKEND with TensorFlow hidden, on the cores $CPUS_ENV lists."""
    (work,) = argv
    if os.environ.get(CPUS_ENV):
        os.sched_setaffinity(0, [int(cpu) for cpu in os.environ[CPUS_ENV].split(",")])
    sys.meta_path[:] = [HideTensorFlow(finder) for finder in sys.meta_path]
    collect_facts(Path(work))
    run_benchmark(Path(work))


if __name__ == "__main__":
    main(sys.argv[1:])
