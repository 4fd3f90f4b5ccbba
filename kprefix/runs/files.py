"""Files that are whole or absent: atomic writes on any TensorFlow filesystem.

Everything goes through `tf.io.gfile`, so a path can be local, `gs://...`
(TPU pods) or TF's in-memory `ram://`. `write_json`, `write_text`,
`write_bytes` and `replace_directory` write atomically: a kill at any moment
leaves the old file (or folder) or the new one, never a part.

Example:

>>> from kprefix.runs.files import read_json, write_json
>>> write_json("ram://doc/results.json", {"accuracy": 0.5, "loss": float("nan")})
>>> read_json("ram://doc/results.json")
{'accuracy': 0.5, 'loss': None}
"""

import ctypes
import json
import math
import os
import uuid

import tensorflow as tf

gfile = tf.io.gfile


def _strict(value):
    """`value` with non-finite floats as None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def write_bytes(path, data):
    """Writes `data` to `path` through a temporary file and a rename.

    On any error (a full disk, say) the temporary file is removed and the
    previous content of `path`, if any, is untouched.
    """
    parent = os.path.dirname(path)
    if parent:
        gfile.makedirs(parent)
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with gfile.GFile(temporary, "wb") as f:
            f.write(data)
        gfile.rename(temporary, path, overwrite=True)
    except BaseException:
        if exists(temporary):
            gfile.remove(temporary)
        raise


def write_text(path, text):
    """Writes `text` (UTF-8) atomically; see `write_bytes`."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path, payload):
    """Writes `payload` as strict JSON (NaN and infinities become null), atomically."""
    text = json.dumps(_strict(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_text(path, text + "\n")


def read_json(path):
    with gfile.GFile(path, "r") as f:
        return json.load(f)


def _exchange_local(a, b):
    """Atomically swaps two local paths (Linux renameat2); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def is_local(path):
    """Whether `path` is on the local filesystem (no `scheme://`)."""
    return "://" not in path


def exists(path):
    """Whether `path` itself exists (TF's `ram://` counts any name it prefixes)."""
    parent, base = os.path.split(path.rstrip("/"))
    return gfile.isdir(parent) and base in {name.rstrip("/") for name in gfile.listdir(parent)}


def _move(source, destination):
    """Renames a folder; where the filesystem cannot (`ram://`), copies it file by file."""
    try:
        gfile.rename(source, destination)
        return
    except tf.errors.OpError:
        if exists(destination):
            raise
    for folder, _, files in gfile.walk(source):
        target = destination + folder[len(source.rstrip("/")):]
        gfile.makedirs(target)
        for name in files:
            gfile.copy(os.path.join(folder, name), os.path.join(target, name))
    gfile.rmtree(source)


def replace_directory(source, destination):
    """Moves the finished folder `source` to `destination`, replacing it.

    Local folders are swapped with one atomic `renameat2(RENAME_EXCHANGE)`,
    so `destination` is always the old or the new folder. Elsewhere
    (`gs://`, which has no atomic folder rename) the old folder is first
    moved aside to `<destination>.old-*`; `recover_directory` puts it back
    if a kill falls between the two moves.
    """
    if not exists(destination):
        _move(source, destination)
        return
    if is_local(destination) and _exchange_local(source, destination):
        gfile.rmtree(source)  # now holds the old content
        return
    aside = f"{destination}.old-{uuid.uuid4().hex[:8]}"
    _move(destination, aside)
    _move(source, destination)
    gfile.rmtree(aside)


def recover_directory(destination):
    """Cleans what a killed `replace_directory` may have left next to `destination`.

    Unfinished `<destination>.partial-*` folders are removed; a folder moved
    aside (`.old-*`) returns to `destination` if that is missing.
    """
    parent, base = os.path.split(destination.rstrip("/"))
    if not gfile.isdir(parent):
        return
    for name in gfile.listdir(parent):
        name = name.rstrip("/")
        path = os.path.join(parent, name)
        if name.startswith(base + ".partial-"):
            gfile.rmtree(path)
        elif name.startswith(base + ".old-"):
            if exists(destination):
                gfile.rmtree(path)
            else:
                gfile.rename(path, destination)


def partial_directory(destination):
    """A fresh sibling folder name to build `destination` in before `replace_directory`."""
    return f"{destination.rstrip('/')}.partial-{uuid.uuid4().hex[:8]}"
