"""Backbones from model hubs: keras-hub presets and Hugging Face checkpoints.

A handle is anything keras-hub's `from_preset` reads: `hf://owner/name`,
`kaggle://owner/model/keras/variant[/version]`, a preset name, or a local
folder. A folder (or hub repository) holds either a keras-hub preset (its
`config.json` names a keras-hub class) or a Hugging Face `transformers`
checkpoint (`config.json` with a `model_type`, and `model.safetensors` or a
sharded `model.safetensors.index.json`).

Hugging Face checkpoints of GPT-2, BART and ViT go through keras-hub's own
converters (`keras_hub/src/utils/transformers/convert_*.py`). The only thing
added here is key lookup for checkpoints saved from the bare base model
(`ViTModel` writes `embeddings.cls_token`, where keras-hub's ViT converter
asks for the `ViTForImageClassification` name `vit.embeddings.cls_token`).

Example (a keras-hub preset saved to a folder, read back by its path):

>>> import tempfile, keras_hub
>>> from kprefix.backbones import build_backbone
>>> from kprefix.backbones.hub import backbone_class
>>> folder = tempfile.mkdtemp()
>>> build_backbone("gpt2_tiny").save_to_preset(folder)
>>> backbone_class(folder).__name__
'GPT2Backbone'
"""

import os
import socket

import keras_hub
from keras_hub.src.utils import preset_utils
from keras_hub.src.utils.transformers import convert_bart, convert_gpt2, convert_vit
from keras_hub.src.utils.transformers.safetensor_utils import SafetensorLoader

# Hugging Face `model_type` -> keras-hub converter, for the families kprefix
# knows where to put prefixes.
CONVERTERS = {"gpt2": convert_gpt2, "bart": convert_bart, "vit": convert_vit}

SCHEMES = ("hf://", "kaggle://", "modelscope://", "gs://")


def is_hub_handle(name):
    """Whether `name` is a hub URI (`hf://...`, `kaggle://...`, ...)."""
    return isinstance(name, str) and name.lower().startswith(SCHEMES)


# Where each scheme downloads from, for a quick reachability check.
HOSTS = {"hf://": "huggingface.co", "kaggle://": "www.kaggle.com",
         "modelscope://": "www.modelscope.cn"}


def check_reachable(handle, timeout=10.0):
    """Raises `ConnectionError` at once when the hub of `handle` cannot be reached.

    Without it, a machine without network retries for most of a minute and
    then reports a missing `config.json`. A Hugging Face repository already
    or Kaggle model version already in the local cache, `HF_HUB_OFFLINE`, and
    other handles are left to keras-hub.

    >>> check_reachable("/a/local/preset")  # nothing to reach
    """
    scheme = next((s for s in HOSTS if handle.lower().startswith(s)), None)
    if scheme is None or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return
    if _in_local_cache(scheme, handle[len(scheme):]):
        return
    host = HOSTS[scheme]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach {host} to download --backbone={handle!r} "
                              f"({error})") from None


def _in_local_cache(scheme, name):
    """Whether the hub's own cache already holds the preset `name` (no download needed)."""
    if scheme == "hf://":
        from huggingface_hub import try_to_load_from_cache

        repo = "/".join(name.split("/")[:2])
        return isinstance(try_to_load_from_cache(repo, preset_utils.CONFIG_FILE), str)
    if scheme == "kaggle://":
        from kagglehub.cache import Cache
        from kagglehub.handle import parse_model_handle

        try:
            model = parse_model_handle(name)
        except ValueError:
            return False
        # A handle without a version resolves the newest one online.
        return (model.version is not None
                and Cache().load_from_cache(model, preset_utils.CONFIG_FILE) is not None)
    return False


def transformers_config(handle):
    """The Hugging Face `config.json` of `handle`, or `None` for a keras-hub preset."""
    config = preset_utils.load_json(handle, preset_utils.CONFIG_FILE)
    return config if "model_type" in config else None


