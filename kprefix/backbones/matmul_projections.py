"""Attention projections computed as one 2-D `MatMul` instead of a batched one.

Keras's `MultiHeadAttention` projects with `EinsumDense` layers
(`abc,cde->abde` for query, key and value, `abcd,cde->abe` for the output).
On TensorFlow, Keras turns these einsums into `tf.matmul` of the `(B, S, C)`
activations with the kernel broadcast over the batch: a `BatchMatMulV2` of B
small products, which oneDNN ran about 40% slower per multiply-add than the
single `(B*S, C) @ (C, D)` `MatMul` of the MLP's `Dense` layers in a profiled
ViT-B/16 training step (2 CPU threads). So do their input gradients.

`use_matmul_projections(attention)` swaps the class of those four layers for
one that flattens the leading axes and makes that single product; the
result is the same function with the same variables. Layers with LoRA or
quantization, or any other equation, keep Keras's own `call`.

Example:

>>> import numpy as np, keras
>>> from kprefix.backbones.matmul_projections import use_matmul_projections
>>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
>>> x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
>>> before = mha(x, x)
>>> use_matmul_projections(mha)
>>> bool(np.allclose(mha(x, x), before, atol=1e-6))
True
"""

import math

import tensorflow as tf
from keras import ops

from kprefix.backbones.layer_classes import mix_into

# Equation -> number of the input's trailing axes that the kernel contracts.
CONTRACTED_AXES = {"abc,cde->abde": 1, "abcd,cde->abe": 2}


class _MatMulProjection:
    """Mixed into `EinsumDense`: its `call` as one 2-D product."""

    def call(self, inputs, training=None):
        contracted = CONTRACTED_AXES.get(self.equation)
        if contracted is None or self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs, training=training)
        kernel = self.kernel
        depth = math.prod(kernel.shape[:contracted])
        leading = inputs.shape[:-contracted]
        if None in leading:
            leading = tf.unstack(tf.shape(inputs)[:-contracted])
        x = tf.matmul(tf.reshape(inputs, [-1, depth]), tf.reshape(kernel, [depth, -1]))
        x = tf.reshape(x, [*leading, *kernel.shape[contracted:]])
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


def use_matmul_projections(attention):
    """Makes the query, key, value and output projections of `attention` 2-D products.

    The projections keep their class names, so their checkpoint paths stay;
    an adapter can still be mixed into the output projection on top.
    """
    for layer in (attention.query_dense, attention.key_dense, attention.value_dense,
                  attention.output_dense):
        mix_into(layer, _MatMulProjection)
