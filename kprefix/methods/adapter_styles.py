"""The adapter styles: after which sublayers of every block an adapter goes.

`pfeiffer` adds one after the MLP; `houlsby` also adds one after attention
(and cross-attention). `kprefix.methods.adapters` installs them; the styles
live here, apart from Keras, so that a method's settings are checked before
TensorFlow starts.

>>> "houlsby" in ADAPTER_STYLES
True
"""

ADAPTER_STYLES = ("pfeiffer", "houlsby")
