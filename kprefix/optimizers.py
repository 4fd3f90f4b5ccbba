"""Optimizers with PyTorch's update rules: coupled SGD weight decay, global
gradient clipping after the cross-replica sum.

`torch.optim.SGD(lr, momentum, weight_decay)` (dampening 0, no Nesterov)
updates a parameter `w` with gradient `g` as

    d = g + weight_decay * w          # coupled: decay joins the gradient
    buf = momentum * buf + d          # buf starts at 0 (first step: buf = d)
    w = w - lr * buf

Keras's `SGD(weight_decay=...)` instead shrinks `w` by `lr * weight_decay * w`
outside the momentum, and folds the learning rate into its momentum buffer,
so the same nominal decay is about `1 / (1 - momentum)` times weaker.
`CoupledSGD` implements the rule above; `GlobalNormClipping` clips the
gradients of all variables together by their global norm, as
`torch.nn.utils.clip_grad_norm_`, after they have been summed over replicas
(Keras's own `global_clipnorm` clips each replica's share before the sum).

Both keep Keras's optimizer state (`momentums`, `iterations`), so they
checkpoint like the built-in ones, and run under `tf.distribute` and XLA.

Example:

>>> import numpy as np, keras
>>> from kprefix.optimizers import CoupledSGD
>>> w = keras.Variable(np.array([1.0, -2.0], "float32"))
>>> sgd = CoupledSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.5)
>>> sgd.apply([np.array([0.2, 0.2], "float32")], [w])
>>> [round(float(v), 4) for v in np.asarray(w)]   # w - 0.1 * (g + 0.5 * w)
[0.93, -1.92]
"""

import keras
from keras import ops

WEIGHT_DECAY_MODES = ("coupled", "decoupled")


def clip_by_global_norm(gradients, clip_norm):
    """`gradients` scaled by `min(1, clip_norm / (global norm + 1e-6))`.

    The global norm is over all gradients together, as in
    `torch.nn.utils.clip_grad_norm_` (including its 1e-6).
    """
    present = [g for g in gradients if g is not None]
    if not present:
        return gradients
    norm = ops.sqrt(sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in present))
    scale = ops.minimum(1.0, clip_norm / (norm + 1e-6))
    return [None if g is None else g * ops.cast(scale, g.dtype) for g in gradients]


class GlobalNormClipping:
    """Mixin: clip by global norm after the cross-replica gradient sum.

    `clip_norm=0` turns clipping off. Put it before a Keras optimizer class in
    the bases. The clipping hooks into the TensorFlow backend's
    all-reduce, which runs in every replica with the summed gradients.
    """

    def __init__(self, *args, clip_norm=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_norm = float(clip_norm or 0.0)
        if self.clip_norm < 0:
            raise ValueError(f"clip_norm must be >= 0 (0: off); got {clip_norm}.")

    def _all_reduce_sum_gradients(self, grads_and_vars):
        reduced = list(super()._all_reduce_sum_gradients(grads_and_vars))
        if not self.clip_norm:
            return reduced
        clipped = clip_by_global_norm([g for g, _ in reduced], self.clip_norm)
        return [(g, v) for g, (_, v) in zip(clipped, reduced)]

    def get_config(self):
        return {**super().get_config(), "clip_norm": self.clip_norm}


@keras.saving.register_keras_serializable(package="kprefix")
class CoupledSGD(GlobalNormClipping, keras.optimizers.SGD):
    """SGD with momentum and weight decay exactly as `torch.optim.SGD`.

    Variables passed to `exclude_from_weight_decay` get no decay (the
    reference leaves the classifier bias undecayed). Nesterov is not
    supported.
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, weight_decay=0.0, **kwargs):
        if kwargs.get("nesterov"):
            raise ValueError("CoupledSGD does not implement Nesterov momentum.")
        super().__init__(learning_rate=learning_rate, momentum=momentum,
                         weight_decay=weight_decay or None, **kwargs)

    def _apply_weight_decay(self, variables):
        # The decay is part of the gradient in `update_step`, not a separate shrink.
        return

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.weight_decay is not None and self._use_weight_decay(variable):
            gradient = gradient + ops.cast(self.weight_decay, variable.dtype) * variable
        if self.momentum != 0:
            buffer = self.momentums[self._get_variable_index(variable)]
            gradient = ops.cast(self.momentum, variable.dtype) * buffer + gradient
            self.assign(buffer, gradient)
        self.assign_sub(variable, learning_rate * gradient)


@keras.saving.register_keras_serializable(package="kprefix")
class ClippedSGD(GlobalNormClipping, keras.optimizers.SGD):
    """Keras's SGD (decoupled weight decay) with global-norm clipping."""


@keras.saving.register_keras_serializable(package="kprefix")
class ClippedAdamW(GlobalNormClipping, keras.optimizers.AdamW):
    """Keras's AdamW with global-norm clipping."""
