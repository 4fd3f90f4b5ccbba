"""Training: strategies, precision, the epoch stream, guards and `fit`.

A run is `fit(...)` on a model built inside `strategy.scope()`, fed by an
epoch-indexed data stream, so a restarted run sees exactly the batches the
stopped one would have seen. Checkpoints (`kprefix.runs.checkpoints`) are written
at the end of every epoch and every `checkpoint_every_steps` steps; `fit`
resumes from the newest good one at the exact step, mid-epoch included, so a
killed and restarted run ends with the same weights, bit for bit, as one
that was never stopped. A non-finite loss stops the run (`Diverged`) before
anything is written, and SIGTERM (preemption) saves and stops (`Preempted`).

Example:

>>> from kprefix.runs.train import epoch_stream
>>> import tensorflow as tf
>>> make_epoch = lambda epoch: tf.data.Dataset.from_tensors(epoch).repeat(2)
>>> [int(x) for x in epoch_stream(make_epoch, first_epoch=1, epochs=3)]
[1, 1, 2, 2]
"""

import math
import os
import signal
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from kprefix.runs.checkpoints import CheckpointStore, NonFiniteState
from kprefix.runs.config import PRECISIONS, STRATEGIES



def make_strategy(name, tpu="", peer_timeout_seconds=300):
    """The `tf.distribute` strategy called `name` (see `STRATEGIES`).

    `multi_worker_mirrored` reads `TF_CONFIG`; a worker whose peer stops
    responding fails after `peer_timeout_seconds` (see `kprefix.runs.multi_worker`).
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker_mirrored":
        from kprefix.runs.multi_worker import make_multi_worker_strategy

        return make_multi_worker_strategy(peer_timeout_seconds)
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"Unknown --strategy={name!r}; choose one of {', '.join(STRATEGIES)}.")


def jit_compile_for(strategy, jit_compile):
    """`jit_compile`, or False with a one-line notice where XLA cannot compile the step.

    `jit_compile=None` (the launcher's default) decides by platform: on
    where the strategy's devices are GPUs or TPUs, off on CPUs. Measured on
    a 2-core CPU with GPT-2 small (batch 8 x 128, dropout 0.1), XLA made the
    step no faster: the time goes to oneDNN matrix products either way, XLA
    draws the dropout masks more slowly, bypasses oneDNN's bfloat16 kernels
    (mixed_bfloat16 then gains nothing) and adds seconds of compilation
    before the first step.

    Keras compiles the whole distributed step (every replica and the
    cross-replica reduction) as one XLA function. That works on one device,
    on TPUs, and with one GPU per worker; it fails when one worker has several
    replicas (XLA places a function on one device: "resource ... located in
    device CPU:1") and for CPU collectives across workers ("Collectives are
    not yet implemented for CPU devices when compiling with XLA").

    >>> jit_compile_for(tf.distribute.get_strategy(), True)
    True
    """
    if jit_compile is None:
        return not on_cpu(strategy) and jit_compile_for(strategy, True)
    if (not jit_compile or strategy.num_replicas_in_sync == 1
            or isinstance(strategy, tf.distribute.TPUStrategy)):
        return jit_compile
    local_devices = strategy.extended.worker_devices
    several_workers = strategy.num_replicas_in_sync > len(local_devices)
    if len(local_devices) > 1 or (several_workers and on_cpu(strategy)):
        where = (f"{len(local_devices)} replicas on this worker" if len(local_devices) > 1
                 else "collectives between CPU workers")
        print(f"Note: --jit_compile is off: XLA cannot compile a step with {where}.",
              flush=True)
        return False
    return jit_compile


def on_cpu(strategy):
    """Whether every device of `strategy` on this worker is a CPU.

    >>> on_cpu(tf.distribute.get_strategy()) == (not tf.config.list_logical_devices("GPU"))
    True
    """
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return False
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy: the first accelerator, if any
        return not (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))
    return all("CPU" in device.upper().rsplit("/", 1)[-1] for device in devices)


def set_precision(policy, log=print):
    """Sets Keras's global dtype policy; prefix variables stay float32.

    `mixed_bfloat16` on a machine with no GPU or TPU logs one line: the
    CPU's bfloat16 units that oneDNN will use, or that it has none, so bf16
    will not speed training up (it may slow it down).
    """
    if policy not in PRECISIONS:
        raise ValueError(f"Unknown --precision={policy!r}; choose one of {', '.join(PRECISIONS)}.")
    keras.mixed_precision.set_global_policy(policy)
    if policy == "mixed_bfloat16" and not (tf.config.list_physical_devices("GPU")
                                           or tf.config.list_physical_devices("TPU")):
        units = cpu_bf16_units()
        if units:
            log(f"--precision=mixed_bfloat16: the CPU has bfloat16 units ({', '.join(units)}); "
                "oneDNN computes the matrix products in bf16.")
        else:
            log("Note: this CPU has no bfloat16 units (avx512_bf16, amx_bf16): "
                "--precision=mixed_bfloat16 will not speed training up; float32 is faster here.")


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_units(cpuinfo="/proc/cpuinfo"):
    """The bfloat16 instruction sets this CPU reports (`avx512_bf16`, `amx_bf16`), in order.

    Reads the Linux `cpuinfo` flags; elsewhere (no such file) returns ().

    >>> isinstance(cpu_bf16_units(), tuple)
    True
    """
    try:
        with open(cpuinfo) as info:
            for line in info:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in BF16_CPU_FLAGS if flag in present)
    except OSError:
        pass
    return ()


def epoch_stream(make_epoch, first_epoch, epochs):
    """Batches of epochs `first_epoch..epochs-1`, one after another.

    `make_epoch(epoch)` gets an int64 scalar tensor and returns that epoch's
    batched dataset; seeding its shuffle and augmentation with `epoch` makes
    a resumed run identical to an uninterrupted one.
    """
    return shard_by_data(tf.data.Dataset.range(first_epoch, epochs).flat_map(make_epoch))


def shard_by_data(dataset):
    """`dataset` set to be split by examples over workers.

    Several workers each take their part of every global batch (not whole
    files), so a step sees the same examples as on one worker.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def without_autotuning(dataset):
    """`dataset` with tf.data's autotuning off, as `fit` and evaluation read it.

    With autotuning on, deleting an iterator that a traced step consumed can
    wait for the autotuner's next scheduled wake-up, up to several seconds,
    so a `fit` or `evaluate` call could end with that much idle time. Off,
    `tf.data.AUTOTUNE` parallelism means every core.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


class Diverged(RuntimeError):
    """The loss became NaN or infinite, or exploded; nothing of that state was written."""

    def __init__(self, step, what):
        super().__init__(
            f"{what} at step {step}. Nothing from that step on was "
            "saved; the last good checkpoint is kept. Lower --learning_rate (or check the "
            "data) and use a new --workdir, or rerun to resume from the last checkpoint.")
        self.step = step


class Preempted(RuntimeError):
    """SIGTERM arrived; a checkpoint of the current step was written."""

    exit_code = 42  # TensorFlow's preemption convention: the supervisor restarts the run

    def __init__(self, step, checkpoint):
        super().__init__(f"stopped by SIGTERM at step {step}; saved {checkpoint}. Rerun the same "
                         "command to resume from there.")


class RunGuard(keras.callbacks.Callback):
    """Checks every step's loss, checkpoints, and answers SIGTERM.

    The checks run before anything is saved at that step, so a non-finite
    or exploded state never reaches a checkpoint. With a `divergence_factor`
    (0: only NaN and infinity count), training explodes when its loss
    exceeds that many times the median of the first `reference_steps`
    losses this process saw, or when, at a checkpoint, the norm of the
    trainable weights exceeds that many times its norm at the start (at
    least 1): a prefix blown up to 1e30 can leave the loss finite and flat,
    as attention and LayerNorm saturate. `step` counts global training steps
    on the host, from the step the run resumed at, so no device read is
    needed to know it.

    >>> guard = RunGuard(store=None, divergence_factor=100, reference_steps=2)
    >>> for loss in (2.0, 4.0, 250.0):
    ...     guard.on_train_batch_end(0, {"loss": loss})
    >>> guard.on_train_batch_end(0, {"loss": 301.0})
    Traceback (most recent call last):
    ...
    kprefix.runs.train.Diverged: the training loss exploded to 301 (above 100 x 3, the median of the first 2 steps' losses; --divergence_factor) at step 4. Nothing from that step on was saved; the last good checkpoint is kept. Lower --learning_rate (or check the data) and use a new --workdir, or rerun to resume from the last checkpoint.
    """

    def __init__(self, store, resumed_step=0, every_steps=0, divergence_factor=0.0,
                 reference_steps=10, after_checkpoint=None):
        super().__init__()
        self.store = store
        self.after_checkpoint = after_checkpoint
        self.every_steps = every_steps
        self.divergence_factor = divergence_factor
        self.reference_steps = reference_steps
        self.first_losses = []
        self.start_norm = None
        self.terminate = False
        self.step = self.last_saved = resumed_step

    def on_train_begin(self, logs=None):
        if self.divergence_factor:
            self.start_norm = self.weights_norm()

    def weights_norm(self):
        return math.sqrt(sum(float(np.sum(np.square(np.asarray(w, np.float64))))
                             for w in self.model.trainable_weights))

    def save(self, step, wait=False):
        """Checkpoints `step`; with `wait`, then calls `after_checkpoint(step)`
        (every worker saves at the same steps; not so on SIGTERM)."""
        if step != self.last_saved:
            if self.start_norm is not None:
                norm, bound = self.weights_norm(), self.divergence_factor * max(self.start_norm, 1)
                if not norm <= bound:
                    raise Diverged(step, f"the trainable weights exploded to norm {norm:.6g} "
                                         f"(above {self.divergence_factor:.6g} x "
                                         f"{max(self.start_norm, 1):.6g}, their norm at the "
                                         "start; --divergence_factor)")
            try:
                self.store.save(self.model, step)
            except NonFiniteState as error:
                raise Diverged(step, f"the weights became non-finite ({error})") from None
            self.last_saved = step
            if wait and self.after_checkpoint is not None:
                self.after_checkpoint(step)

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        self.step = step = self.step + 1
        if loss is not None:
            self.check_loss(step, float(loss))
        if self.every_steps and step % self.every_steps == 0:
            self.save(step, wait=True)
        if self.terminate:
            self.save(step)
            raise Preempted(step, self.store.directory)

    def on_epoch_end(self, epoch, logs=None):
        self.save(self.step, wait=True)

    def check_loss(self, step, loss):
        """Raises `Diverged` for a non-finite loss, or one `divergence_factor` too large."""
        if not np.isfinite(loss):
            raise Diverged(step, f"the training loss became {loss}")
        if not self.divergence_factor:
            return
        if len(self.first_losses) < self.reference_steps:
            self.first_losses.append(loss)
            return
        reference = float(np.median(self.first_losses))
        if loss > self.divergence_factor * max(reference, np.finfo(np.float32).tiny):
            raise Diverged(step, f"the training loss exploded to {loss:.6g} (above "
                                 f"{self.divergence_factor:.6g} x {reference:.6g}, the median of "
                                 f"the first {len(self.first_losses)} steps' losses; "
                                 "--divergence_factor)")


class _OnSigterm:
    """Within the block, SIGTERM sets `guard.terminate` instead of killing."""

    def __init__(self, guard):
        self.guard = guard
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.guard.terminate = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


class EpochLine(keras.callbacks.Callback):
    """Prints one plain line per epoch: the progress log for pipes and files.

    Keras' progress bar redraws itself with carriage returns and backspaces;
    `fit` uses this instead when stdout is not a terminal.
    """

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start if self._start is not None else 0.0
        metrics = " - ".join(f"{name}: {float(value):.4f}"
                             for name, value in sorted((logs or {}).items())
                             if name != "learning_rate")
        print(f"Epoch {epoch + 1}/{self.epochs} - {seconds:.1f}s - {metrics}", flush=True)

def _stdout_is_terminal() -> bool:
    """Whether progress bars can redraw in place (False when piped or redirected)."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty())


def fit(model, make_epoch, steps_per_epoch, epochs, workdir, checkpoint_every_steps=0,
        chief=True, verbose=None, log=print, divergence_factor=0.0, adopt_unverified=False,
        after_checkpoint=None):
    """Trains `model` (compiled) to `epochs`, resuming from `workdir` if possible.

    Every process of a cluster calls this; only the `chief` writes
    checkpoints and TensorBoard summaries. Returns the history of the
    epochs run now (a dict of lists) and the global step training resumed
    from (0 for a fresh run). Raises `Diverged` or `Preempted` as described
    in the module docstring. `verbose=None` shows Keras' progress bar on a
    terminal and one plain line per epoch (`EpochLine`) when stdout is piped.
    `divergence_factor` bounds the loss (see `RunGuard`); `adopt_unverified`
    verifies checkpoint files without a manifest by loading them (see
    `CheckpointStore.adopt_unverified`); `after_checkpoint(step)` runs on
    every worker after each checkpoint of an epoch end or of
    `checkpoint_every_steps`.
    """
    store = CheckpointStore(os.path.join(workdir, "checkpoints"), writer=chief)
    if adopt_unverified and chief:
        store.adopt_unverified(model, log=log)
    resumed_step = store.restore(model, log=log)
    first_epoch, offset = divmod(resumed_step, steps_per_epoch)
    if first_epoch >= epochs:
        log(f"Training already finished (step {resumed_step} in {store.directory}).")
    elif resumed_step:
        log(f"Resumed from {store.directory} at step {resumed_step} "
            f"(epoch {first_epoch + 1}, step {offset} of {steps_per_epoch}).")
    guard = RunGuard(store, resumed_step, checkpoint_every_steps, divergence_factor,
                     after_checkpoint=after_checkpoint)
    callbacks = [guard]
    if chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")))
    if verbose is None:
        verbose = "auto" if _stdout_is_terminal() else 0
        if not verbose:
            callbacks.append(EpochLine(epochs))
    history = {}

    def run(dataset, first, last, steps):
        result = model.fit(without_autotuning(dataset), epochs=last, initial_epoch=first,
                           steps_per_epoch=steps, callbacks=callbacks, verbose=verbose,
                           shuffle=False)  # the stream is already in its seeded order
        for key, values in result.history.items():
            history.setdefault(key, []).extend(values)

    with _OnSigterm(guard):
        if offset and first_epoch < epochs:
            # Finish the interrupted epoch from the batch after the checkpoint.
            run(shard_by_data(make_epoch(tf.constant(first_epoch, tf.int64)).skip(offset)),
                first_epoch, first_epoch + 1, steps_per_epoch - offset)
            first_epoch += 1
        if first_epoch < epochs:
            run(epoch_stream(make_epoch, first_epoch, epochs), first_epoch, epochs,
                steps_per_epoch)
    return history, resumed_step
