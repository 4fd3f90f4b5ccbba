"""kprefix: prefix-tuning with shared key/value structure for Keras 3."""

__version__ = "0.1.0"
