"""Change what one built Keras layer computes by mixing a class into it.

Where keras-hub offers no hook (prefix keys in an attention layer, shifted
GPT-2 positions, the tied output layer without its transposed copy, 2-D
projections, a class-token-only last ViT block, an adapter after a
projection, VPT's prompts in the encoder), kprefix makes that one built
layer an instance of `(Mixin, its class)`: the mixin overrides a method and
calls `super()`. Variables, names and checkpoint paths stay the layer's own,
and `unmix` undoes it. What the mixin reads (a prefix source, an adapter) is
attached untracked, so its variables belong to whoever created them, not to
the frozen layer. Mixing twice is a no-op; mixins stack.

Example:

>>> import numpy as np, keras
>>> class Doubled:
...     def call(self, inputs):
...         return 2 * super().call(inputs)
>>> dense = keras.layers.Dense(2, kernel_initializer="ones")
>>> _ = dense(np.ones((1, 3), "float32"))
>>> mix_into(dense, Doubled)
>>> type(dense).__name__, dense(np.ones((1, 3), "float32")).numpy().tolist()
('Dense', [[6.0, 6.0]])
>>> unmix(dense, Doubled)
>>> dense(np.ones((1, 3), "float32")).numpy().tolist()
[[3.0, 3.0]]
"""

import functools


@functools.lru_cache(maxsize=None)
def mixed_class(mixin, base, name=None):
    """The class `(mixin, base)`, made once per pair.

    Without `name` it keeps `base`'s name and module, so that Keras saves and
    loads the layer under the same paths (a list of layers is saved by class
    name); with `name` (e.g. `"Prefix{}"`, formatted with the base's name) it
    says what was mixed in.
    """
    if issubclass(base, mixin):
        return base
    namespace = {"_unmixed_class": base,
                 "__module__": base.__module__ if name is None else mixin.__module__}
    return type(base.__name__ if name is None else name.format(base.__name__), (mixin, base),
                namespace)


def mix_into(layer, mixin, name=None, **attached):
    """Makes the built `layer` an instance of `mixed_class(mixin, type(layer), name)`.

    `attached` become untracked attributes of the layer (e.g.
    `_prefix_source=...`), read by the mixin.
    """
    layer.__class__ = mixed_class(mixin, type(layer), name)
    for attribute, value in attached.items():
        object.__setattr__(layer, attribute, value)


def unmix(layer, mixin, *attached):
    """Undoes `mix_into(layer, mixin)` and drops the `attached` attributes; a
    no-op when `mixin` is not mixed in. Mixins added after it stay."""
    if not isinstance(layer, mixin):
        return
    layer.__class__ = _without(type(layer), mixin)
    for attribute in attached:
        if attribute in layer.__dict__:
            object.__delattr__(layer, attribute)


def _without(cls, mixin):
    unmixed = cls.__dict__.get("_unmixed_class")
    if unmixed is None:
        raise ValueError(f"{mixin.__name__} is part of {cls.__name__} itself, not mixed into "
                         "one layer; it cannot be removed.")
    if cls.__bases__[0] is mixin:
        return unmixed
    return mixed_class(cls.__bases__[0], _without(unmixed, mixin),
                       None if cls.__name__ == unmixed.__name__ else cls.__name__)
