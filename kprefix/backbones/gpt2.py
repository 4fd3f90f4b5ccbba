"""Attention sites of keras-hub's `GPT2Backbone`: each decoder self-attention.

GPT-2 blocks are pre-LN, so Simple-share prompts pass through the block's
`_self_attention_layer_norm`. Position ids are left as keras-hub computes them
(starting at 0): prefixes enter as keys and values after the projections and
take no position, so the full context length stays available. (Li & Liang's
code shifts positions by P; that only matters for weights trained that way.)

Example:

>>> import keras_hub
>>> from kprefix.backbones.gpt2 import attention_sites
>>> gpt2 = keras_hub.models.GPT2Backbone(vocabulary_size=32, num_layers=2,
...     num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16)
>>> [site.name for site in attention_sites(gpt2)]
['decoder_0', 'decoder_1']
"""

from kprefix.backbones.sites import AttentionSite


def attention_sites(backbone):
    return [
        AttentionSite("decoder", i, layer._self_attention_layer, layer._self_attention_layer_norm)
        for i, layer in enumerate(backbone.transformer_layers)
    ]
