"""Attention sites of keras-hub's `GPT2Backbone`: each decoder self-attention.

GPT-2 blocks are pre-LN, so Simple-share prompts pass through the block's
`_self_attention_layer_norm`. Prefixes enter as keys and values after the
projections and take no position. Real tokens start at position 0 unless a
position offset is installed (`install_position_offset`): Li & Liang's code,
and Hugging Face GPT-2 given the prefix as past keys and values, start them at
position P. `own_key_values` gives the backbone's own per-layer keys and values
for a few tokens, what Li & Liang's `init_shallow` starts a No-share prefix from.

Example:

>>> import keras_hub
>>> from kprefix.backbones.gpt2 import attention_sites
>>> gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=32, num_layers=2,
...     num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16)
>>> [site.name for site in attention_sites(gpt2)]
['decoder_0', 'decoder_1']
"""

from kprefix.backbones.layer_classes import mix_into, unmix
from kprefix.backbones.sites import AttentionSite, TransformerBlock


def attention_sites(backbone):
    return [
        AttentionSite("decoder", i, layer._self_attention_layer, layer._self_attention_layer_norm)
        for i, layer in enumerate(backbone.transformer_layers)
    ]


def blocks(backbone):
    return [
        TransformerBlock("decoder", i, layer, (layer._self_attention_layer._output_dense,),
                         layer._feedforward_output_dense)
        for i, layer in enumerate(backbone.transformer_layers)
    ]


def final_norms(backbone):
    return [backbone.get_layer("layer_norm")]


class _OffsetPositionEmbedding:
    """Mixed into keras-hub's `PositionEmbedding`: every call starts `_offset` later."""

    def call(self, inputs, start_index=0, positions=None):
        if positions is not None:
            positions = positions + self._offset
        return super().call(inputs, start_index=start_index + self._offset, positions=positions)


def install_position_offset(backbone, offset):
    """Shifts the position ids of all real tokens by `offset` (training, cache, export alike).

    The backbone's `position_embedding` layer changes class in place (its
    weights and checkpoint path stay), so the functional forward pass,
    `call_with_cache` and keras-hub's `generate` all use rows
    `offset, offset + 1, ...` of the position table. `offset=0` removes it.
    """
    layer = backbone.position_embedding
    if offset == 0:
        unmix(layer, _OffsetPositionEmbedding, "_offset")
        return
    limit = backbone.max_sequence_length
    if not 0 < offset < limit:
        raise ValueError(f"position offset {offset} leaves no positions of the backbone's "
                         f"{limit}; use a shorter prefix or --prefix_position_offset=0.")
    mix_into(layer, _OffsetPositionEmbedding, "Offset{}", _offset=int(offset))


def position_offset(backbone):
    """The installed position offset (0 without one)."""
    return int(getattr(backbone.position_embedding, "_offset", 0))


def own_key_values(backbone, token_ids):
    """The frozen backbone's per-layer keys and values for `token_ids` at positions 0, 1, ...

    Returns a list with one `(key, value)` pair per transformer layer, each a
    NumPy array `(len(token_ids), heads, head_dim)`: the attention layer's
    projected keys and values, as Hugging Face's `past_key_values` for the same
    tokens. Run in inference mode, with whatever prefixes are installed.
    """
    import numpy as np
    from keras import ops

    ids = ops.convert_to_tensor(np.asarray([list(token_ids)], "int32"))
    length = ids.shape[1]
    heads = backbone.num_heads
    cache = ops.zeros((1, 2, length, heads, backbone.hidden_dim // heads),
                      dtype=backbone.compute_dtype)
    tokens = backbone.token_embedding(ids)
    x = backbone.embeddings_add((tokens, backbone.position_embedding(tokens, start_index=0)))
    pairs = []
    for layer in backbone.transformer_layers:
        x, layer_cache = layer(x, self_attention_cache=cache, self_attention_cache_update_index=0)
        layer_cache = np.asarray(ops.convert_to_numpy(ops.cast(layer_cache, "float32")))
        pairs.append((layer_cache[0, 0], layer_cache[0, 1]))
    return pairs
