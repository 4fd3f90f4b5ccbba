"""VPT: learned prompt tokens in the input space of a ViT (Jia et al., 2022).

The prompts go between the class token and the patch tokens, after the
embeddings (and their dropout): `[CLS, prompts, patches]`.

* shallow: one set of prompts, inserted before the first block, carried
  through every block like the other tokens;
* deep: every block gets its own set; from the second block on, the tokens
  at the prompt positions are replaced by that block's prompts.

The classifier pools the class token (keras-hub's `pooling="token"`), so the
prompts never enter the pooled feature. They start as VPT's uniform Xavier
draw, `U(-a, a)` with `a = sqrt(6 / (3 * patch_area + hidden_dim))`.

The ViT encoder's `call` (dropout, the blocks in turn, the final LayerNorm) is
overridden in place to put the prompts in; `uninstall` restores it.

Example:

>>> import numpy as np
>>> from kprefix.backbones import build_backbone
>>> backbone = build_backbone("vit_tiny")
>>> prompts = VisualPrompts(backbone, length=3, deep=True)
>>> tuple(prompts.prompts.shape)
(4, 3, 64)
>>> tuple(backbone(np.zeros((1, 16, 16, 3), "float32")).shape)  # 1 + 3 + 16 tokens
(1, 20, 64)
"""

import math

import keras
from keras import ops

from kprefix.backbones.layer_classes import mix_into, unmix


class _PromptedEncoder:
    """Mixed into keras-hub's `ViTEncoder`: its `call` with the prompts put in."""

    def call(self, inputs):
        prompts = self._kprefix_prompts
        x = self.dropout(inputs)
        for i, block in enumerate(self.encoder_layers):
            if i == 0:
                x = prompts.insert(x)
            elif prompts.deep:
                x = prompts.replace(x, i)
            x = block(x)
        return self.layer_norm(x)


class VisualPrompts(keras.layers.Layer):
    """VPT prompts for `backbone` (a built keras-hub `ViTBackbone`), installed.

    Args:
        backbone: the ViT; must have a class token (pooled instead of the prompts).
        length: prompt tokens per block.
        deep: prompts at every block (VPT-deep) instead of the first only.
        seed: seed of the initializer.
    """

    def __init__(self, backbone, length, deep=False, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if length < 1:
            raise ValueError(f"VPT prompt length {length}: use at least 1.")
        encoder = backbone.get_layer("vit_encoder")
        object.__setattr__(self, "_encoder", encoder)  # untracked: the backbone owns it
        if not backbone.use_class_token:
            raise ValueError("VPT needs a ViT with a class token: the classifier pools it "
                             "and leaves the prompts out.")
        self.length = int(length)
        self.deep = bool(deep)
        hidden_dim = int(backbone.hidden_dim)
        patch_area = math.prod(int(n) for n in _pair(backbone.patch_size))
        limit = math.sqrt(6.0 / (3 * patch_area + hidden_dim))
        self.prompts = self.add_weight(
            shape=(encoder.num_layers if self.deep else 1, self.length, hidden_dim),
            initializer=keras.initializers.RandomUniform(-limit, limit, seed=seed),
            name="prompts")
        self.built = True
        mix_into(encoder, _PromptedEncoder, _kprefix_prompts=self)

    def _batch_of(self, block, like):
        prompts = ops.cast(self.prompts[block], like.dtype)
        return ops.broadcast_to(prompts[None], (ops.shape(like)[0],) + tuple(prompts.shape))

    def insert(self, tokens):
        """`[CLS, patches] -> [CLS, prompts of block 0, patches]`."""
        return ops.concatenate([tokens[:, :1], self._batch_of(0, tokens), tokens[:, 1:]], axis=1)

    def replace(self, tokens, block):
        """The prompt positions of `tokens` replaced by block `block`'s prompts."""
        return ops.concatenate(
            [tokens[:, :1], self._batch_of(block, tokens), tokens[:, 1 + self.length:]], axis=1)

    def uninstall(self):
        """Removes the prompts: the backbone computes exactly as before."""
        unmix(self._encoder, _PromptedEncoder, "_kprefix_prompts")


def _pair(size):
    return tuple(size) if isinstance(size, (tuple, list)) else (size, size)
