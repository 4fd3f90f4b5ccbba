"""GPT-2's decoding cache kept in attention layout, one key and one value tensor per layer.

keras-hub's `GPT2CausalLM.call_with_cache` holds every layer's keys and values
in one `(B, layers, 2, length, heads, dim)` tensor. Each decoding step slices
a layer out of it, splits keys from values, writes the new position, stacks
them back, and the attention transposes keys and values to `(B, heads,
length, dim)` before its products (and, with prefixes, concatenates them in
front): the whole cache is copied several times per layer and step.

`DecodingCache` keeps each layer's keys and values in that `(B, heads, slots,
dim)` layout, the layer's prefix in the first `reserved` slots and position
`i` in slot `reserved + i`, so a step writes one slot and reads the cache once.
The prompt itself goes through keras-hub's cached call (`prefill`); only the
one-token steps (`step`) are computed here, from the backbone's own layers.

Example:

>>> import numpy as np
>>> from keras import ops
>>> from kprefix.backbones import build_backbone
>>> from kprefix.prefix import PrefixConfig
>>> from kprefix.tasks import PrefixGPT2CausalLM
>>> from kprefix.tasks.gpt2_cache import DecodingCache
>>> lm = PrefixGPT2CausalLM(build_backbone("gpt2_tiny"), prefix_config=PrefixConfig(length=3))
>>> prompt = np.array([[5, 6, 7]], "int32")
>>> cache = DecodingCache(lm)
>>> caches = cache.prefill(prompt[:, :2], capacity=4)
>>> logits, caches = cache.step(caches, prompt[:, 2:], 2)
>>> full = lm({"token_ids": prompt, "padding_mask": np.ones_like(prompt)})
>>> bool(np.allclose(ops.convert_to_numpy(logits[:, 0]), ops.convert_to_numpy(full[:, 2]),
...                  atol=1e-5))
True
"""

import keras_hub
from keras import ops

from kprefix.prefix.attention import concat_prefix


class DecodingCache:
    """Prefill and one-token steps of a keras-hub `GPT2CausalLM` (prefixed, folded or plain).

    Caches are a tuple with one `(keys, values)` pair per layer, each `(B,
    heads, reserved + capacity, dim)`, slots along `AXIS`. Layers without a
    prefix (SHALLOW placement) leave their reserved slots unseen.
    """

    AXIS = 2

    def __init__(self, lm):
        self.lm = lm
        self.backbone = lm.backbone
        for layer in self.backbone.transformer_layers:
            # `step` recomputes these blocks from their sublayers: anything
            # changed in the block's own `call` would be skipped.
            if (type(layer) is not keras_hub.layers.TransformerDecoder
                    or not layer.normalize_first or layer._cross_attention_layer is not None):
                raise ValueError(f"DecodingCache decodes keras-hub GPT-2 blocks; layer "
                                 f"{layer.name!r} is a {type(layer).__name__}. Decode this "
                                 "model with keras-hub's `generate()` instead.")
        # Prefixes do not depend on the tokens: generated once per decoding call.
        self.prefixes = []  # per layer: (key, value), each (P, heads, dim), or None
        for layer in self.backbone.transformer_layers:
            source = getattr(layer._self_attention_layer, "_prefix_source", None)
            self.prefixes.append(None if source is None else source(False))
        self.reserved = max([0] + [p[0].shape[0] for p in self.prefixes if p is not None])

    def prefill(self, token_ids, capacity):
        """Caches with the `(B, W)` prompts' keys and values, room for `capacity` positions."""
        backbone = self.backbone
        width = token_ids.shape[1]
        heads, dim = backbone.num_heads, backbone.hidden_dim // backbone.num_heads
        cache = ops.zeros((ops.shape(token_ids)[0], backbone.num_layers, 2, width, heads, dim),
                          dtype=self.lm.compute_dtype)
        _, _, cache = self.lm.call_with_cache(token_ids, cache, 0)
        padding = [[0, 0], [0, 0], [0, capacity - width], [0, 0]]
        unseen = ops.zeros((self.reserved, heads, dim))  # slots of layers without a prefix
        caches = []
        for i, prefix in enumerate(self.prefixes):
            keys, values, _ = concat_prefix(cache[:, i, 0], cache[:, i, 1], None,
                                            *(prefix or (unseen, unseen)))
            caches.append(tuple(ops.pad(ops.transpose(t, (0, 2, 1, 3)), padding)
                                for t in (keys, values)))
        return tuple(caches)

    def step(self, caches, token_ids, index):
        """`((B, 1, vocab) logits, caches)` for the `(B, 1)` tokens at position `index`."""
        backbone = self.backbone
        x = backbone.token_embedding(token_ids)
        x = backbone.embeddings_add((x, backbone.position_embedding(x, start_index=index)))
        slot = self.reserved + index
        slots = ops.arange(ops.shape(caches[0][0])[self.AXIS])
        written = (slots >= self.reserved) & (slots <= slot)
        with_prefix = written | (slots < self.reserved)
        updated = []
        for layer, prefix, (keys, values) in zip(backbone.transformer_layers, self.prefixes,
                                                 caches):
            attended, keys, values = _attend(
                layer._self_attention_layer, layer._self_attention_layer_norm(x), keys, values,
                slot, written if prefix is None else with_prefix)
            x = x + attended
            h = layer._feedforward_intermediate_dense(layer._feedforward_layer_norm(x))
            x = x + layer._feedforward_output_dense(h)
            updated.append((keys, values))
        x = backbone.layer_norm(x)
        return backbone.token_embedding(x, reverse=True), tuple(updated)


def _attend(attention, x, keys, values, slot, visible):
    """`attention` of the `(B, 1, hidden)` queries over the visible slots, this one written."""
    def heads_first(t):  # (B, 1, heads, dim) -> (B, heads, 1, dim): the same memory
        return ops.reshape(t, (ops.shape(t)[0], t.shape[2], 1, t.shape[3]))

    start = [0, 0, slot, 0]
    keys = ops.slice_update(keys, start, heads_first(attention._key_dense(x)))
    values = ops.slice_update(values, start, heads_first(attention._value_dense(x)))
    query = heads_first(attention._query_dense(x))
    query = query * ops.cast(attention._inverse_sqrt_key_dim, query.dtype)
    scores = ops.einsum("bhqd,bhkd->bhqk", query, keys)
    scores = ops.where(visible, ops.cast(scores, "float32"), float("-inf"))
    probs = ops.cast(ops.softmax(scores, axis=-1), values.dtype)
    output = ops.einsum("bhqk,bhkd->bhqd", probs, values)
    output = ops.reshape(output, (ops.shape(output)[0], 1, output.shape[1], output.shape[3]))
    return attention._output_dense(output), keys, values
