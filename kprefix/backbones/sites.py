"""`AttentionSite`: one attention layer of a backbone that can take a prefix."""

import dataclasses
from typing import Optional

import keras


@dataclasses.dataclass(frozen=True)
class AttentionSite:
    """An attention layer and what Simple-share needs to reach its input.

    Attributes:
        kind: which attention family the layer belongs to (`encoder`,
            `decoder`, `cross`); placement counts layers within a kind, so
            SHALLOW means "the first layer of each kind".
        index: the layer's depth within its kind, from 0.
        attention: the built `keras.layers.MultiHeadAttention`.
        norm: the LayerNorm applied right before the attention in pre-LN
            blocks (ViT, GPT-2), or `None` in post-LN blocks (BART).
    """

    kind: str
    index: int
    attention: keras.layers.MultiHeadAttention
    norm: Optional[keras.layers.Layer] = None

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.index}"

    @property
    def hidden_dim(self) -> int:
        return int(self.attention.key_dense.kernel.shape[0])
