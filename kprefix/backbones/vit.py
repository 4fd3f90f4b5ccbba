"""Attention sites of keras-hub's `ViTBackbone`: each encoder block's MHA.

Example:

>>> import keras_hub
>>> from kprefix.backbones.vit import attention_sites
>>> vit = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8,
...     num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16)
>>> [site.name for site in attention_sites(vit)]
['encoder_0', 'encoder_1']
"""

from kprefix.backbones.sites import AttentionSite, TransformerBlock


def attention_sites(backbone):
    encoder = backbone.get_layer("vit_encoder")
    return [
        AttentionSite("encoder", i, block.mha, block.layer_norm_1)
        for i, block in enumerate(encoder.encoder_layers)
    ]


def blocks(backbone):
    encoder = backbone.get_layer("vit_encoder")
    return [
        TransformerBlock("encoder", i, block, (block.mha._output_dense,), block.mlp.dense_2)
        for i, block in enumerate(encoder.encoder_layers)
    ]


def final_norms(backbone):
    return [backbone.get_layer("vit_encoder").layer_norm]
