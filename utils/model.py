"""Model: keras.applications.ResNet50 with every ReLU replaced by LeakyReLU, preprocessing and augmentation inside."""
from __future__ import annotations

import os

import keras
from keras import ops

from utils.augmentation import DEFAULT_AUGMENTATION, allow_jit, build_augmentation

NUM_CLASSES = 2
# keras.applications.resnet50.preprocess_input ("caffe" mode): RGB -> BGR, minus the ImageNet channel means.
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# Grad-CAM needs a map with enough cells to localise anything: conv5_block3_out is 7x7 at 224 px but 2x2 at 64 px.
GRADCAM_MIN_CELLS = 7


@keras.saving.register_keras_serializable(package="deepfake")
class ResNetPreprocess(keras.layers.Layer):
    """ResNet50's caffe preprocessing as a layer, so training and inference feed the model the same raw pixels."""

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.convert_to_tensor(IMAGENET_MEAN_BGR, dtype=bgr.dtype)


def _is_relu(layer: keras.layers.Layer) -> bool:
    """True for the stock ResNet50's activation layers (all of them are ReLU)."""
    if isinstance(layer, keras.layers.ReLU):
        return True
    return isinstance(layer, keras.layers.Activation) and layer.get_config().get("activation") == "relu"


def replace_relu(model: keras.Model, alpha: float, bn_momentum: float | None = None) -> keras.Model:
    """Clone a functional model with each ReLU swapped for LeakyReLU(alpha) under the same name (and BN momentum set)."""
    def swap(layer: keras.layers.Layer) -> keras.layers.Layer:
        if _is_relu(layer):
            # Same name as the ReLU it replaces, so weights keyed by layer name still match.
            return keras.layers.LeakyReLU(negative_slope=alpha, name=layer.name)
        config = layer.get_config()
        if bn_momentum is not None and isinstance(layer, keras.layers.BatchNormalization):
            config["momentum"] = bn_momentum
        return layer.__class__.from_config(config)

    return keras.models.clone_model(model, clone_function=swap)


def copy_weights_by_name(source: keras.Model, target: keras.Model) -> int:
    """Copy every weighted layer of `source` into the same-named layer of `target`; returns how many were copied."""
    copied = 0
    for layer in source.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
            copied += 1
    return copied


def build_model(alpha: float = 0.2, image_size: int = 224, weights: str | None = None,
                augmentation: dict | None = None, seed: int | None = None,
                bn_momentum: float | None = None) -> keras.Model:
    """Uncompiled LeakyReLU-ResNet50: raw RGB 0..255 in, augmentation (training only) and preprocessing, 2-way softmax."""
    if not 0 <= alpha < 1:
        raise ValueError(f"alpha (LeakyReLU negative slope) must be in [0, 1), got {alpha}")
    if weights not in (None, "imagenet") and not os.path.isfile(str(weights)):
        raise ValueError(f"weights must be None, 'imagenet' or a ResNet50 (no top) weights file; {weights!r} is not a file")
    inputs = keras.Input((image_size, image_size, 3), name="image")
    augment = build_augmentation(**{**DEFAULT_AUGMENTATION, **(augmentation or {})}, seed=seed)
    x = augment(inputs) if augment.layers else inputs
    x = ResNetPreprocess(name="preprocess")(x)
    # Built on our input so the clone below is one flat graph: Grad-CAM can reach any block output by name.
    stock = keras.applications.ResNet50(include_top=False, weights=None, input_tensor=x)
    body = replace_relu(keras.Model(inputs, stock.output), alpha, bn_momentum)
    if weights is not None:
        pretrained = keras.applications.ResNet50(include_top=False, weights=weights,
                                                 input_shape=(image_size, image_size, 3))
        copy_weights_by_name(pretrained, body)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(body.output)
    # float32 head: softmax and cross-entropy stay stable under mixed precision.
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="predictions")(x)
    return allow_jit(keras.Model(body.inputs, outputs, name=f"leakyrelu{alpha:g}_resnet50"))


def gradcam_layer(model: keras.Model, min_cells: int = GRADCAM_MIN_CELLS) -> tuple[str, tuple[int, int]]:
    """(name, (h, w)) of the deepest layer whose output is a spatial map of at least min_cells x min_cells.

    For the ResNet50 that is the last block output before a stride that would shrink it below the minimum:
    conv5_block3_out at 224 px (7x7), conv4_block6_out at 112 px (7x7), conv3_block4_out at 64 px (8x8).
    """
    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # a layer used several times has no single output
            continue
        if len(shape) == 4 and None not in shape[1:3] and min(shape[1], shape[2]) >= min_cells:
            return layer.name, (int(shape[1]), int(shape[2]))
    raise ValueError(f"model {model.name!r} has no layer with a spatial map of at least {min_cells}x{min_cells} "
                     f"cells (input shape {model.input_shape}): too small an image_size for Grad-CAM")


def load_model(path: str | os.PathLike, dtype: str | None = "float32") -> keras.Model:
    """Load a saved model.keras for inference, computing in `dtype` (None: the policies it was saved with).

    Keras saves each layer's dtype policy, so a model trained under mixed_float16 would load computing in float16
    whatever the machine: half the speed of float32 on a CPU (measured) and scores that depend on the training
    precision. Uncompiled: its optimizer state (e.g. a loss-scaled one from a mixed-precision run) is not wanted.
    This module registers its custom layer; whichever backend keras runs loads it.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path} does not exist (expected a training run's model.keras)")
    model = keras.saving.load_model(path, compile=False)
    if dtype is not None and any(layer.dtype_policy.name != dtype for layer in nested_layers(model)):
        model = with_dtype(model, dtype)
    return allow_jit(model)


def nested_layers(model: keras.layers.Layer) -> list[keras.layers.Layer]:
    """Every layer nested in a model, at any depth (the augmentation's inside it too), but its inputs."""
    found = []
    for layer in getattr(model, "layers", []):
        if not isinstance(layer, keras.layers.InputLayer):
            found += [layer, *nested_layers(layer)]
    return found


def with_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """The same model, weights included, with every layer's dtype policy set to `dtype` (e.g. "float32")."""
    policy = keras.dtype_policies.get(dtype)  # a clear error for an unknown policy name

    def retype(node):
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and "config" in node:
                return {**node, "config": {**node["config"], "name": policy.name}}
            return {key: retype(value) for key, value in node.items()}
        if isinstance(node, list):
            return [retype(value) for value in node]
        return node

    rebuilt = keras.saving.deserialize_keras_object(retype(keras.saving.serialize_keras_object(model)))
    rebuilt.set_weights(model.get_weights())
    return rebuilt
