"""`PrefixTuning`: the generators of a backbone's prefixes, installed.

The container creates one generator per selected attention site, owns their
variables (so a task model that tracks it trains and checkpoints them,
reparameterization MLP included), and installs each one into its attention
layer. The backbone itself is frozen and unchanged.

Given a keras-hub task (e.g. a stock `keras_hub.models.GPT2CausalLM`), the
container freezes the task's backbone and attaches itself to the task as
`task.prefix`, so `task.fit` trains the prefixes and `task.save_weights`
keeps them. Given a backbone that a model already uses, it refuses: that
model would not track the prefix variables and would train nothing of them.

Example:

>>> from kprefix.backbones import build_backbone
>>> from kprefix.prefix import PrefixConfig, PrefixTuning
>>> backbone = build_backbone("vit_tiny")
>>> tuning = PrefixTuning(backbone, PrefixConfig("deep_share", "shallow", length=3))
>>> tuning.site_names
['encoder_0']
"""

import keras
import keras_hub
import numpy as np

from kprefix.backbones import attention_sites, gpt2
from kprefix.prefix import generators
from kprefix.prefix.attention import install_prefix, uninstall_prefix


class PrefixTuning(keras.layers.Layer):
    """Prefix generators for the sites of `backbone` chosen by `config`.

    Args:
        backbone: a built keras-hub ViT, GPT-2 or BART backbone not yet used
            by a model (the caller tracks this layer, as the `kprefix.tasks`
            models do), or a keras-hub task holding one (see module doc).
        config: a `PrefixConfig`.
        folded: build constant, non-trainable prefixes (what `fold_into`
            fills in) instead of the configured generators.
        seed: seed of the prefix initializers.
    """

    def __init__(self, backbone, config, folded=False, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        task, backbone = _task_and_backbone(backbone)
        self.config = config
        self.folded = folded
        sites = attention_sites(backbone)
        chosen = []
        for kind in dict.fromkeys(site.kind for site in sites):
            of_kind = [site for site in sites if site.kind == kind]
            chosen += [of_kind[i] for i in config.layer_indices(len(of_kind))]
        self.site_names = [site.name for site in chosen]
        own = _word_key_values(backbone, config) if not folded else None
        trunks = {}
        self.generators = []
        for n, site in enumerate(chosen):
            site_seed = None if seed is None else seed + 7919 * n
            # Name scopes give every variable a unique path, e.g.
            # "prefix/encoder_3/output_projection/kernel".
            with keras.name_scope(self.name), keras.name_scope(site.name):
                if folded:
                    generator = _folded_generator(site, config)
                else:
                    initial = None if own is None else own[site.index]
                    generator = _make_generator(site, config, trunks, site_seed, initial)
            self.generators.append(generator)
            install_prefix(site.attention, generator.prefixes)
        object.__setattr__(self, "_sites", chosen)
        object.__setattr__(self, "_backbone", backbone)
        self.position_shift = config.position_shift
        if self.position_shift:
            if not isinstance(backbone, keras_hub.models.GPT2Backbone):
                raise ValueError(
                    "prefix position offset 'P' shifts GPT-2 position ids; "
                    f"{type(backbone).__name__} has none to shift. Use position offset 0.")
            gpt2.install_position_offset(backbone, self.position_shift)
        self.built = True
        if task is not None:
            task.prefix = self

    def prefix_values(self):
        """`{site name: (key, value)}` as NumPy arrays, in inference mode."""
        return {
            name: tuple(np.asarray(keras.ops.convert_to_numpy(t)) for t in gen.prefixes(False))
            for name, gen in zip(self.site_names, self.generators)
        }

    def fold_into(self, folded):
        """Writes this container's current prefixes into `folded`'s constants."""
        if not folded.folded or folded.site_names != self.site_names:
            raise ValueError("fold_into needs a folded container over the same sites.")
        for (key, value), gen in zip(self.prefix_values().values(), folded.generators):
            gen.prefix_key.assign(key)
            gen.prefix_value.assign(value)

    def uninstall(self):
        """Detaches the prefixes: the backbone computes exactly as before."""
        for site in self._sites:
            uninstall_prefix(site.attention)
        if self.position_shift:
            gpt2.install_position_offset(self._backbone, 0)


def _shape_kwargs(site, config):
    attention = site.attention
    return dict(
        length=config.length,
        num_heads=attention.num_heads,
        key_dim=attention.key_dim,
        value_dim=attention.value_dim or attention.key_dim,
        name=f"{site.name}_prefix",
    )


def _folded_generator(site, config):
    return generators.NoSharePrefix(**_shape_kwargs(site, config), initializer="zeros",
                                    trainable=False)


def _word_key_values(backbone, config):
    """Per-layer (key, value) of the init tokens for the 'word' initializer, else None."""
    if config.initializer != "word":
        return None
    if not isinstance(backbone, keras_hub.models.GPT2Backbone):
        raise ValueError("the 'word' prefix initializer reads GPT-2's own keys and values; "
                         f"{type(backbone).__name__} is not supported.")
    return gpt2.own_key_values(backbone, config.init_token_ids)


def _make_generator(site, config, trunks, seed, initial=None):
    kwargs = _shape_kwargs(site, config)
    init = dict(initializer=config.initializer, init_scale=config.init_scale, seed=seed)
    variant = config.variant
    if variant == "no_share":
        initial_key, initial_value = initial if initial is not None else (None, None)
        return generators.NoSharePrefix(**kwargs, **init, dropout=config.dropout,
                                        initial_key=initial_key, initial_value=initial_value)
    if variant == "deep_share":
        embedding_dim = config.embedding_dim or site.hidden_dim
        trunk = None
        if config.share_across_layers:
            if site.kind not in trunks:
                trunks[site.kind] = generators.DeepShareTrunk(
                    config.length, embedding_dim, config.mlp_hidden, config.mlp_activation,
                    mlp_init=config.mlp_init, name=f"{site.kind}_shared_trunk", **init,
                )
            trunk = trunks[site.kind]
        return generators.DeepSharePrefix(
            **kwargs, embedding_dim=embedding_dim, mlp_hidden=config.mlp_hidden,
            mlp_activation=config.mlp_activation, trunk=trunk, dropout=config.dropout,
            mlp_init=config.mlp_init, **init,
        )
    if variant == "simple_share":
        attention = site.attention
        return generators.SimpleSharePrefix(
            **kwargs, key_dense=attention.key_dense, value_dense=attention.value_dense,
            norm=site.norm, hidden_dim=site.hidden_dim, dropout=config.dropout,
            dropout_site=config.dropout_site, **init,
        )
    if variant == "linear_share":
        return generators.LinearSharePrefix(**kwargs, dropout=config.dropout, **init)
    if variant == "one_layer_share":
        return generators.OneLayerSharePrefix(
            **kwargs, embedding_dim=config.embedding_dim or site.hidden_dim,
            key_activation=config.key_activation, value_activation=config.value_activation,
            dropout=config.dropout, **init,
        )
    raise ValueError(f"Unknown prefix variant {variant!r}.")


def _task_and_backbone(target):
    """`(task or None, backbone)` of what `PrefixTuning` was given."""
    import keras_hub

    if isinstance(target, keras_hub.models.Task):
        if isinstance(getattr(target, "prefix", None), PrefixTuning):
            raise ValueError(
                f"{type(target).__name__} already has a prefix; call `task.prefix.uninstall()` "
                "and remove it before adding another."
            )
        target.backbone.trainable = False
        return target, target.backbone
    if getattr(target, "_inbound_nodes", None):
        raise ValueError(
            f"This {type(target).__name__} is already part of a model, which would not "
            "track the prefix variables: training would leave them unchanged. Pass the "
            "keras-hub task itself (`PrefixTuning(task, config)`), or use a kprefix task "
            "(PrefixImageClassifier, PrefixGPT2CausalLM, PrefixBartSeq2SeqLM)."
        )
    return None, target
