"""Checkpoints of training state: checksummed, atomic, on any TF filesystem.

A checkpoint holds what training changes and nothing else: the trainable
variables, the optimizer's variables (its step counter included), the
random-generator states of dropout layers, and any other variable outside
the frozen backbone. The frozen backbone is rebuilt from `--backbone`, so a
ViT-B checkpoint of prefix-tuning is a few MB, not 350.

Files, under the checkpoint folder, for global step N:

- `ckpt-<N>.npz`: the arrays, keyed by variable path;
- `ckpt-<N>.json`: the manifest (step, SHA-256 and size of the `.npz`),
  written last, so a checkpoint without one was cut short and is ignored.

Loading verifies the checksum. A damaged checkpoint is reported by name
and the next older one is used; nothing is ever deleted but the oldest good
checkpoints beyond `keep`.

Example:

>>> import keras, numpy as np
>>> from kprefix.checkpoints import CheckpointStore
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd", loss="mse")
>>> store = CheckpointStore("ram://doc/checkpoints")
>>> store.save(model, step=7)
'ram://doc/checkpoints/ckpt-7.npz'
>>> _ = model.layers[0].kernel.assign(np.zeros((2, 1)))
>>> store.restore(model)
7
>>> bool(np.any(model.layers[0].kernel.numpy() != 0))
True
"""

import hashlib
import io
import json
import os
import re

import numpy as np
import tensorflow as tf

from kprefix.workdir import exists, write_bytes, write_json