def backbone_class(handle):
    """The keras-hub backbone class `handle` loads into; reads `config.json` only.

    Raises `ValueError` naming the model type when keras-hub has no converter
    for a Hugging Face checkpoint, or when the checkpoint is of a family
    kprefix cannot put prefixes into.
    """
    config = transformers_config(handle)
    if config is None:
        return preset_utils.get_preset_loader(handle).check_backbone_class()
    model_type = config["model_type"]
    if model_type in CONVERTERS:
        return CONVERTERS[model_type].backbone_cls
    try:
        other = preset_utils.get_preset_loader(handle).check_backbone_class()
    except ValueError:
        raise ValueError(
            f"{handle!r} is a Hugging Face checkpoint of model_type {model_type!r}, and "
            f"keras-hub {keras_hub.__version__} has no converter for it. kprefix loads "
            f"Hugging Face {', '.join(CONVERTERS)} checkpoints."
        ) from None
    raise ValueError(
        f"{handle!r} is a Hugging Face {model_type!r} checkpoint; keras-hub converts it "
        f"to {other.__name__}, but kprefix puts prefixes only into "
        f"{', '.join(c.backbone_cls.__name__ for c in CONVERTERS.values())} "
        f"(Hugging Face model types {', '.join(CONVERTERS)})."
    )


def load_backbone(handle, dtype=None, **overrides):
    """The backbone at `handle`, weights loaded (see the module doc).

    `overrides` replace constructor arguments (dropout rates, say).
    """
    config = transformers_config(handle)
    if config is None:
        return keras_hub.models.Backbone.from_preset(handle, dtype=dtype, **overrides)
    backbone_class(handle)  # Fails early, naming the model type.
    config = _with_keys_converters_read(config, handle)
    converter = CONVERTERS[config["model_type"]]
    _check_safetensors(handle)
    arguments = {**converter.convert_backbone_config(config), **overrides}
    backbone = converter.backbone_cls(**arguments, dtype=dtype)
    with BaseModelSafetensorLoader(handle) as loader:
        converter.convert_weights(backbone, loader, config)
    return backbone


def _with_keys_converters_read(config, handle):
    """`config` with BART's `num_hidden_layers`, which keras-hub's converter reads
    and hub checkpoints spell out but transformers 5 no longer writes."""
    if config["model_type"] != "bart" or "num_hidden_layers" in config:
        return config
    encoder, decoder = config.get("encoder_layers"), config.get("decoder_layers")
    if encoder != decoder:
        raise ValueError(f"{handle!r} is a BART with {encoder} encoder and {decoder} decoder "
                         "layers; keras-hub's BartBackbone has one depth for both.")
    return {**config, "num_hidden_layers": encoder}


def _check_safetensors(handle):
    for name in (preset_utils.SAFETENSOR_CONFIG_FILE, preset_utils.SAFETENSOR_FILE):
        if preset_utils.check_file_exists(handle, name):
            return
    raise ValueError(
        f"{handle!r} has a Hugging Face config.json but no {preset_utils.SAFETENSOR_FILE} "
        f"(or {preset_utils.SAFETENSOR_CONFIG_FILE}); keras-hub reads safetensors "
        "weights only. Save the model with `save_pretrained(dir, safe_serialization=True)`."
    )


class BaseModelSafetensorLoader(SafetensorLoader):
    """keras-hub's loader, which also finds keys saved without the task prefix.

    A converter may ask for `vit.encoder.layer.0...` (the name inside
    `ViTForImageClassification`); a checkpoint saved from `ViTModel` stores
    `encoder.layer.0...`. keras-hub's own lookup already handles the opposite
    case (a converter asking `h.0...` of a `transformer.h.0...` checkpoint).
    """

    def get_prefixed_key(self, hf_weight_key, dict_like):
        key = super().get_prefixed_key(hf_weight_key, dict_like)
        keys = dict_like.keys()
        if key not in keys:
            _, _, without_prefix = hf_weight_key.partition(".")
            if without_prefix in keys:
                return without_prefix
        return key
