"""The method: prefix attention, prefix generators and their config.

`PrefixTuning` (and with it TensorFlow) is imported on first use, so that
command-line tools can read `PrefixConfig` and define their flags before
TensorFlow starts.
"""

from kprefix.prefix.config import PrefixConfig

__all__ = ["PrefixConfig", "PrefixTuning"]


def __getattr__(name):
    if name == "PrefixTuning":
        from kprefix.prefix.tuning import PrefixTuning

        return PrefixTuning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
