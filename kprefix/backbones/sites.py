"""Where methods enter a backbone: `AttentionSite` (an attention layer that
can take a prefix) and `TransformerBlock` (a block, with the output
projections that adapters follow)."""

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


@dataclasses.dataclass(frozen=True)
class TransformerBlock:
    """One transformer block and the layers that end its sub-blocks.

    Attributes:
        kind: `encoder` or `decoder` (BART has both; placement and
            Partial-k count blocks within a kind).
        index: the block's depth within its kind, from 0.
        layer: the block itself.
        attention_outputs: the output projections of its attention sub-blocks
            (self-attention, then cross-attention in a BART decoder).
        mlp_output: the last dense layer of its MLP sub-block.
    """

    kind: str
    index: int
    layer: keras.layers.Layer
    attention_outputs: tuple
    mlp_output: keras.layers.Layer

    @property
    def hidden_dim(self) -> int:
        return int(self.mlp_output.kernel.shape[-1])
