"""`PrefixImageClassifier`: keras-hub's `ViTImageClassifier` with prefixes.

The backbone is frozen with prefixes in its attention layers; a linear head on
the class token ([CLS], keras-hub's `pooling="token"`) gives float32 logits.
Being keras-hub's own task, it has `from_preset`, `save_to_preset`, a
preprocessor, and saves to `.keras` files.

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
import keras_hub

from kprefix.backbones.vit_class_token import keep_class_token_only
from kprefix.runs.config import HEAD_INITIALIZERS
from kprefix.tasks.image_preprocessors import image_preprocessor
from kprefix.tasks.prefixed import PrefixedKerasHubTask


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
class PrefixImageClassifier(PrefixedKerasHubTask, keras_hub.models.ViTImageClassifier):
    """Image classifier with a frozen backbone; only prefixes and head train.

    Args:
        backbone: a keras-hub `ViTBackbone` (built, weights loaded).
        num_classes: number of output classes; outputs are float32 logits.
        prefix_config: a `PrefixConfig` (or its dict); `None` trains the head
            alone (linear probing).
        folded: build constant prefixes instead of generators (see `fold`).
        seed: seed of the prefix and head initializers.
        head_init: `glorot` or `kaiming_normal_fan_out` (see `head_initializers`).
        class_token_only: with `pooling="token"` (the default), the last block
            computes the class token's row only, the one row the head reads
            (`kprefix.backbones.vit_class_token`); the logits are the same,
            and `model.backbone` then returns `(B, 1, hidden)`. `False`
            keeps keras-hub's full last block.
        preprocessor: `None` (inputs are images already normalized, as the
            training pipelines make them) or a keras-hub
            `ViTImageClassifierPreprocessor` (see
            `kprefix.tasks.image_preprocessors`), applied by `fit`,
            `predict` and `evaluate` to raw images.
        **kwargs: further `ViTImageClassifier` arguments (`pooling`,
            `dropout`, `name`, ...).
    """

    def __init__(self, backbone, num_classes, prefix_config=None, folded=False, seed=None,
                 preprocessor=None, head_init="glorot", class_token_only=True, **kwargs):
        kwargs.setdefault("activation", None)
        self.class_token_only = bool(class_token_only
                                     and kwargs.get("pooling", "token") == "token")
        if self.class_token_only:
            keep_class_token_only(backbone)
        kwargs.setdefault("head_dtype", "float32")
        super().__init__(backbone=backbone, num_classes=int(num_classes),
                         preprocessor=preprocessor, prefix_config=prefix_config, folded=folded,
                         seed=seed, **kwargs)
        self.head_init = head_init
        kernel_init, bias_init = head_initializers(head_init, seed)
        for variable, initializer in ((self.output_dense.kernel, kernel_init),
                                      (self.output_dense.bias, bias_init)):
            variable.assign(initializer(variable.shape, variable.dtype))

    @property
    def head(self):
        """The linear classification layer."""
        return self.output_dense

    def get_config(self):
        return {**super().get_config(), "head_init": self.head_init,
                "class_token_only": self.class_token_only}

    @classmethod
    def from_preset(cls, preset, num_classes=None, prefix_config=None,
                    image_normalization="imagenet", dtype=None, seed=None, **kwargs):
        """A classifier on the ViT that `preset` names, or a saved classifier.

        Args:
            preset: anything `kprefix.backbones.build_backbone` takes (a
                keras-hub preset, `hf://...`, `kaggle://...`, a local keras-hub
                preset or Hugging Face checkpoint folder, a built-in name), or
                a folder where `save_to_preset` wrote a `PrefixImageClassifier`
                (then it comes back whole: prefixes, head and preprocessor).
            num_classes: classes of the new head; leave out to restore a saved
                classifier.
            prefix_config: a `PrefixConfig`, or `None` for linear probing.
            image_normalization: `imagenet` (the VPT protocol) or `preset`
                (the preset's own image converter).
            dtype: dtype policy of the backbone.
            seed: seed of the prefix and head initializers.

        Example:

        >>> import tempfile
        >>> from kprefix.prefix import PrefixConfig
        >>> model = PrefixImageClassifier.from_preset(
        ...     "vit_tiny", num_classes=3, prefix_config=PrefixConfig(length=2))
        >>> folder = tempfile.mkdtemp()
        >>> model.save_to_preset(folder)
        >>> PrefixImageClassifier.from_preset(folder).prefix_config.length
        2
        """
        if num_classes is None:
            if not _is_saved_classifier(preset, cls):
                raise ValueError(
                    f"{preset!r} holds no saved {cls.__name__}: pass num_classes to put a "
                    "new head on its backbone."
                )
            return super().from_preset(preset, dtype=dtype, **kwargs)
        from kprefix.backbones import build_backbone

        backbone = build_backbone(preset, dtype=dtype, seed=0 if seed is None else seed)
        preprocessor = image_preprocessor(preset, image_normalization, backbone.image_shape[0])
        return cls(backbone, num_classes, prefix_config, seed=seed, preprocessor=preprocessor,
                   **kwargs)


def _is_saved_classifier(preset, cls):
    from keras_hub.src.utils import preset_utils

    try:
        if not preset_utils.check_file_exists(preset, preset_utils.TASK_CONFIG_FILE):
            return False
    except ValueError:  # Not a preset at all, e.g. a built-in config name.
        return False
    config = preset_utils.load_json(preset, preset_utils.TASK_CONFIG_FILE)
    return issubclass(preset_utils.check_config_class(config), cls)
