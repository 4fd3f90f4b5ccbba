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

import keras

from kprefix.tasks.prefixed import PrefixedTaskMixin, deserialize_backbone, make_prefix


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
    """

    def __init__(self, backbone, num_classes, prefix_config=None, folded=False, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        backbone = deserialize_backbone(backbone)
        self.backbone = backbone
        prefix_config, prefix = make_prefix(backbone, prefix_config, folded, seed)
        self._keep_prefix(prefix, prefix_config, folded, seed)
        self.num_classes = int(num_classes)
        self.head = keras.layers.Dense(
            self.num_classes, dtype="float32", name="head",
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
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
            **self._prefix_config_entries(),
        }
