"""Checkpoints of training state: checksummed, atomic, on any TF filesystem.

A checkpoint holds what training changes and nothing else: the trainable
variables, the optimizer's variables (its step counter included), the
random-generator states of dropout layers, and any other variable outside
the frozen backbone. The frozen backbone is rebuilt from `--backbone`, so a
ViT-B checkpoint of prefix-tuning is a few MB, not 350.

Files, under the checkpoint folder, for global step N:

- `ckpt-<N>.npz`: the arrays, keyed by variable path;
- `ckpt-<N>.json`: the manifest (step, SHA-256 and size of the `.npz`),
  written last; `restore` considers only checkpoints that have one.

Loading verifies the checksum. A checkpoint that cannot be read for any
reason (checksum, truncation, wrong format) is damaged: it is reported by
name and the next older one is used. Nothing is ever deleted but the oldest
verified checkpoints beyond `keep`, and nothing unverified is overwritten:
a damaged checkpoint at a step written again is first renamed to
`ckpt-<N>.npz.damaged`. A `.npz` without a readable manifest (`unverified()`)
is never touched; `adopt_unverified` checks one by loading it into the model.

Example:

>>> import keras, numpy as np
>>> from kprefix.runs.checkpoints import CheckpointStore
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
import zipfile

import numpy as np
import tensorflow as tf

from kprefix.runs.files import exists, write_bytes, write_json

gfile = tf.io.gfile
_NAME = re.compile(r"ckpt-(\d+)\.json")
_ARRAYS = re.compile(r"ckpt-(\d+)\.npz")
# What reading a damaged `.npz` can raise: truncated or not a zip, a member
# that is not an array file, object arrays (which need pickle), ...
_UNREADABLE = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
               tf.errors.OpError)


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
        self._good = set()  # steps verified (or written) by this process

    def _path(self, step, suffix):
        return os.path.join(self.directory, f"ckpt-{step}.{suffix}")

    def steps(self):
        """Steps of the complete (manifest-bearing) checkpoints, oldest first."""
        if not gfile.isdir(self.directory):
            return []
        found = (_NAME.fullmatch(name) for name in gfile.listdir(self.directory))
        return sorted(int(match.group(1)) for match in found if match)

    def unverified(self):
        """Names of `.npz` files no readable manifest vouches for, oldest step first.

        Another run's files, or ones whose manifest was removed or damaged;
        a killed save can leave one too (between the two renames).
        """
        if not gfile.isdir(self.directory):
            return []
        found = []
        for name in gfile.listdir(self.directory):
            match = _ARRAYS.fullmatch(name)
            if match and self._manifest(int(match.group(1))) is None:
                found.append((int(match.group(1)), name))
        return [name for _, name in sorted(found)]

    def _manifest(self, step):
        """The manifest of `step` if it is readable and names its `.npz`, else None."""
        try:
            with gfile.GFile(self._path(step, "json"), "r") as f:
                manifest = json.load(f)
        except (OSError, ValueError, tf.errors.OpError):
            return None
        if not isinstance(manifest, dict) or manifest.get("file") != f"ckpt-{step}.npz" or \
                not isinstance(manifest.get("sha256"), str):
            return None
        return manifest

    def adopt_unverified(self, model, log=print):
        """Verifies each `unverified()` file by loading it into `model`'s state.

        One that loads, matches the model and holds finite values gets its
        manifest and is a checkpoint from then on; any other is reported and
        left in place (never overwritten, see the module doc). Returns the
        adopted steps.
        """
        adopted = []
        for name in self.unverified():
            step = int(_ARRAYS.fullmatch(name).group(1))
            path = self._path(step, "npz")
            try:
                with gfile.GFile(path, "rb") as f:
                    payload = f.read()
                arrays = _load_arrays(payload)
                self._check_matches(model, arrays, step)
                if any(a.dtype.kind == "f" and not np.all(np.isfinite(a))
                       for a in arrays.values()):
                    raise CheckpointError(f"{path} holds NaN or infinity")
            except (CheckpointError, *_UNREADABLE) as error:
                log(f"Not using {path}: it cannot be verified ({error}). It is left in place.")
                continue
            self._write_manifest(step, payload, len(arrays))
            self._good.add(step)
            adopted.append(step)
            log(f"Verified {path} by loading it; it is a checkpoint again.")
        return adopted

    def _write_manifest(self, step, payload, variables):
        write_json(self._path(step, "json"), {
            "step": step, "file": f"ckpt-{step}.npz", "bytes": len(payload),
            "sha256": hashlib.sha256(payload).hexdigest(), "variables": variables,
        })

    def _set_aside(self, step, log=print):
        """Renames the unverified files of `step` to `*.damaged` before `step` is written."""
        for suffix in ("npz", "json"):
            path = self._path(step, suffix)
            if exists(path):
                gfile.rename(path, path + ".damaged", overwrite=True)
                log(f"Kept the damaged {path} as {path}.damaged before writing step {step}.")

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
        if step not in self._good:
            self._set_aside(step)
        try:
            write_bytes(path, payload)
            self._write_manifest(step, payload, len(arrays))
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
        self._good.add(step)
        self._prune()
        return path

    def _verified(self, step):
        if step not in self._good:
            try:
                self.read(step)
            except CheckpointError:
                return False
        return True

    def _prune(self):
        """Deletes the oldest verified checkpoints beyond `keep`; damaged ones stay."""
        good = [step for step in self.steps() if self._verified(step)]
        for step in good[:-self.keep]:
            for suffix in ("npz", "json"):
                if exists(self._path(step, suffix)):
                    gfile.remove(self._path(step, suffix))
            self._good.discard(step)

    def read(self, step):
        """The arrays of checkpoint `step`, checksum verified; else `CheckpointError` saying why."""
        path = self._path(step, "npz")
        manifest = self._manifest(step)
        if manifest is None:
            raise CheckpointError(f"{path} cannot be read (its manifest "
                                  f"{self._path(step, 'json')} is missing or damaged)")
        try:
            with gfile.GFile(path, "rb") as f:
                payload = f.read()
        except (OSError, tf.errors.OpError) as error:
            raise CheckpointError(f"{path} cannot be read ({error})") from None
        digest = hashlib.sha256(payload).hexdigest()
        if len(payload) != manifest.get("bytes") or digest != manifest.get("sha256"):
            raise CheckpointError(
                f"{path} is damaged: its SHA-256 {digest[:12]}... ({len(payload)} bytes) does not "
                f"match the {str(manifest.get('sha256'))[:12]}... ({manifest.get('bytes')} bytes) "
                "recorded when it was written")
        try:
            arrays = _load_arrays(payload)
        except _UNREADABLE as error:
            raise CheckpointError(f"{path} cannot be read ({type(error).__name__}: {error})") \
                from None
        self._good.add(step)
        return arrays

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
        state = self._check_matches(model, arrays, step)
        with model.distribute_strategy.scope():
            for key, variable in state.items():
                variable.assign(arrays[key])

    def _check_matches(self, model, arrays, step):
        """`model`'s training state, if `arrays` fit it; else `CheckpointError`."""
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
        return state


def _load_arrays(payload):
    """The arrays of `.npz` bytes, without pickle; raises one of `_UNREADABLE`."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}
