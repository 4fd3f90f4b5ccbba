"""Backbones by name, and where prefixes enter each keras-hub family.

A backbone is named by a built-in small config (`vit_tiny`, `gpt2_tiny`,
`bart_tiny`, and the random-weight `vit_b16_random` used by benchmarks), a
keras-hub preset name (e.g. `vit_base_patch16_224_imagenet21k`,
`gpt2_medium_en`, `bart_large_en`), a hub handle (`hf://openai-community/gpt2`,
`hf://google/vit-base-patch16-224-in21k`, `kaggle://keras/gpt2/keras/gpt2_base_en`),
or a local folder: a keras-hub preset (what `save_to_preset` wrote) or a
Hugging Face checkpoint (`config.json` + `model.safetensors`, as
`save_pretrained` writes it). Hugging Face GPT-2, BART and ViT checkpoints are
converted by keras-hub's own converters (`kprefix.backbones.hub`).

Example:

>>> from kprefix.backbones import build_backbone, attention_sites
>>> backbone = build_backbone("vit_tiny")
>>> len(attention_sites(backbone))
4
"""

import os

import keras_hub

from kprefix.backbones import bart, frozen_storage, gpt2, hub, vit

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


def build_backbone(name, dtype=None, seed=0, dropout=True, frozen=False):
    """Builds (or loads) the backbone called `name`; see the module doc.

    `dropout=False` builds it with every dropout rate at 0, so the frozen
    backbone computes the same in training as in inference (the reference
    runs GPT-2 and ViT in eval mode); prefix dropout is separate.
    `seed` seeds Python, NumPy and TensorFlow first, whatever the source.
    `frozen=True` promises that nothing will train its weights: under a
    mixed policy those it reads in the compute dtype are then stored in it
    (`kprefix.backbones.frozen_storage`), with the same outputs.
    """
    if frozen:
        with frozen_storage.compute_dtype_storage():
            return build_backbone(name, dtype, seed, dropout)
    import keras

    # Seeds Python, NumPy and TensorFlow for every source: what is built after
    # the backbone without a seed of its own (Keras's default initializers,
    # dropout's seed generators) is then the same in every process.
    keras.utils.set_random_seed(seed)
    if name in BUILT_IN:
        cls, kwargs = BUILT_IN[name]
        return cls(**kwargs, **_without_dropout(cls, dropout), dtype=dtype)
    if os.path.isdir(name) or hub.is_hub_handle(name) or name in _known_presets():
        if os.path.isdir(name) and not os.path.exists(os.path.join(name, "config.json")):
            raise ValueError(
                f"--backbone={name!r} is a directory but holds no config.json: neither a "
                "keras-hub preset (save one with `backbone.save_to_preset(dir)`) nor a "
                "Hugging Face checkpoint (`model.save_pretrained(dir)`)."
            )
        hub.check_reachable(name)
        cls = check_supported(name)
        family = next(known for known in FAMILIES if issubclass(cls, known))
        return hub.load_backbone(name, dtype=dtype, **_without_dropout(family, dropout))
    raise ValueError(
        f"Unknown --backbone={name!r}. Use a built-in config "
        f"({', '.join(BUILT_IN)}), a keras-hub preset of ViT, GPT-2 or BART "
        f"(e.g. vit_base_patch16_224_imagenet21k, gpt2_medium_en, bart_large_en), "
        "a hub handle (hf://owner/name, kaggle://owner/model/keras/variant) "
        "or a local keras-hub preset or Hugging Face checkpoint folder."
    )


def check_supported(name):
    """The backbone class behind preset or handle `name`, if kprefix supports it.

    Reads only `config.json`; raises `ValueError` naming the family otherwise.
    """
    cls = hub.backbone_class(name)
    if not any(issubclass(cls, known) for known in FAMILIES):
        raise ValueError(
            f"--backbone={name!r} is a {cls.__name__}; kprefix puts prefixes into "
            f"{', '.join(c.__name__ for c in FAMILIES)} only."
        )
    return cls


def _known_presets():
    return {p for cls in FAMILIES for p in cls.presets}


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


def transformer_blocks(backbone):
    """Every transformer block of `backbone` (`TransformerBlock`s), in order."""
    return family_of(backbone).blocks(backbone)


def final_norms(backbone):
    """The LayerNorms after the last block (none for post-LN BART)."""
    return family_of(backbone).final_norms(backbone)