gfile = tf.io.gfile
_NAME = re.compile(r"ckpt-(\d+)\.json")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or none could be read."""


class NonFiniteState(CheckpointError):
    """The training state holds NaN or infinity; it is never written."""


def _key(kind, index, variable):
    # Keras numbers auto-named layers and seed generators per process
    # ("seed_generator_8"), so the numbers are dropped; the position keeps keys unique.
    path = "/".join(re.sub(r"_\d+$", "", part) for part in variable.path.split("/"))
    return f"{kind}/{index:04d}/{path}"


def training_state(model):
    """`{key: variable}` of everything `model.fit` changes (see module doc).

    Keys are stable across processes: position and layer path (without the
    per-process numbering of auto-generated names).
    """
    backbone = getattr(model, "backbone", None)
    frozen = {id(w) for w in backbone.weights if not w.trainable} if backbone is not None else set()
    variables = [v for v in model.variables if id(v) not in frozen]
    state = {_key("model", i, v): v for i, v in enumerate(variables)}
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None:
        if not optimizer.built:
            # Optimizer slots are variables: created in the model's strategy scope.
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        state.update((_key("optimizer", i, v), v) for i, v in enumerate(optimizer.variables))
    return state


class CheckpointStore:
    """The checkpoints of one run (see module doc).

    Args:
        directory: folder on any filesystem `tf.io.gfile` knows.
        keep: how many of the newest good checkpoints to keep.
        writer: False on workers other than the chief: `save` then checks
            the state but writes nothing, so no file is written twice.
    """

    def __init__(self, directory, keep=3, writer=True):
        self.directory = directory
        self.keep = keep
        self.writer = writer

    def _path(self, step, suffix):
        return os.path.join(self.directory, f"ckpt-{step}.{suffix}")

    def steps(self):
        """Steps of the complete (manifest-bearing) checkpoints, oldest first."""
        if not gfile.isdir(self.directory):
            return []
        found = (_NAME.fullmatch(name) for name in gfile.listdir(self.directory))
        return sorted(int(match.group(1)) for match in found if match)

    def save(self, model, step):
        """Writes the training state at global `step`; returns the `.npz` path.

        Raises `NonFiniteState` (writing nothing) when a variable holds NaN or
        infinity, and `CheckpointError` naming the cause when the write fails
        (a full disk, say); earlier checkpoints are untouched either way.
        """
        arrays = {key: np.asarray(variable) for key, variable in training_state(model).items()}
        bad = [key for key, value in arrays.items()
               if value.dtype.kind == "f" and not np.all(np.isfinite(value))]
        if bad:
            raise NonFiniteState(
                f"not writing the checkpoint of step {step}: {', '.join(bad[:3])}"
                f"{' and others' if len(bad) > 3 else ''} hold NaN or infinity."
            )
        path = self._path(step, "npz")
        if not self.writer:
            return path
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
        try:
            write_bytes(path, payload)
            write_json(self._path(step, "json"), {
                "step": step, "file": os.path.basename(path), "bytes": len(payload),
                "sha256": hashlib.sha256(payload).hexdigest(), "variables": len(arrays),
            })
        except (OSError, tf.errors.OpError) as error:
            for leftover in (path, self._path(step, "json")):
                if exists(leftover):
                    gfile.remove(leftover)
            message = getattr(error, "message", None) or str(error)
            older = self.steps()
            raise CheckpointError(
                f"could not write the checkpoint of step {step} to {self.directory}: {message}. "
                + (f"The earlier checkpoints (steps {', '.join(map(str, older))}) are intact; "
                   "free space and rerun the same command to resume."
                   if older else "Free space and rerun the same command.")
            ) from None
        self._prune()
        return path

    def _prune(self):
        for step in self.steps()[:-self.keep]:
            for suffix in ("npz", "json"):
                if exists(self._path(step, suffix)):
                    gfile.remove(self._path(step, suffix))

    def read(self, step):
        """The arrays of checkpoint `step`, checksum verified; else `CheckpointError` saying why."""
        manifest_path, path = self._path(step, "json"), self._path(step, "npz")
        try:
            with gfile.GFile(manifest_path, "r") as f:
                manifest = json.load(f)
            with gfile.GFile(path, "rb") as f:
                payload = f.read()
        except (OSError, ValueError, tf.errors.OpError) as error:
            raise CheckpointError(f"{path} cannot be read ({error})") from None
        digest = hashlib.sha256(payload).hexdigest()
        if len(payload) != manifest.get("bytes") or digest != manifest.get("sha256"):
            raise CheckpointError(
                f"{path} is damaged: its SHA-256 {digest[:12]}... ({len(payload)} bytes) does not "
                f"match the {str(manifest.get('sha256'))[:12]}... ({manifest.get('bytes')} bytes) "
                "recorded when it was written")
        with np.load(io.BytesIO(payload)) as archive:
            return {key: archive[key] for key in archive.files}

    def restore(self, model, log=print):
        """Loads the newest good checkpoint into `model`; returns its step (0 if none).

        Damaged checkpoints are reported through `log` and skipped. Raises
        `CheckpointError` if there are checkpoints but none can be used, or if
        they belong to a different model.
        """
        steps = self.steps()
        problems = []
        for step in reversed(steps):
            try:
                arrays = self.read(step)
            except CheckpointError as error:
                problems.append(str(error))
                log(f"Skipping a damaged checkpoint: {error}. It is left in place.")
                continue
            self._assign(model, arrays, step)
            return step
        if problems:
            raise CheckpointError(
                "no usable checkpoint in " + self.directory + ": " + "; ".join(problems)
                + ". Move them away to start over, or use a new --workdir.")
        return 0

    def _assign(self, model, arrays, step):
        state = training_state(model)
        missing, extra = sorted(set(state) - set(arrays)), sorted(set(arrays) - set(state))
        wrong = [key for key in set(state) & set(arrays)
                 if tuple(state[key].shape) != arrays[key].shape]
        if missing or extra or wrong:
            details = "; ".join(part for part in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(extra[:3])}" if extra else "",
                f"other shapes for {', '.join(sorted(wrong)[:3])}" if wrong else "") if part)
            raise CheckpointError(
                f"checkpoint {self._path(step, 'npz')} is from a different model ({details}). "
                "Use the flags the run started with, or a new --workdir.")
        with model.distribute_strategy.scope():
            for key, variable in state.items():
                variable.assign(arrays[key])
