"""Training: strategies, precision, optimizers, schedules, checkpoints, fit.

A run is `fit(...)` on a model built inside `strategy.scope()`, fed by an
epoch-indexed data stream, so a restarted run sees exactly the batches the
stopped one would have seen. Every epoch writes a checkpoint with the model's
and optimizer's variables (prefix generators included, not only folded
prefixes); `fit` resumes from the latest one.

Example:

>>> from kprefix.train import WarmupCosine
>>> schedule = WarmupCosine(base_lr=0.1, warmup_steps=10, total_steps=100)
>>> [round(float(schedule(s)), 4) for s in (0, 5, 10, 100)]
[0.0, 0.05, 0.1, 0.0]
"""

import glob
import json
import math
import os
import re

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adamw")


def make_strategy(name, tpu=""):
    """The `tf.distribute` strategy called `name` (see `STRATEGIES`)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown --strategy={name!r}; choose one of {', '.join(STRATEGIES)}.")


def set_precision(policy):
    """Sets Keras's global dtype policy; prefix variables stay float32."""
    if policy not in PRECISIONS:
        raise ValueError(f"Unknown --precision={policy!r}; choose one of {', '.join(PRECISIONS)}.")
    keras.mixed_precision.set_global_policy(policy)


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


SCHEDULE_UNITS = ("step", "epoch")


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
                  warmup_steps, schedule_unit="step"):
    """The learning-rate schedule of optimizer `name`.

    `sgd`: base rate scaled by `global_batch_size / 256`, linear warm-up then
    cosine to 0; `adamw`: linear warm-up then linear decay. With
    `schedule_unit="epoch"`, `warmup_steps` counts epochs and the rate changes
    once per epoch (the reference vision scheduler); otherwise it changes
    every step and `warmup_steps` counts steps.
    """
    if schedule_unit not in SCHEDULE_UNITS:
        raise ValueError(f"Unknown --schedule_unit={schedule_unit!r}; choose one of "
                         f"{', '.join(SCHEDULE_UNITS)}.")
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown --optimizer={name!r}; choose one of {', '.join(OPTIMIZERS)}.")
    shape, base = ((WarmupCosine, learning_rate * global_batch_size / 256) if name == "sgd"
                   else (WarmupLinear, learning_rate))
    if schedule_unit == "epoch":
        return PerEpoch(shape(base, warmup_steps, epochs), steps_per_epoch)
    return shape(base, warmup_steps, steps_per_epoch * epochs)


def make_optimizer(name, learning_rate, weight_decay, global_batch_size, total_steps,
                   warmup_steps, weight_decay_mode="decoupled", clip_norm=0.0,
                   schedule=None):
    """The paper's optimizers.

    `sgd`: SGD with momentum 0.9, base learning rate scaled by
    `global_batch_size / 256`, linear warm-up then cosine decay (vision).
    `adamw`: AdamW with linear warm-up then linear decay (language).
    `weight_decay_mode="decoupled"` is Keras's weight decay;
    `"coupled"` (SGD only) adds `weight_decay * w` to the gradient before
    the momentum, as `torch.optim.SGD` (see `kprefix.optimizers`).
    `clip_norm > 0` clips all gradients together by their global norm.
    `schedule` replaces the default per-step schedule (see `make_schedule`).
    """
    from kprefix import optimizers

    if weight_decay_mode not in optimizers.WEIGHT_DECAY_MODES:
        raise ValueError(f"Unknown --weight_decay_mode={weight_decay_mode!r}; choose one of "
                         f"{', '.join(optimizers.WEIGHT_DECAY_MODES)}.")
    if clip_norm < 0:
        raise ValueError(f"--clip_norm={clip_norm}: use 0 (off) or a positive norm.")
    if schedule is None:
        schedule = make_schedule(name, learning_rate, global_batch_size, total_steps, 1,
                                 warmup_steps)
    if name == "sgd":
        if weight_decay_mode == "coupled":
            return optimizers.CoupledSGD(schedule, momentum=0.9, weight_decay=weight_decay,
                                         clip_norm=clip_norm)
        if clip_norm:
            return optimizers.ClippedSGD(schedule, momentum=0.9,
                                         weight_decay=weight_decay or None, clip_norm=clip_norm)
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay or None)
    if name == "adamw":
        if weight_decay_mode == "coupled":
            raise ValueError("--weight_decay_mode=coupled is the SGD rule of torch.optim.SGD; "
                             "AdamW's decay is decoupled: use --weight_decay_mode=decoupled.")
        if clip_norm:
            return optimizers.ClippedAdamW(schedule, weight_decay=weight_decay,
                                           clip_norm=clip_norm)
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    raise ValueError(f"Unknown --optimizer={name!r}; choose one of {', '.join(OPTIMIZERS)}.")


