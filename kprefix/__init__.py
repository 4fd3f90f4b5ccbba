"""kprefix: prefix-tuning with shared key/value structure for Keras 3.

Everything a user needs is importable from here; the modules behind the
names load on first use, so `import kprefix` stays cheap (no TensorFlow).

Example:

>>> from kprefix import PrefixConfig, PrefixImageClassifier, build_backbone
>>> model = PrefixImageClassifier(build_backbone("vit_tiny"), num_classes=3,
...                               prefix_config=PrefixConfig(length=2))
>>> model.prefix.site_names
['encoder_0', 'encoder_1', 'encoder_2', 'encoder_3']
"""

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "PrefixConfig": "kprefix.prefix.config",
    "PrefixTuning": "kprefix.prefix.tuning",
    "PrefixImageClassifier": "kprefix.tasks.image_classifier",
    "PrefixGPT2CausalLM": "kprefix.tasks.language_models",
    "PrefixBartSeq2SeqLM": "kprefix.tasks.language_models",
    "build_backbone": "kprefix.backbones",
    "MethodConfig": "kprefix.methods",
    "RunConfig": "kprefix.runs.config",
    "DecodingSettings": "kprefix.runs.config",
    "run": "kprefix.runs.launcher",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kprefix' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
