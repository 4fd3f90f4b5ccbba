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


def build_backbone(name, dtype=None, seed=0):
    """Builds (or loads) the backbone called `name`; see the module doc."""
    if name in BUILT_IN:
        cls, kwargs = BUILT_IN[name]
        import keras

        keras.utils.set_random_seed(seed)
        return cls(**kwargs, dtype=dtype)
    if os.path.isdir(name):
        if not os.path.exists(os.path.join(name, "config.json")):
            raise ValueError(
                f"--backbone={name!r} is a directory but not a keras-hub preset "
                "(no config.json). Save one with `backbone.save_to_preset(dir)`."
            )
        return keras_hub.models.Backbone.from_preset(name, dtype=dtype)
    known = {p for cls in FAMILIES for p in cls.presets}
    if name in known:
        return keras_hub.models.Backbone.from_preset(name, dtype=dtype)
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
