"""A frozen backbone's weights stored in the compute dtype of a mixed policy.

Under `mixed_bfloat16` a layer keeps float32 variables and casts each one to
bfloat16 every time it reads it. For a backbone nothing trains, that is a
float32 copy nothing updates, plus a cast of every kernel in every step
whose result the backward pass keeps. For ViT-B both together are about a
third of a GB of peak memory.

Inside `compute_dtype_storage()`, every weight a layer creates that it
would autocast is created in the compute dtype instead, holding exactly the
value the cast would give: its initializer still draws in the variable dtype
(so a seeded random backbone gets the same weights), then rounds. Weights
the layer reads in float32 stay float32: layer norms' scale and shift, and
embedding tables (their layers cast the rows they look up). Loaded
checkpoint values are rounded on assignment, as the cast would. So the
backbone computes the same products, bit for bit. Weights created after the
block (prefixes, heads, adapters) are untouched. It has to happen when the
weights are created: weights converted afterwards free their float32 copies
into memory that TensorFlow's training step did not reuse.

Example:

>>> import keras
>>> from kprefix.backbones.frozen_storage import compute_dtype_storage
>>> with compute_dtype_storage():
...     dense = keras.layers.Dense(2, dtype="mixed_bfloat16")
...     norm = keras.layers.LayerNormalization(dtype="mixed_bfloat16")
...     dense.build((None, 3)); norm.build((None, 3))
>>> dense.kernel.dtype, norm.gamma.dtype
('bfloat16', 'float32')
"""

import contextlib

import keras


@contextlib.contextmanager
def compute_dtype_storage():
    """Within the block, layers create the weights they autocast in their compute dtype."""
    original = keras.Layer.add_weight

    def add_weight(layer, *args, **kwargs):
        # Keras's own positional order: shape, initializer, dtype.
        kwargs.update(zip(("shape", "initializer", "dtype"), args))
        stored, compute = layer.variable_dtype, layer.compute_dtype
        dtype = keras.backend.standardize_dtype(kwargs.get("dtype") or stored)
        if (layer.autocast and kwargs.get("autocast", True) and dtype == stored
                and compute != stored and "float" in dtype):
            base = keras.initializers.get(kwargs.get("initializer") or "glorot_uniform")
            kwargs["initializer"] = lambda shape, dtype=None: keras.ops.cast(
                base(shape, dtype=stored), compute)
            kwargs["dtype"] = compute
        return original(layer, **kwargs)

    keras.Layer.add_weight = add_weight
    try:
        yield
    finally:
        keras.Layer.add_weight = original
