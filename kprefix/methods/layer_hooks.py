"""Change what one built Keras layer computes, without touching its weights.

A method that needs a hook where keras-hub offers none (an adapter after a
projection, prompt tokens inside the ViT encoder) swaps the class of that
one built layer for a subclass that overrides a single method, as the prefix
attention does (`kprefix.prefix.attention`). Variables, names and checkpoint
paths stay the layer's own; `restore_class` undoes it. What the hook needs
(an adapter, the prompts) is attached untracked, so its variables belong to
the container that created them, not to the frozen layer.

Example:

>>> import numpy as np, keras
>>> class Doubled:
...     def call(self, inputs):
...         return 2 * super().call(inputs)
>>> dense = keras.layers.Dense(2, kernel_initializer="ones")
>>> _ = dense(np.ones((1, 3), "float32"))
>>> swap_class(dense, Doubled)
>>> dense(np.ones((1, 3), "float32")).numpy().tolist()
[[6.0, 6.0]]
>>> restore_class(dense)
>>> dense(np.ones((1, 3), "float32")).numpy().tolist()
[[3.0, 3.0]]
"""

_SUBCLASSES = {}


def swap_class(layer, mixin, **attached):
    """Makes `layer` an instance of `mixin` + its own class; `attached`
    become untracked attributes the mixin reads (e.g. `adapter=...`)."""
    base = type(layer)
    if getattr(layer, "_kprefix_original_class", None) is not None:
        raise ValueError(f"Layer {layer.name!r} already has a hook; restore_class it first.")
    key = (mixin, base)
    if key not in _SUBCLASSES:
        _SUBCLASSES[key] = type(f"{mixin.__name__}{base.__name__}", (mixin, base), {})
    for name, value in attached.items():
        object.__setattr__(layer, f"_kprefix_{name}", value)
    object.__setattr__(layer, "_kprefix_original_class", base)
    layer.__class__ = _SUBCLASSES[key]


def restore_class(layer):
    """Undoes `swap_class`: the layer computes exactly as before."""
    original = getattr(layer, "_kprefix_original_class", None)
    if original is not None:
        layer.__class__ = original
        object.__setattr__(layer, "_kprefix_original_class", None)
