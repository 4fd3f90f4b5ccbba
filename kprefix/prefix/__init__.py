"""The method: prefix attention, prefix generators and their config."""

from kprefix.prefix.config import PrefixConfig
from kprefix.prefix.tuning import PrefixTuning

__all__ = ["PrefixConfig", "PrefixTuning"]
