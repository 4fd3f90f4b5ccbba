"""GPT-2's decoding cache in attention layout, the prompt's part shared by an input's beams.

keras-hub's `GPT2CausalLM.call_with_cache` holds every layer's keys and values
in one `(B, layers, 2, length, heads, dim)` tensor. Each decoding step slices
a layer out of it, splits keys from values, writes the new position, stacks
them back, and the attention transposes keys and values to `(B, heads,
length, dim)` before its products (and, with prefixes, concatenates them in
front): the whole cache is copied several times per layer and step. Beam
search then repeats that cache for every beam and reorders it after every
step, prompt included, although an input's beams all share their prompt.

`DecodingCache` splits each layer's keys and values in two, both in the
`(rows, heads, slots, dim)` layout that the attention's products read:

- the context, once per input: the layer's prefix in the first `reserved`
  slots, then the prompt's positions up to `first` (the first position that
  decoding steps compute), from keras-hub's cached call (`prefill`);
- the steps' cache, one row per beam: position `first + i` in slot `i`,
  written by the one-token steps (`step`), which are computed here from the
  backbone's own layers.

So a step writes one slot and reads each cache once, and what beam search
copies and reorders is only what its beams do not share. Beam search hands
the step the rows its beams continue (`beam_rows`): the step reorders its
caches and writes the new slot into that fresh copy in place, one copy of
each cache per step instead of two.

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
>>> context, caches = cache.prefill(prompt[:, :2], first=1, capacity=2)
>>> _, caches = cache.step(context, caches, prompt[:, 1:2], 1)
>>> logits, caches = cache.step(context, caches, prompt[:, 2:], 2)
>>> full = lm({"token_ids": prompt, "padding_mask": np.ones_like(prompt)})
>>> bool(np.allclose(ops.convert_to_numpy(logits[:, 0]), ops.convert_to_numpy(full[:, 2]),
...                  atol=1e-5))
True
"""

import keras_hub
import tensorflow as tf
from keras import ops
from tensorflow.python.ops import control_flow_util

from kprefix.prefix.attention import concat_prefix


