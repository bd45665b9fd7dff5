"""The TPU path's data parallelism: Keras' DataParallel under JAX over 8 devices trains as one device does.

One global batch of 8 images, one per device, in two training steps with the study's augmentation: the losses and
every batch norm's moving statistics after them must equal those of the same model on one device. They would not
if batch normalisation took its statistics per device (one image each) or if the devices drew the same flips,
angles, zooms and contrasts for their images. A subprocess, because XLA's device count is fixed when JAX starts
(8 virtual host devices, utils.accelerator.virtual_devices_env) and the rest of the suite runs Keras on TensorFlow.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from utils.accelerator import virtual_devices_env

REPO_ROOT = Path(__file__).resolve().parent.parent
DEVICES = 8
# SGD with a tiny rate: the second step sees (almost) the first step's weights on both sides, so a difference
# in its loss or in the moving statistics comes from the batch statistics or the augmentation draws, not from
# rounding amplified by training (Adam moves a weight by its full rate whatever the gradient's size).
SCRIPT = """
import json, sys
import jax, keras, numpy as np
from utils.model import build_model

x = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
y = np.array([0, 1] * 4)

def train(devices):
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    keras.utils.set_random_seed(3)
    model = build_model(0.2, 32, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(1e-6), loss="sparse_categorical_crossentropy")
    losses = [float(model.train_on_batch(x, y)) for _ in range(2)]
    moving = {w.path: np.asarray(w).tolist() for w in model.weights if "moving" in w.path}
    return {"losses": losses, "moving": moving}

json.dump({"devices": len(jax.devices()), "many": train(jax.devices()), "one": train(jax.devices()[:1])},
          open(sys.argv[1], "w"))
"""


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_data_parallel_over_eight_devices_trains_as_one_device(tmp_path):
    env = {**os.environ, **virtual_devices_env(DEVICES), "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO_ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "out.json")], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["devices"] == DEVICES
    many, one = result["many"], result["one"]
    np.testing.assert_allclose(many["losses"], one["losses"], rtol=1e-4)
    assert many["moving"].keys() == one["moving"].keys() and len(many["moving"]) == 2 * 53  # ResNet50's 53 norms
    for path, values in many["moving"].items():
        np.testing.assert_allclose(values, one["moving"][path], rtol=1e-3, atol=1e-5, err_msg=path)
