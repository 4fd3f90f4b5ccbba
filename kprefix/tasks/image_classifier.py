"""`PrefixImageClassifier`: frozen ViT + prefixes + a linear head on [CLS].

Example:

>>> import numpy as np
>>> from kprefix.backbones import build_backbone
>>> from kprefix.prefix import PrefixConfig
>>> from kprefix.tasks import PrefixImageClassifier
>>> model = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=10,
...                               prefix_config=PrefixConfig("deep_share"))
>>> tuple(model(np.zeros((2, 16, 16, 3), "float32")).shape)
(2, 10)
"""

import math

import keras

from kprefix.tasks.prefixed import PrefixedTaskMixin, deserialize_backbone, make_prefix


HEAD_INITIALIZERS = ("glorot", "kaiming_normal_fan_out")
# The reference head's bias: the logit of a 1% prior, as in focal-loss heads.
REFERENCE_HEAD_BIAS = -math.log((1 - 0.01) / 0.01)


def head_initializers(name, seed=None):
    """`(kernel, bias)` initializers of the linear head.

    `glorot`: Glorot-uniform kernel, zero bias. `kaiming_normal_fan_out`:
    the reference head, `nn.init.kaiming_normal_(w, a=0, mode="fan_out")`
    (normal, std sqrt(2 / num_classes)) and a constant bias of -log(99);
    a bias equal for every class leaves the softmax and its gradients as
    they are, so only the kernel matters for training.
    """
    if name == "glorot":
        return keras.initializers.GlorotUniform(seed=seed), keras.initializers.Zeros()
    if name == "kaiming_normal_fan_out":
        kernel = keras.initializers.VarianceScaling(
            scale=2.0, mode="fan_out", distribution="untruncated_normal", seed=seed)
        return kernel, keras.initializers.Constant(REFERENCE_HEAD_BIAS)
    raise ValueError(f"Unknown --head_init={name!r}; choose one of {', '.join(HEAD_INITIALIZERS)}.")


@keras.saving.register_keras_serializable(package="kprefix")
class PrefixImageClassifier(PrefixedTaskMixin, keras.Model):
    """Image classifier with a frozen backbone; only prefixes and head train.

    Args:
        backbone: a keras-hub `ViTBackbone` (built, weights loaded).
        num_classes: number of output classes; outputs are float32 logits.
        prefix_config: a `PrefixConfig` (or its dict); `None` trains the head
            alone (linear probing).
        folded: build constant prefixes instead of generators (see `fold`).
        seed: seed of the prefix and head initializers.
        head_init: `glorot` or `kaiming_normal_fan_out` (see `head_initializers`).
    """

    def __init__(self, backbone, num_classes, prefix_config=None, folded=False, seed=None,
                 head_init="glorot", **kwargs):
        super().__init__(**kwargs)
        backbone = deserialize_backbone(backbone)
        self.backbone = backbone
        prefix_config, prefix = make_prefix(backbone, prefix_config, folded, seed)
        self._keep_prefix(prefix, prefix_config, folded, seed)
        self.num_classes = int(num_classes)
        self.head_init = head_init
        kernel_init, bias_init = head_initializers(head_init, seed)
        self.head = keras.layers.Dense(
            self.num_classes, dtype="float32", name="head",
            kernel_initializer=kernel_init, bias_initializer=bias_init,
        )
        self.head.build((None, backbone.hidden_dim))
        self.built = True

    def call(self, images, training=None):
        features = self.backbone(images, training=training)
        return self.head(features[:, 0])

    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "head_init": self.head_init,
            **self._prefix_config_entries(),
        }
