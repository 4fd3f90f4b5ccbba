"""What every prefix-tuned task model shares: a frozen backbone, a prefix
container, a config that round-trips, and folding.

Example:

>>> from kprefix.backbones import build_backbone
>>> from kprefix.prefix import PrefixConfig
>>> from kprefix.tasks import PrefixImageClassifier
>>> model = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=3,
...                               prefix_config=PrefixConfig(length=2))
>>> folded = model.fold()
>>> folded.prefix.folded, len(folded.trainable_weights)
(True, 2)
"""


import keras
import tensorflow as tf

from kprefix.backbones import attention_sites
from kprefix.backbones.exact_gelu import use_exact_gelu
from kprefix.backbones.layer_classes import mix_into
from kprefix.backbones.matmul_projections import use_matmul_projections
from kprefix.prefix import PrefixConfig, PrefixTuning


class PrefixedTaskMixin:
    """Mixed into a `keras.Model` whose `backbone` takes prefixes.

    Subclasses build their prefix with `make_prefix`, store it with
    `_keep_prefix` once the model is initialised, and list their own
    constructor arguments in `get_config`.
    """

    def _keep_prefix(self, prefix, prefix_config, folded, seed):
        self.prefix = prefix
        self.prefix_config = prefix_config
        self.folded = folded
        self.seed = seed

    def _prefix_config_entries(self):
        return {
            "prefix_config": None if self.prefix_config is None else self.prefix_config.to_dict(),
            "folded": self.folded,
            "seed": self.seed,
        }

    def fold(self):
        """A new model whose prefixes are the constants this model produces.

        The folded model computes the same outputs and holds no
        reparameterization weights. It reads this model's frozen weights (the
        backbone) rather than copying them, so folding GPT-2 or ViT costs no
        second backbone in memory; its trainable weights (a classifier's head)
        are copies. Unfreezing and training this model's backbone afterwards
        would change the folded model too: fold again after such training.
        """
        if self.prefix is None:
            raise ValueError("This model has no prefix to fold.")
        config = self.get_config()
        config["folded"] = True
        # The backbone is built without initializing its variables: each takes
        # the source's storage below, so no random backbone is ever allocated.
        config["backbone"], pending = _deserialize_uninitialized(config["backbone"])
        folded = type(self).from_config(config)
        own = [w for w in self.weights if not _is_prefix_weight(self, w)]
        new = [w for w in folded.weights if not _is_prefix_weight(folded, w)]
        if len(own) != len(new):
            raise RuntimeError("Folded model does not mirror the original's weights.")
        for target, source in zip(new, own):
            if tuple(target.shape) != tuple(source.shape):
                raise RuntimeError(f"Weight {source.path} does not match {target.path}.")
            if target._value is not None:
                target.assign(source)
            elif source.trainable:
                # `value` is the variable itself here; a tensor makes a new variable.
                target._initialize(tf.identity(source.value))
            else:
                target._initialize(source._value)
        for variable in pending:  # what is not a weight, such as dropout's seeds
            if variable._value is None:
                variable._deferred_initialize()
        self.prefix.fold_into(folded.prefix)
        return folded


class PrefixedKerasHubTask(PrefixedTaskMixin):
    """A keras-hub task whose backbone takes prefixes before the task is built.

    Mixed in front of a keras-hub task class (`GPT2CausalLM`,
    `BartSeq2SeqLM`, `ViTImageClassifier`): the prefixes are installed into
    the backbone's attention layers, then the task wires the backbone as
    keras-hub does, so `fit`, `generate`, `predict`, presets and `.keras`
    saving are keras-hub's own. The attention projections compute as one 2-D
    product each (`kprefix.backbones.matmul_projections`): the same function,
    faster.
    """

    def __init__(self, backbone, preprocessor=None, prefix_config=None, folded=False,
                 seed=None, **kwargs):
        prefix_config, prefix = make_prefix(backbone, prefix_config, folded, seed)
        fast_tied_logits(backbone)
        use_exact_gelu(backbone)
        for site in attention_sites(backbone):
            use_matmul_projections(site.attention)
        super().__init__(backbone=backbone, preprocessor=preprocessor, **kwargs)
        self._keep_prefix(prefix, prefix_config, folded, seed)

    def get_config(self):
        return {**super().get_config(), **self._prefix_config_entries()}

    @classmethod
    def from_config(cls, config):
        if isinstance(config.get("backbone"), dict):
            config = dict(config, backbone=_without_trainable(config["backbone"]))
        return super().from_config(config)