def epoch_stream(make_epoch, first_epoch, epochs):
    """Batches of epochs `first_epoch..epochs-1`, one after another.

    `make_epoch(epoch)` gets an int64 scalar tensor and returns that epoch's
    batched dataset; seeding its shuffle and augmentation with `epoch` makes
    a resumed run identical to an uninterrupted one.
    """
    return tf.data.Dataset.range(first_epoch, epochs).flat_map(make_epoch)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model and optimizer variables after every epoch.

    Files are `<directory>/epoch-<N>.weights.h5` (N counts finished epochs);
    the newest `keep` are kept.
    """

    def __init__(self, directory, keep=3):
        super().__init__()
        self.directory = directory
        self.keep = keep

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, f"epoch-{epoch + 1}.weights.h5")
        self.model.save_weights(path + ".tmp.weights.h5")
        os.replace(path + ".tmp.weights.h5", path)  # never leave a half-written file
        for old, _ in list_checkpoints(self.directory)[:-self.keep]:
            os.remove(old)


def list_checkpoints(directory):
    """`[(path, epochs_done)]` in `directory`, oldest first."""
    found = []
    for path in glob.glob(os.path.join(directory, "epoch-*.weights.h5")):
        match = re.fullmatch(r"epoch-(\d+)\.weights\.h5", os.path.basename(path))
        if match:
            found.append((path, int(match.group(1))))
    return sorted(found, key=lambda item: item[1])


def restore_latest(model, directory):
    """Loads the newest checkpoint in `directory`; returns epochs done (0 if none).

    The optimizer must already be attached (`model.compile`); its slots are
    built here so they can be restored.
    """
    checkpoints = list_checkpoints(directory)
    if not checkpoints:
        return 0
    path, epochs_done = checkpoints[-1]
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        model.load_weights(path)
    except Exception as error:  # h5py and Keras raise several types here
        raise ValueError(
            f"Checkpoint {path} could not be loaded ({error}). It is corrupted or "
            "from a different model; delete it to resume from the one before, "
            "or use a new --workdir."
        ) from error
    return epochs_done


def fit(model, make_epoch, steps_per_epoch, epochs, workdir, validation_data=None,
        verbose="auto"):
    """Trains `model` (compiled) to `epochs`, resuming from `workdir` if possible.

    Returns the Keras `History` of the epochs run now, and the number of
    epochs that were already done when it started.
    """
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    first_epoch = restore_latest(model, checkpoint_dir)
    if first_epoch:
        print(f"Resumed from {checkpoint_dir} after epoch {first_epoch}.", flush=True)
    callbacks = [
        EpochCheckpoint(checkpoint_dir),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
    ]
    history = model.fit(
        epoch_stream(make_epoch, first_epoch, epochs),
        epochs=epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps_per_epoch,
        validation_data=validation_data,
        callbacks=callbacks,
        verbose=verbose,
    )
    return history, first_epoch


def write_json(path, payload):
    """Writes `payload` as indented JSON, atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
    os.replace(path + ".tmp", path)
