"""`exact_gelu` against a float64 NumPy reference, and where the task models use it."""

import math

import keras
import numpy as np
import tensorflow as tf

from helpers import gpt2_lm, image_classifier
from kprefix.backbones.exact_gelu import exact_gelu

X = np.concatenate([np.linspace(-9, 9, 4001),
                    np.random.default_rng(0).normal(scale=3, size=4000)]).astype("float32")


def reference(x):
    """gelu(x) and its derivative in float64."""
    x = np.asarray(x, np.float64)
    cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    density = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * density


def value_and_gradient(function, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return y.numpy(), tape.gradient(y, x).numpy()


def test_float32_matches_float64_reference():
    value, gradient = value_and_gradient(exact_gelu, X)
    expected_value, expected_gradient = reference(X)
    scale = np.maximum(1.0, np.abs(X))
    assert value.dtype == np.float32
    assert np.max(np.abs(value - expected_value) / scale) < 5e-7
    assert np.max(np.abs(gradient - expected_gradient) / scale) < 5e-7


def test_bfloat16_is_the_rounded_float32_result_and_no_worse_than_keras():
    x = tf.cast(X, tf.bfloat16)
    value, gradient = value_and_gradient(exact_gelu, x)
    as_float32, _ = value_and_gradient(exact_gelu, tf.cast(x, tf.float32))
    np.testing.assert_array_equal(value, tf.cast(as_float32, tf.bfloat16).numpy())
    expected_value, expected_gradient = reference(tf.cast(x, tf.float32).numpy())
    keras_value, keras_gradient = value_and_gradient(
        lambda v: keras.activations.gelu(v, approximate=False), x)
    for ours, theirs, expected in ((value, keras_value, expected_value),
                                   (gradient, keras_gradient, expected_gradient)):
        ours_error = np.abs(ours.astype(np.float64) - expected)
        keras_error = np.abs(theirs.astype(np.float64) - expected)
        assert ours_error.max() <= keras_error.max()
        assert ours_error.mean() <= keras_error.mean()


def test_task_models_use_it_where_the_backbone_has_exact_gelu():
    """ViT's MLP uses exact GELU; GPT-2's tanh approximation is left alone."""
    model = image_classifier("deep_share")
    activations = {layer.activation for layer in model.backbone._flatten_layers()
                   if isinstance(layer, keras.layers.Dense)}
    assert exact_gelu in activations and keras.activations.gelu not in activations
    assert exact_gelu not in {layer.activation for layer in gpt2_lm().backbone._flatten_layers()
                              if isinstance(layer, keras.layers.Dense)}


def test_vit_logits_equal_those_with_keras_gelu():
    model = image_classifier("deep_share")
    images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype("float32")
    ours = model(images, training=False)
    for layer in model.backbone._flatten_layers():
        if getattr(layer, "activation", None) is exact_gelu:
            layer.activation = keras.activations.gelu
    np.testing.assert_allclose(ours, model(images, training=False), atol=1e-5)


def test_a_dense_layer_with_it_round_trips_its_config():
    dense = keras.layers.Dense(3, activation=exact_gelu)
    assert keras.layers.Dense.from_config(dense.get_config()).activation is exact_gelu
