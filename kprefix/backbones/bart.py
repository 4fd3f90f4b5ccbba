"""Attention sites of keras-hub's `BartBackbone`: three prefix sets.

Encoder self-attention (`encoder`), decoder self-attention (`decoder`) and
decoder cross-attention (`cross`) each get their own prefixes, as in Li &
Liang. BART blocks are post-LN: the attention input is already normalized, so
Simple-share prompts go straight into the key/value projections.

Example:

>>> import keras_hub
>>> from kprefix.backbones.bart import attention_sites
>>> bart = keras_hub.models.BartBackbone(vocabulary_size=32, num_layers=1,
...     num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16)
>>> [site.name for site in attention_sites(bart)]
['encoder_0', 'decoder_0', 'cross_0']
"""

from kprefix.backbones.sites import AttentionSite, TransformerBlock


def attention_sites(backbone):
    encoder = [
        AttentionSite("encoder", i, layer._self_attention_layer)
        for i, layer in enumerate(backbone.encoder_transformer_layers)
    ]
    decoder = [
        AttentionSite("decoder", i, layer._self_attention_layer)
        for i, layer in enumerate(backbone.decoder_transformer_layers)
    ]
    cross = [
        AttentionSite("cross", i, layer._cross_attention_layer)
        for i, layer in enumerate(backbone.decoder_transformer_layers)
    ]
    return encoder + decoder + cross


def blocks(backbone):
    encoder = [
        TransformerBlock("encoder", i, layer, (layer._self_attention_layer._output_dense,),
                         layer._feedforward_output_dense)
        for i, layer in enumerate(backbone.encoder_transformer_layers)
    ]
    decoder = [
        TransformerBlock("decoder", i, layer, (layer._self_attention_layer._output_dense,
                                               layer._cross_attention_layer._output_dense),
                         layer._feedforward_output_dense)
        for i, layer in enumerate(backbone.decoder_transformer_layers)
    ]
    return encoder + decoder


def final_norms(backbone):
    return []  # post-LN blocks: each block ends in its own LayerNorm
