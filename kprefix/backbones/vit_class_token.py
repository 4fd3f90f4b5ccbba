"""A ViT whose last block computes the class token only, for heads that read nothing else.

A classifier that pools the class token (`pooling="token"`, as the reference
and VPT do) reads one row of the last block's output. In that block the other
rows' queries, attention outputs, output projection and MLP are computed and
then dropped: about a twelfth of a ViT-B/16 forward pass, and their share of
the backward pass. Their keys and values are still needed, because the class
token attends to them (and, through them, the earlier blocks' prefixes get
their gradients).

`keep_class_token_only(backbone)` swaps the class of the last encoder block
for one whose `call` is keras-hub's with the query cut to the class token:
`x + MLP(LN(x))` with `x = inputs[:, :1] + MHA(LN(inputs)[:, :1], LN(inputs))`.
The block's variables, names and checkpoint paths stay as they were; the
backbone then returns `(B, 1, hidden)`, the class token's final features.
`keep_all_tokens` undoes it.

Example:

>>> import numpy as np, keras_hub
>>> from kprefix.backbones.vit_class_token import keep_class_token_only
>>> vit = keras_hub.models.ViTBackbone(image_shape=(16, 16, 3), patch_size=8,
...     num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=16)
>>> full = vit(np.ones((1, 16, 16, 3), "float32"))
>>> keep_class_token_only(vit)
>>> cls = vit(np.ones((1, 16, 16, 3), "float32"))
>>> tuple(cls.shape), bool(np.allclose(cls[:, 0], full[:, 0], atol=1e-5))
((1, 1, 8), True)
"""

from kprefix.backbones.layer_classes import mix_into, unmix


class _ClassTokenOnlyBlock:
    """Mixed into keras-hub's `ViTEncoderBlock`: its `call`, for the class token's row."""

    def call(self, inputs):
        normed = self.layer_norm_1(inputs)
        x = self.mha(normed[:, :1], normed)  # query: [CLS]; keys and values: every token
        x = self.dropout(x) + inputs[:, :1]
        return x + self.mlp(self.layer_norm_2(x))


def last_block(backbone):
    """The last `ViTEncoderBlock` of a keras-hub `ViTBackbone`."""
    return backbone.get_layer("vit_encoder").encoder_layers[-1]


def keep_class_token_only(backbone):
    """Makes `backbone`'s last block compute the class token's row only."""
    # The block keeps its class name: Keras saves the layers of a list (the
    # encoder's blocks) under their class names, so checkpoint paths stay.
    mix_into(last_block(backbone), _ClassTokenOnlyBlock)


def keep_all_tokens(backbone):
    """Undoes `keep_class_token_only`: the backbone computes as keras-hub's."""
    unmix(last_block(backbone), _ClassTokenOnlyBlock)


def keeps_class_token_only(backbone):
    """Whether `backbone`'s last block computes the class token only."""
    return isinstance(last_block(backbone), _ClassTokenOnlyBlock)