class DecodingCache:
    """Prefill and one-token steps of a keras-hub `GPT2CausalLM` (prefixed, folded or plain).

    `prefill` returns the context and the steps' caches (see the module doc).
    The context is `(first, layers)`, each layer's `(keys, values)` being `(B,
    heads, reserved + W, dim)`; the steps' caches are a tuple with one `(keys,
    values)` pair per layer, each `(rows, heads, capacity, dim)`, slots along
    `AXIS`, where `rows` is `B` times the number of beams (beams of an input
    are consecutive rows). Layers without a prefix (SHALLOW placement) leave
    their reserved slots unseen.
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

    def prefill(self, token_ids, first, capacity):
        """`(context, caches)` for the `(B, W)` prompts, whose positions before
        `first` are the context; the caches have room for `capacity` positions."""
        backbone = self.backbone
        width = token_ids.shape[1]
        batch = ops.shape(token_ids)[0]
        heads, dim = backbone.num_heads, backbone.hidden_dim // backbone.num_heads
        cache = ops.zeros((batch, backbone.num_layers, 2, width, heads, dim),
                          dtype=self.lm.compute_dtype)
        _, _, cache = self.lm.call_with_cache(token_ids, cache, 0)
        unseen = ops.zeros((self.reserved, heads, dim))  # slots of layers without a prefix
        context, caches = [], []
        for i, prefix in enumerate(self.prefixes):
            keys, values, _ = concat_prefix(cache[:, i, 0], cache[:, i, 1], None,
                                            *(prefix or (unseen, unseen)))
            context.append(tuple(ops.transpose(t, (0, 2, 1, 3)) for t in (keys, values)))
            caches.append(tuple(ops.zeros((batch, heads, capacity, dim), dtype=keys.dtype)
                                for _ in range(2)))
        return (first, tuple(context)), tuple(caches)

    def step(self, context, caches, token_ids, index, beam_rows=None):
        """`((rows, 1, vocab) logits, caches)` for the `(rows, 1)` tokens at position `index`.

        `beam_rows` (`(rows,)`, optional): the rows of `caches` that each row
        continues (a beam search's choice); the caches are reordered by them
        before the step writes its slot."""
        backbone = self.backbone
        first, context = context
        x = backbone.token_embedding(token_ids)
        x = backbone.embeddings_add((x, backbone.position_embedding(x, start_index=index)))
        slot = index - first
        written = ops.arange(ops.shape(caches[0][0])[self.AXIS]) <= slot
        context_slots = ops.arange(ops.shape(context[0][0])[self.AXIS])
        prompt_seen = (context_slots >= self.reserved) & (context_slots < self.reserved + first)
        # What a layer's queries see, context then steps: with or without its prefix.
        seen_by = {False: ops.concatenate([prompt_seen, written]),
                   True: ops.concatenate([prompt_seen | (context_slots < self.reserved), written])}
        updated = []
        for layer, prefix, shared, (keys, values) in zip(
                backbone.transformer_layers, self.prefixes, context, caches):
            seen = seen_by[prefix is not None]
            attended, keys, values = _attend(layer._self_attention_layer,
                                             layer._self_attention_layer_norm(x),
                                             shared, keys, values, slot, seen, beam_rows)
            x = x + attended
            h = layer._feedforward_intermediate_dense(layer._feedforward_layer_norm(x))
            x = x + layer._feedforward_output_dense(h)
            updated.append((keys, values))
        x = backbone.layer_norm(x)
        return backbone.token_embedding(x, reverse=True), tuple(updated)


def _write_slot(cache, slot, new, rows=None):
    """`cache` `(rows, heads, slots, dim)`, reordered by `rows` if given, with
    slot `slot` set to `new` `(rows, heads, 1, dim)`.

    The reordered cache is a new buffer that nothing else reads, so the write
    goes into it in place (`InplaceUpdate`, outside XLA); `slice_update` would
    copy the whole cache once more."""
    if rows is None or control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()):
        cache = cache if rows is None else ops.take(cache, rows, axis=0)
        return ops.slice_update(cache, [0, 0, slot, 0], new)
    cache = tf.gather(cache, rows)
    count, heads, slots, dim = ops.shape(cache)
    # Viewed as (rows * heads * slots, dim): row r * slots + slot of each (row, head) r.
    where = ops.arange(count * heads, dtype="int32") * slots + slot
    written = tf.raw_ops.InplaceUpdate(x=ops.reshape(cache, (-1, dim)), i=where,
                                       v=ops.reshape(new, (-1, dim)))
    return ops.reshape(written, ops.shape(cache))


def _attend(attention, x, context, keys, values, slot, seen, beam_rows=None):
    """`attention` of the `(rows, 1, hidden)` queries over the context and
    the step's cache, whose slot `slot` it writes (after reordering it by
    `beam_rows`, if given); `seen` masks both, in order."""
    rows, heads, dim = ops.shape(x)[0], keys.shape[1], keys.shape[3]
    context_keys, context_values = context
    inputs, shared = ops.shape(context_keys)[0], context_keys.shape[2]

    def heads_first(t):  # (rows, 1, heads, dim) -> (rows, heads, 1, dim): the same memory
        return ops.reshape(t, (rows, heads, 1, dim))

    def by_input(t, n):  # (rows, heads, 1, n) -> (B, heads, beams, n)
        return ops.transpose(ops.reshape(t, (inputs, -1, heads, n)), (0, 2, 1, 3))

    def by_row(t, n):  # (B, heads, beams, n) -> (rows, heads, 1, n)
        return ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (rows, heads, 1, n))

    keys = _write_slot(keys, slot, heads_first(attention._key_dense(x)), beam_rows)
    values = _write_slot(values, slot, heads_first(attention._value_dense(x)), beam_rows)
    query = heads_first(attention._query_dense(x))
    query = query * ops.cast(attention._inverse_sqrt_key_dim, query.dtype)
    shared_scores = ops.einsum("bhqd,bhkd->bhqk", by_input(query, dim), context_keys)
    scores = ops.concatenate([by_row(shared_scores, shared),
                              ops.einsum("bhqd,bhkd->bhqk", query, keys)], axis=-1)
    scores = ops.where(seen, ops.cast(scores, "float32"), float("-inf"))
    probs = ops.cast(ops.softmax(scores, axis=-1), values.dtype)
    shared_output = ops.einsum("bhqk,bhkd->bhqd", by_input(probs[..., :shared], shared),
                               context_values)
    output = by_row(shared_output, dim) + ops.einsum("bhqk,bhkd->bhqd", probs[..., shared:],
                                                     values)
    output = ops.reshape(output, (rows, 1, heads, dim))
    return attention._output_dense(output), keys, values
