"""Backbones by name, and where prefixes enter each keras-hub family.

A backbone is named by a built-in small config (`vit_tiny`, `gpt2_tiny`,
`bart_tiny`, and the random-weight `vit_b16_random` used by benchmarks), a
keras-hub preset name (e.g. `vit_base_patch16_224_imagenet21k`,
`gpt2_medium_en`, `bart_large_en`), or a local preset directory (what
`keras_hub` saved after one download, for offline runs).

Example:

>>> from kprefix.backbones import build_backbone, attention_sites
>>> backbone = build_backbone("vit_tiny")
>>> len(attention_sites(backbone))
4
"""

import json
import os

import keras_hub

from kprefix.backbones import bart, gpt2, vit

BUILT_IN = {
    "vit_tiny": (
        keras_hub.models.ViTBackbone,
        dict(image_shape=(16, 16, 3), patch_size=4, num_layers=4, num_heads=4,
             hidden_dim=64, mlp_dim=128),
    ),
    "vit_b16_random": (
        keras_hub.models.ViTBackbone,
        dict(image_shape=(224, 224, 3), patch_size=16, num_layers=12, num_heads=12,
             hidden_dim=768, mlp_dim=3072),
    ),
    "gpt2_tiny": (
        keras_hub.models.GPT2Backbone,
        dict(vocabulary_size=272, num_layers=2, num_heads=2, hidden_dim=16,
             intermediate_dim=32, max_sequence_length=128),
    ),
    "gpt2_small_random": (
        keras_hub.models.GPT2Backbone,
        dict(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
             intermediate_dim=3072, max_sequence_length=1024),
    ),
    "bart_tiny": (
        keras_hub.models.BartBackbone,
        dict(vocabulary_size=272, num_layers=2, num_heads=2, hidden_dim=16,
             intermediate_dim=32, max_sequence_length=128),
    ),
}

FAMILIES = {
    keras_hub.models.ViTBackbone: vit,
    keras_hub.models.GPT2Backbone: gpt2,
    keras_hub.models.BartBackbone: bart,
}


# The constructor arguments that set each family's dropout rates.
DROPOUT_ARGUMENTS = {
    keras_hub.models.ViTBackbone: ("dropout_rate", "attention_dropout"),
    keras_hub.models.GPT2Backbone: ("dropout",),
    keras_hub.models.BartBackbone: ("dropout",),
}


def _without_dropout(cls, dropout):
    """Constructor overrides that turn `cls`'s dropout off (none if `dropout`)."""
    return {} if dropout else {argument: 0.0 for argument in DROPOUT_ARGUMENTS[cls]}


def _preset_class(preset_dir):
    with open(os.path.join(preset_dir, "config.json")) as f:
        class_name = json.load(f).get("class_name", "")
    for cls in FAMILIES:
        if cls.__name__ == class_name:
            return cls
    raise ValueError(f"--backbone={preset_dir!r} holds a {class_name or 'unknown'} preset; "
                     f"kprefix knows {', '.join(c.__name__ for c in FAMILIES)}.")


def build_backbone(name, dtype=None, seed=0, dropout=True):
    """Builds (or loads) the backbone called `name`; see the module doc.

    `dropout=False` builds it with every dropout rate at 0, so the frozen
    backbone computes the same in training as in inference (the reference
    runs GPT-2 and ViT in eval mode); prefix dropout is separate.
    """
    if name in BUILT_IN:
        cls, kwargs = BUILT_IN[name]
        import keras

        keras.utils.set_random_seed(seed)
        return cls(**kwargs, **_without_dropout(cls, dropout), dtype=dtype)
    if os.path.isdir(name):
        if not os.path.exists(os.path.join(name, "config.json")):
            raise ValueError(
                f"--backbone={name!r} is a directory but not a keras-hub preset "
                "(no config.json). Save one with `backbone.save_to_preset(dir)`."
            )
        overrides = _without_dropout(_preset_class(name), dropout)
        return keras_hub.models.Backbone.from_preset(name, dtype=dtype, **overrides)
    for cls in FAMILIES:
        if name in cls.presets:
            return keras_hub.models.Backbone.from_preset(name, dtype=dtype,
                                                         **_without_dropout(cls, dropout))
    raise ValueError(
        f"Unknown --backbone={name!r}. Use a built-in config "
        f"({', '.join(BUILT_IN)}), a keras-hub preset of ViT, GPT-2 or BART "
        f"(e.g. vit_base_patch16_224_imagenet21k, gpt2_medium_en, bart_large_en) "
        "or a local preset directory."
    )


def family_of(backbone):
    """The module (`vit`, `gpt2`, `bart`) that knows `backbone`'s layout."""
    for cls, module in FAMILIES.items():
        if isinstance(backbone, cls):
            return module
    raise TypeError(
        f"{type(backbone).__name__} is not supported; kprefix knows "
        f"{', '.join(c.__name__ for c in FAMILIES)}."
    )


def attention_sites(backbone):
    """Every attention layer of `backbone` that can take a prefix, in order."""
    return family_of(backbone).attention_sites(backbone)