def make_prefix(backbone, prefix_config, folded=False, seed=None):
    """Freezes `backbone` and installs its prefixes.

    Returns `(config, container)`: the `PrefixConfig` (parsed from a dict if
    needed) and the `PrefixTuning`, both `None` without a prefix config.
    """
    if isinstance(prefix_config, dict):
        prefix_config = PrefixConfig.from_dict(prefix_config)
    backbone.trainable = False
    if prefix_config is None:
        return None, None
    return prefix_config, PrefixTuning(
        backbone, prefix_config, folded=folded, seed=seed, name="prefix"
    )


def fast_tied_logits(backbone):
    """Makes the backbone's tied output layer cheaper; its logits stay the same.

    keras-hub's language models compute their logits with the token
    embedding reversed, `inputs @ transpose(embeddings)`. That transpose is a
    copy of the whole embedding table (154 MB for GPT-2 small) on every
    training step and every decoded token. The swapped-in class multiplies
    by the table with `transpose_b` instead, which oneDNN reads in place.

    Under a mixed precision policy the product is also made a compute-dtype
    one: an embedding layer does not autocast its variables, so under
    `mixed_bfloat16` the largest product of GPT-2 small (hidden x vocabulary)
    would stay float32 and keep most of the bf16 speed-up away. The loss and
    the decoders cast the logits to float32 before their softmax.
    """
    embedding = getattr(backbone, "token_embedding", None)
    if not isinstance(embedding, keras.layers.ReversibleEmbedding):
        return
    policy = backbone.dtype_policy
    if embedding.reverse_dtype is None and policy.compute_dtype != policy.variable_dtype:
        embedding.reverse_dtype = policy.compute_dtype
    mix_into(embedding, TiedLogitsMixin)


class TiedLogitsMixin:
    """`call(inputs, reverse=True)` of a tied `ReversibleEmbedding` without the transposed copy."""

    def call(self, inputs, reverse=False):
        if not (reverse and self.tie_weights and self.logit_soft_cap is None):
            return super().call(inputs, reverse=reverse)
        kernel = self.embeddings
        if self.reverse_dtype is not None:
            inputs = keras.ops.cast(inputs, self.reverse_dtype)
            kernel = keras.ops.cast(kernel, self.reverse_dtype)
        shape = keras.ops.shape(inputs)  # static sizes where known, so Keras keeps them
        logits = tf.linalg.matmul(tf.reshape(inputs, [-1, shape[-1]]), kernel, transpose_b=True)
        return tf.reshape(logits, [*shape[:-1], self.input_dim])


def _deserialize_uninitialized(backbone_config):
    """`(backbone, variables)`: the backbone built from its config with none of
    its variables initialized, and those variables, for the caller to give values."""
    from keras.src.backend.common import global_state

    with keras.StatelessScope(initialize_variables=False):
        backbone = keras.layers.deserialize(_without_trainable(backbone_config))
    # Keras lists the variables a stateless scope leaves uninitialized, for a
    # later scope to initialize; the caller initializes these itself.
    pending = global_state.get_global_attribute("uninitialized_variables", [])
    own = {id(v) for v in backbone.variables}
    global_state.set_global_attribute(
        "uninitialized_variables", [v for v in pending if id(v) not in own])
    return backbone, [v for v in pending if id(v) in own]


def _is_prefix_weight(model, weight):
    return model.prefix is not None and any(weight is w for w in model.prefix.weights)


def _without_trainable(backbone_config):
    # A saved `trainable: False` would be applied before the backbone's
    # sublayers exist and not reach them (ViT's then stay trainable);
    # `make_prefix` freezes the rebuilt backbone instead.
    inner = {k: v for k, v in backbone_config["config"].items() if k != "trainable"}
    return dict(backbone_config, config=inner)
