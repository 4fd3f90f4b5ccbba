"""Bottleneck adapters after a backbone's sub-blocks (Houlsby or Pfeiffer).

An adapter maps `h -> h + W_up act(W_down h)` on the output of a sub-block,
before the block's residual sum. `W_up` starts at zero, so at initialisation
the adapted backbone computes exactly what the frozen one does.

* `houlsby` (Houlsby et al., 2019): after every attention sub-block (self-
  and, in a BART decoder, cross-attention) and after the MLP.
* `pfeiffer` (Pfeiffer et al., 2021; VPT's Adapter baseline): after the MLP
  only.

Each adapter follows the sub-block's output projection, hooked in place
(`kprefix.backbones.layer_classes`); the adapters' variables belong to the
`Adapters` container, which a task model tracks.

Example:

>>> from kprefix.backbones import build_backbone
>>> backbone = build_backbone("vit_tiny")
>>> adapters = Adapters(backbone, bottleneck_dim=4, style="pfeiffer")
>>> len(adapters.adapters), adapters.count_params()
(4, 2320)
"""

import keras

from kprefix.backbones import transformer_blocks
from kprefix.methods.adapter_styles import ADAPTER_STYLES
from kprefix.backbones.layer_classes import mix_into, unmix


class BottleneckAdapter(keras.layers.Layer):
    """`h + up(relu(down(h)))`; `up` starts at zero (an identity at first)."""

    def __init__(self, hidden_dim, bottleneck_dim, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.down = keras.layers.Dense(
            bottleneck_dim, activation="relu", dtype=self.dtype_policy, name="down",
            kernel_initializer=keras.initializers.HeUniform(seed=seed))
        self.up = keras.layers.Dense(hidden_dim, kernel_initializer="zeros",
                                     dtype=self.dtype_policy, name="up")
        with keras.name_scope(self.name):  # paths like ".../mlp_adapter/down/kernel"
            self.down.build((None, hidden_dim))
            self.up.build((None, bottleneck_dim))
        self.built = True

    def call(self, inputs):
        return inputs + self.up(self.down(inputs))


class _AdaptedOutput:
    """Mixed into a projection layer: its output passes through the adapter."""

    def call(self, *args, **kwargs):
        return self._kprefix_adapter(super().call(*args, **kwargs))


class Adapters(keras.layers.Layer):
    """One `BottleneckAdapter` per adapted sub-block of `backbone`, installed.

    Args:
        backbone: a built keras-hub ViT, GPT-2 or BART backbone.
        bottleneck_dim: the adapters' inner width.
        style: `pfeiffer` (after the MLP) or `houlsby` (after attention and MLP).
        seed: seed of the down-projection initializer.
    """

    def __init__(self, backbone, bottleneck_dim, style="pfeiffer", seed=None, **kwargs):
        if style not in ADAPTER_STYLES:
            raise ValueError(f"Unknown adapter style {style!r}; choose one of "
                             f"{', '.join(ADAPTER_STYLES)}.")
        if bottleneck_dim < 1:
            raise ValueError(f"adapter dimension {bottleneck_dim}: use at least 1.")
        kwargs.setdefault("dtype", backbone.dtype_policy)
        super().__init__(**kwargs)
        self.style = style
        self.adapters = []
        hooked = []
        object.__setattr__(self, "_hooked", hooked)  # untracked: the backbone owns them
        for block in transformer_blocks(backbone):
            outputs = [("mlp", block.mlp_output)]
            if style == "houlsby":
                names = ("attention", "cross_attention")[:len(block.attention_outputs)]
                outputs = list(zip(names, block.attention_outputs)) + outputs
            for site, layer in outputs:
                seed_n = None if seed is None else seed + 7919 * len(self.adapters)
                with keras.name_scope(self.name):
                    adapter = BottleneckAdapter(
                        block.hidden_dim, bottleneck_dim, seed=seed_n, dtype=self.dtype_policy,
                        name=f"{block.kind}_{block.index}_{site}_adapter")
                mix_into(layer, _AdaptedOutput, _kprefix_adapter=adapter)
                self.adapters.append(adapter)
                hooked.append(layer)
        self.built = True

    def uninstall(self):
        """Removes the adapters: the backbone computes exactly as before."""
        for layer in self._hooked:
            unmix(layer, _AdaptedOutput, "_kprefix_adapter")
