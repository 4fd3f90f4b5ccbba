"""The exact GELU of ViT and BART, in fewer and faster ops.

`gelu(x) = x * Phi(x)`, with `Phi(x) = (1 + erf(x / sqrt(2))) / 2` the normal CDF
(not the tanh approximation, which GPT-2 uses).

TensorFlow's `tf.nn.gelu(x, approximate=False)`, which Keras's `"gelu"` calls,
computes `0.5 * x * erfc(-x / sqrt(2))`. Eigen evaluates `erfc` one element at
a time (`erf` is vectorised), in bfloat16 under a `mixed_bfloat16` policy,
and autodiff adds about ten element-wise ops for its gradient. `exact_gelu`
computes PyTorch's formula, `x * Phi(x)`, in float32 whatever the input's
dtype, and writes the derivative out: `Phi(x) + x * phi(x)`, where `phi` is
the normal density. Its backward pass keeps only the input, which the
preceding product's gradient needs anyway. Values agree with a float64
reference to float32 rounding, and in bfloat16 are the correctly rounded
float32 result, no further from the reference than `tf.nn.gelu`'s.

`use_exact_gelu(backbone)` points every `Dense` of `backbone` whose
activation is Keras's exact GELU at `exact_gelu`; other layers are untouched.

Example:

>>> import numpy as np, keras
>>> from kprefix.backbones.exact_gelu import exact_gelu
>>> x = np.linspace(-4, 4, 9).astype("float32")
>>> bool(np.allclose(exact_gelu(x), keras.activations.gelu(x, approximate=False), atol=1e-6))
True
"""

import math

import keras
import tensorflow as tf

_SQRT_HALF = math.sqrt(0.5)
_INVERSE_SQRT_TWO_PI = 1.0 / math.sqrt(2.0 * math.pi)


def _normal_cdf(x):
    return 0.5 * (1.0 + tf.math.erf(x * _SQRT_HALF))


@keras.saving.register_keras_serializable(package="kprefix")
def exact_gelu(x):
    """`x * Phi(x)`, computed in float32, returned in `x`'s dtype."""
    return _exact_gelu(tf.convert_to_tensor(x))


@tf.custom_gradient
def _exact_gelu(x):
    x32 = tf.cast(x, tf.float32)
    y = tf.cast(x32 * _normal_cdf(x32), x.dtype)

    def gradient(upstream):
        x32 = tf.cast(x, tf.float32)  # recomputed: only x stays alive for the backward pass
        density = tf.exp(-0.5 * tf.square(x32)) * _INVERSE_SQRT_TWO_PI
        slope = _normal_cdf(x32) + x32 * density
        return tf.cast(tf.cast(upstream, tf.float32) * slope, x.dtype)

    return y, gradient


def use_exact_gelu(backbone):
    """Makes each `Dense` of `backbone` that applies Keras's exact GELU use `exact_gelu`."""
    for layer in backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.gelu:
            layer.activation = exact_gelu
