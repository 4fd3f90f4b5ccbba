"""The run directory: one writer, one run at a time, files that are whole or absent.

Everything here goes through `tf.io.gfile`, so a workdir can be a local
folder, `gs://bucket/run` (TPU pods) or TF's in-memory `ram://` filesystem.

- `this_task()` says which process of a cluster this is; only the chief
  writes (checkpoints, summaries, results, exports).
- `WorkdirLock` keeps a second run off a live workdir and takes over the
  lock of a run that was killed.
- `check_run_config` records the settings a run started with and refuses a
  restart that would silently mix two different runs.
- `write_json`, `write_text` and `replace_directory` write atomically: a kill
  at any moment leaves the old file (or folder) or the new one.

Example:

>>> import json, tensorflow as tf
>>> from kprefix.workdir import read_json, write_json
>>> write_json("ram://doc/results.json", {"accuracy": 0.5, "loss": float("nan")})
>>> read_json("ram://doc/results.json")
{'accuracy': 0.5, 'loss': None}
"""

import ctypes
import dataclasses
import json
import math
import os
import socket
import threading
import time
import uuid

import tensorflow as tf

gfile = tf.io.gfile


# --- Which process writes --------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in a cluster (`TF_CONFIG`, TPU pod host id)."""

    type: str = "chief"
    index: int = 0
    is_chief: bool = True

    @property
    def name(self):
        return f"{self.type}:{self.index}"


