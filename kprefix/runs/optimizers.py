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
>>> from kprefix.runs.optimizers import CoupledSGD
>>> w = keras.Variable(np.array([1.0, -2.0], "float32"))
>>> sgd = CoupledSGD(learning_rate=0.1, momentum=0.9, weight_decay=0.5)
>>> sgd.apply([np.array([0.2, 0.2], "float32")], [w])
>>> [round(float(v), 4) for v in np.asarray(w)]   # w - 0.1 * (g + 0.5 * w)
[0.93, -1.92]
"""

import math

import keras
from keras import ops

from kprefix.runs.config import LR_DECAYS, OPTIMIZERS, SCHEDULE_UNITS, WEIGHT_DECAY_MODES



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


@keras.saving.register_keras_serializable(package="kprefix")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `base_lr`, then cosine decay to 0."""

    def __init__(self, base_lr, warmup_steps, total_steps):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = self.base_lr * step / max(self.warmup_steps, 1)
        progress = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        progress = keras.ops.clip(progress, 0.0, 1.0)
        cosine = 0.5 * self.base_lr * (1.0 + keras.ops.cos(math.pi * progress))
        return keras.ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self):
        return dict(base_lr=self.base_lr, warmup_steps=self.warmup_steps,
                    total_steps=self.total_steps)


@keras.saving.register_keras_serializable(package="kprefix")
class WarmupLinear(WarmupCosine):
    """Linear warm-up from 0 to `base_lr`, then linear decay to 0."""

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = self.base_lr * step / max(self.warmup_steps, 1)
        remaining = (self.total_steps - step) / max(self.total_steps - self.warmup_steps, 1)
        decay = self.base_lr * keras.ops.clip(remaining, 0.0, 1.0)
        return keras.ops.where(step < self.warmup_steps, warmup, decay)




@keras.saving.register_keras_serializable(package="kprefix")
class PerEpoch(keras.optimizers.schedules.LearningRateSchedule):
    """A schedule over epochs, held constant within each epoch.

    `schedule` is evaluated at the index of the current epoch,
    `floor(step / steps_per_epoch)`, as a PyTorch `LambdaLR` stepped once per
    epoch: with a warm-up, epoch 0 runs at learning rate 0.

    >>> per_epoch = PerEpoch(WarmupCosine(1.0, warmup_steps=2, total_steps=4), steps_per_epoch=3)
    >>> [round(float(per_epoch(s)), 3) for s in range(0, 12, 3)]
    [0.0, 0.5, 1.0, 0.5]
    """

    def __init__(self, schedule, steps_per_epoch):
        if isinstance(schedule, dict):
            schedule = keras.saving.deserialize_keras_object(schedule)
        self.schedule = schedule
        self.steps_per_epoch = int(steps_per_epoch)

    def __call__(self, step):
        epoch = keras.ops.floor_divide(keras.ops.cast(step, "int64"), self.steps_per_epoch)
        return self.schedule(epoch)

    def get_config(self):
        return dict(schedule=keras.saving.serialize_keras_object(self.schedule),
                    steps_per_epoch=self.steps_per_epoch)


def make_schedule(name, learning_rate, global_batch_size, steps_per_epoch, epochs,
                  warmup_steps, schedule_unit="step", decay="auto"):
    """The learning-rate schedule of optimizer `name`.

    `sgd`: base rate scaled by `global_batch_size / 256`, linear warm-up then
    cosine to 0; `adamw`: linear warm-up then linear decay. `decay`
    (`cosine` or `linear`) overrides the optimizer's decay shape, e.g. AdamW
    with cosine decay for VPT's full fine-tuning. With
    `schedule_unit="epoch"`, `warmup_steps` counts epochs and the rate changes
    once per epoch (the reference vision scheduler); otherwise it changes
    every step and `warmup_steps` counts steps.
    """
    if schedule_unit not in SCHEDULE_UNITS:
        raise ValueError(f"Unknown --schedule_unit={schedule_unit!r}; choose one of "
                         f"{', '.join(SCHEDULE_UNITS)}.")
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown --optimizer={name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    if decay not in LR_DECAYS:
        raise ValueError(f"Unknown --lr_decay={decay!r}; choose one of {', '.join(LR_DECAYS)}.")
    if decay == "auto":
        decay = "cosine" if name == "sgd" else "linear"
    shape = WarmupCosine if decay == "cosine" else WarmupLinear
    base = learning_rate * global_batch_size / 256 if name == "sgd" else learning_rate
    if schedule_unit == "epoch":
        return PerEpoch(shape(base, warmup_steps, epochs), steps_per_epoch)
    return shape(base, warmup_steps, steps_per_epoch * epochs)


def make_optimizer(name, learning_rate, weight_decay, global_batch_size, total_steps,
                   warmup_steps, weight_decay_mode="decoupled", clip_norm=0.0,
                   schedule=None, adam_epsilon=1e-7):
    """The paper's 

    `sgd`: SGD with momentum 0.9, base learning rate scaled by
    `global_batch_size / 256`, linear warm-up then cosine decay (vision).
    `adamw`: AdamW with linear warm-up then linear decay (language).
    `weight_decay_mode="decoupled"` is Keras's weight decay;
    `"coupled"` (SGD only) adds `weight_decay * w` to the gradient before
    the momentum, as `torch.optim.SGD` (see `CoupledSGD`).
    `clip_norm > 0` clips all gradients together by their global norm.
    `schedule` replaces the default per-step schedule (see `make_schedule`).
    `adam_epsilon` is AdamW's epsilon (Keras's default 1e-7; PyTorch's 1e-8).
    """
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"Unknown --weight_decay_mode={weight_decay_mode!r}; choose one of "
                         f"{', '.join(WEIGHT_DECAY_MODES)}.")
    if clip_norm < 0:
        raise ValueError(f"--clip_norm={clip_norm}: use 0 (off) or a positive norm.")
    if schedule is None:
        schedule = make_schedule(name, learning_rate, global_batch_size, total_steps, 1,
                                 warmup_steps)
    if name == "sgd":
        if weight_decay_mode == "coupled":
            return CoupledSGD(schedule, momentum=0.9, weight_decay=weight_decay,
                                         clip_norm=clip_norm)
        if clip_norm:
            return ClippedSGD(schedule, momentum=0.9,
                                         weight_decay=weight_decay or None, clip_norm=clip_norm)
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay or None)
    if name == "adamw":
        if weight_decay_mode == "coupled":
            raise ValueError("--weight_decay_mode=coupled is the SGD rule of torch.optim.SGD; "
                             "AdamW's decay is decoupled: use --weight_decay_mode=decoupled.")
        if clip_norm:
            return ClippedAdamW(schedule, weight_decay=weight_decay,
                                           epsilon=adam_epsilon, clip_norm=clip_norm)
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay, epsilon=adam_epsilon)
    raise ValueError(f"Unknown --optimizer={name!r}; choose one of {', '.join(OPTIMIZERS)}.")
