"""How prefix keys and values join a Keras multi-head attention layer.

Prefixes enter after the layer's key/value projections: for every head,
`softmax([Q K^T, Q P_k^T] / sqrt(d)) [V; P_v]`. The attention mask gains `P`
always-visible columns in front. Everything else the layer does (projections,
caching, output projection, dropout) is the layer's own code: the prefix is
added by overriding only `MultiHeadAttention._compute_attention`, which
receives the already projected `(B, S, heads, dim)` keys and values. Because
keras-hub's `CachedMultiHeadAttention` calls the same method after it has
spliced the cache, the cache only ever holds the real sequence and the prefix
is added at every decoding step, for any batch or beam size.

Installing changes the class of an existing, built layer to a prefix-aware
subclass, so its variables, names and checkpoint paths stay as they were.
`uninstall_prefix` restores the original class.

Example:

>>> import numpy as np, keras
>>> from kprefix.prefix.attention import install_prefix
>>> mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
>>> x = np.ones((1, 3, 8), "float32")
>>> _ = mha(x, x)
>>> prefix = (np.zeros((5, 2, 4), "float32"), np.zeros((5, 2, 4), "float32"))
>>> install_prefix(mha, lambda training: prefix)
>>> tuple(mha(x, x).shape)
(1, 3, 8)
"""


from keras import ops

from kprefix.backbones.layer_classes import mix_into, unmix


def concat_prefix(key, value, attention_mask, prefix_key, prefix_value):
    """Prepends batch-independent prefixes to projected keys and values.

    Args:
        key: `(B, S, heads, key_dim)` projected keys.
        value: `(B, S, heads, value_dim)` projected values.
        attention_mask: `None` or a `(B, T, S)` mask (1 = may attend).
        prefix_key: `(P, heads, key_dim)` prefix keys.
        prefix_value: `(P, heads, value_dim)` prefix values.

    Returns:
        `(key, value, mask)` with `P + S` key positions; the mask's first `P`
        columns are ones. A `None` mask stays `None`.
    """
    batch = ops.shape(key)[0]
    num_prefix = prefix_key.shape[0]
    prefix_key = ops.cast(prefix_key, key.dtype)
    prefix_value = ops.cast(prefix_value, value.dtype)
    prefix_key = ops.broadcast_to(prefix_key[None], (batch,) + tuple(prefix_key.shape))
    prefix_value = ops.broadcast_to(
        prefix_value[None], (batch,) + tuple(prefix_value.shape)
    )
    key = ops.concatenate([prefix_key, key], axis=1)
    value = ops.concatenate([prefix_value, value], axis=1)
    if attention_mask is not None:
        mask_shape = ops.shape(attention_mask)
        visible = ops.ones(
            (mask_shape[0], mask_shape[1], num_prefix), dtype=attention_mask.dtype
        )
        attention_mask = ops.concatenate([visible, attention_mask], axis=-1)
    return key, value, attention_mask


class PrefixAttentionMixin:
    """Adds the prefix from `self._prefix_source(training)` to attention."""

    def _compute_attention(
        self,
        query,
        key,
        value,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        use_causal_mask=False,
    ):
        prefix_key, prefix_value = self._prefix_source(training)
        if use_causal_mask:
            # The fused causal kernel cannot see the prefix columns: build the
            # causal mask explicitly before it is extended.
            causal = self._compute_causal_mask(query, value)
            attention_mask = causal if attention_mask is None else ops.logical_and(
                ops.cast(attention_mask, "bool"), causal
            )
        key, value, attention_mask = concat_prefix(
            key, value, attention_mask, prefix_key, prefix_value
        )
        return super()._compute_attention(
            query,
            key,
            value,
            attention_mask=attention_mask,
            training=training,
            return_attention_scores=return_attention_scores,
        )


def install_prefix(attention_layer, prefix_source):
    """Makes `attention_layer` attend to the prefixes of `prefix_source`.

    Args:
        attention_layer: a built `keras.layers.MultiHeadAttention` (or a
            subclass such as keras-hub's `CachedMultiHeadAttention`).
        prefix_source: a callable `training -> (prefix_key, prefix_value)`,
            each `(P, heads, dim)`. It is called once per attention call, so
            the generator behind it runs once per step, not per example.
    """
    if not attention_layer.built:
        raise ValueError(
            f"Attention layer {attention_layer.name!r} is not built; build the "
            "backbone (call it once or load it from a preset) before adding prefixes."
        )
    # The source is attached untracked: the generator's variables belong to
    # the prefix container, not to the (frozen) backbone.
    mix_into(attention_layer, PrefixAttentionMixin, "Prefix{}", _prefix_source=prefix_source)


def uninstall_prefix(attention_layer):
    """Restores the layer's original class; a no-op without a prefix."""
    unmix(attention_layer, PrefixAttentionMixin, "_prefix_source")