def this_task(environ=None):
    """The `Task` of this process, read from the environment.

    Multi-worker runs name it in `TF_CONFIG` (the chief is the `chief` task,
    or worker 0 when there is none, as in TensorFlow's multi-worker
    conventions). TPU pod hosts name it in `TPU_WORKER_ID` or
    `CLOUD_TPU_TASK_ID`; host 0 writes. Anything else is a single chief.

    >>> this_task({"TF_CONFIG": '{"cluster": {"worker": ["a:1", "b:2"]}, '
    ...            '"task": {"type": "worker", "index": 1}}'})
    Task(type='worker', index=1, is_chief=False)
    """
    environ = os.environ if environ is None else environ
    config = json.loads(environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if task:
        kind, index = task.get("type", "worker"), int(task.get("index", 0))
        has_chief = bool(config.get("cluster", {}).get("chief"))
        chief = kind == "chief" or (kind == "worker" and index == 0 and not has_chief)
        return Task(kind, index, chief)
    for variable in ("TPU_WORKER_ID", "CLOUD_TPU_TASK_ID"):
        if environ.get(variable, "").strip().isdigit():
            index = int(environ[variable])
            return Task("tpu_host", index, index == 0)
    return Task()


# --- Atomic files ----------------------------------------------------------

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


def _is_local(path):
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
    if _is_local(destination) and _exchange_local(source, destination):
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


def check_writable(workdir):
    """Creates `workdir` and proves it writable; raises `OSError` naming it otherwise."""
    probe = os.path.join(workdir, f".write-test-{uuid.uuid4().hex[:8]}")
    try:
        gfile.makedirs(workdir)
        with gfile.GFile(probe, "w") as f:
            f.write("ok")
        gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        message = getattr(error, "message", None) or str(error)
        raise OSError(f"cannot write to {workdir}: {message}") from None


# --- One run per workdir ---------------------------------------------------

class WorkdirBusy(RuntimeError):
    """Another live run holds the workdir's lock."""


def _process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class WorkdirLock:
    """`<workdir>/run.lock`: held by the chief while a run is live.

    The lock file names its holder (host, pid, start) and carries a
    heartbeat refreshed every `heartbeat_seconds`. A second run refuses with
    `WorkdirBusy` naming the holder. A lock is stale, and is taken over with
    a notice, when its process is gone (same host) or its heartbeat is
    older than `stale_seconds` (any host, for shared filesystems).

    >>> with WorkdirLock("ram://doc/run") as lock:
    ...     exists("ram://doc/run/run.lock")
    True
    >>> exists("ram://doc/run/run.lock")
    False
    """

    def __init__(self, workdir, heartbeat_seconds=30.0, stale_seconds=300.0):
        self.path = os.path.join(workdir, "run.lock")
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_seconds = stale_seconds
        self.token = uuid.uuid4().hex
        self.took_over = None
        self._stop = threading.Event()
        self._thread = None

    def _record(self, started):
        return {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                "started": started, "heartbeat": time.time()}

    def _stale(self, holder):
        if holder.get("host") == socket.gethostname() and not _process_alive(holder.get("pid", -1)):
            return True
        return time.time() - float(holder.get("heartbeat", 0)) > self.stale_seconds

    def _read(self):
        try:
            return read_json(self.path)
        except (json.JSONDecodeError, tf.errors.OpError, OSError):
            return None  # vanished or half-written by a killed run: treat as stale

    def check_free(self):
        """Raises `WorkdirBusy` if a live run holds the lock; returns a stale holder or None.

        Reads only: a run checks this before it writes anything.
        """
        holder = self._read() if exists(self.path) else None
        if holder is not None and holder.get("token") != self.token and not self._stale(holder):
            raise WorkdirBusy(
                f"{os.path.dirname(self.path)} is in use by a live run (host {holder.get('host')}, "
                f"pid {holder.get('pid')}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(holder.get('started', 0)))}). "
                "Wait for it to finish, stop it, or use another --workdir."
            )
        return holder

    def acquire(self):
        started = time.time()
        gfile.makedirs(os.path.dirname(self.path))
        if _is_local(self.path):
            try:  # O_EXCL: two runs racing for a fresh lock cannot both win
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                with os.fdopen(fd, "w") as f:
                    json.dump(self._record(started), f)
                self._start_heartbeat(started)
                return self
            except FileExistsError:
                pass
        self.took_over = self.check_free()
        write_json(self.path, self._record(started))
        if self._read().get("token") != self.token:  # lost a race on a non-local filesystem
            raise WorkdirBusy(f"another run took {self.path} at the same moment; "
                              "use another --workdir.")
        self._start_heartbeat(started)
        return self

    def _start_heartbeat(self, started):
        def beat():
            while not self._stop.wait(self.heartbeat_seconds):
                try:
                    write_json(self.path, self._record(started))
                except (OSError, tf.errors.OpError):
                    pass  # a missed heartbeat only makes the lock look older
        self._thread = threading.Thread(target=beat, name="workdir-lock-heartbeat", daemon=True)
        self._thread.start()

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._read() if exists(self.path) else None
        if holder is not None and holder.get("token") == self.token:
            gfile.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# --- The same run on restart -----------------------------------------------

class ChangedRunConfig(ValueError):
    """A restart asked for settings other than the ones the run started with."""


def check_run_config(workdir, config, growable=("epochs",), record=True):
    """Records `config` in `<workdir>/run_config.json`, or checks it against the record.

    With `record=False` it only checks, and writes nothing.

    `config` maps flag names to values. A restart must use the recorded
    values, except that the flags in `growable` may increase. Raises
    `ChangedRunConfig` naming every flag that differs. Returns the names of
    grown flags (the record is updated to the new values).

    >>> check_run_config("ram://doc/cfg", {"learning_rate": 0.1, "epochs": 2})
    []
    >>> check_run_config("ram://doc/cfg", {"learning_rate": 0.1, "epochs": 3})
    ['epochs']
    >>> check_run_config("ram://doc/cfg", {"learning_rate": 0.5, "epochs": 3})
    Traceback (most recent call last):
    ...
    kprefix.workdir.ChangedRunConfig: ram://doc/cfg was started with other settings: --learning_rate=0.1 (now 0.5). Restart with the recorded values, or use a new --workdir for a new run.
    """
    path = os.path.join(workdir, "run_config.json")
    config = json.loads(json.dumps(config, default=str))  # compare as recorded
    if not exists(path):
        if record:
            write_json(path, config)
        return []
    recorded = read_json(path)
    changed, grown = [], []
    for name in sorted(set(recorded) | set(config)):
        before, now = recorded.get(name), config.get(name)
        if before == now:
            continue
        if name in growable and before is not None and now is not None and now > before:
            grown.append(name)
        else:
            changed.append(f"--{name}={before} (now {now})")
    if changed:
        raise ChangedRunConfig(
            f"{workdir} was started with other settings: {', '.join(changed)}. Restart with "
            "the recorded values, or use a new --workdir for a new run."
        )
    if grown and record:
        write_json(path, config)
    return grown
