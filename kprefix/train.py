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


def make_strategy(name, tpu="", peer_timeout_seconds=300):
    """The `tf.distribute` strategy called `name` (see `STRATEGIES`).

    `multi_worker_mirrored` reads `TF_CONFIG`; a worker whose peer stops
    responding fails after `peer_timeout_seconds` (see `kprefix.multi_worker`).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        from kprefix.multi_worker import make_multi_worker_strategy

        return make_multi_worker_strategy(peer_timeout_seconds)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown --strategy={name!r}; choose one of {', '.join(STRATEGIES)}.")


def jit_compile_for(strategy, jit_compile):
    """`jit_compile`, or False with a one-line notice where XLA cannot compile the step.

    Keras compiles the whole distributed step (every replica and the
    cross-replica reduction) as one XLA function. That works on one device,
    on TPUs, and with one GPU per worker; it fails when one worker has several
    replicas (XLA places a function on one device: "resource ... located in
    device CPU:1") and for CPU collectives across workers ("Collectives are
    not yet implemented for CPU devices when compiling with XLA").

    >>> jit_compile_for(tf.distribute.get_strategy(), True)
    True
    """
    if (not jit_compile or strategy.num_replicas_in_sync == 1
            or isinstance(strategy, tf.distribute.TPUStrategy)):
        return jit_compile
    local_devices = strategy.extended.worker_devices
    on_cpu = all("CPU" in device.upper().rsplit("/", 1)[-1] for device in local_devices)
    several_workers = strategy.num_replicas_in_sync > len(local_devices)
    if len(local_devices) > 1 or (several_workers and on_cpu):
        where = (f"{len(local_devices)} replicas on this worker" if len(local_devices) > 1
                 else "collectives between CPU workers")
        print(f"Note: --jit_compile is off: XLA cannot compile a step with {where}.",
              flush=True)
        return False
    return jit_compile


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


def make_optimizer(name, learning_rate, weight_decay, global_batch_size, total_steps,
                   warmup_steps):
    """The paper's optimizers.

    `sgd`: SGD with momentum 0.9, base learning rate scaled by
    `global_batch_size / 256`, linear warm-up then cosine decay (vision).
    `adamw`: AdamW with linear warm-up then linear decay (language).
    Weight decay is Keras's decoupled form.
    """
    if name == "sgd":
        schedule = WarmupCosine(learning_rate * global_batch_size / 256, warmup_steps, total_steps)
        return keras.optimizers.SGD(schedule, momentum=0.9, weight_decay=weight_decay or None)
    if name == "adamw":
        schedule = WarmupLinear(learning_rate, warmup_steps, total_steps)
        return keras.optimizers.AdamW(schedule, weight_decay=weight_decay)
    raise ValueError(f"Unknown --optimizer={name!r}; choose one of {', '.join(OPTIMIZERS)}.")


def epoch_stream(make_epoch, first_epoch, epochs):
    """Batches of epochs `first_epoch..epochs-1`, one after another.

    `make_epoch(epoch)` gets an int64 scalar tensor and returns that epoch's
    batched dataset; seeding its shuffle and augmentation with `epoch` makes
    a resumed run identical to an uninterrupted one.
    """
    stream = tf.data.Dataset.range(first_epoch, epochs).flat_map(make_epoch)
    # Several workers each take their part of every global batch (not whole
    # files), so a step sees the same examples as on one worker.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return stream.with_options(options)


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
    # Optimizer slots are variables: created in the model's strategy scope.
    with model.distribute_strategy.scope():
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    try:
        with model.distribute_strategy.scope():
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
