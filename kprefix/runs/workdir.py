"""The run directory: one run at a time, and the settings it started with.

- `WorkdirLock` keeps a second run off a live workdir and takes over the
  lock of a run that was killed.
- `check_run_config` records the settings a run started with and refuses a
  restart that would silently mix two different runs.
- `check_writable` proves a workdir writable before a run writes into it.

Only the chief (`kprefix.runs.cluster`) holds the lock; files are written
through `kprefix.runs.files`, whole or not at all.

Example:

>>> check_writable("ram://doc/new_run")
>>> WorkdirLock("ram://doc/new_run").check_free()
"""

import json
import os
import socket
import threading
import time
import uuid

import tensorflow as tf

from kprefix.runs.files import exists, is_local, read_json, write_json

gfile = tf.io.gfile


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
        if is_local(self.path):
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
    kprefix.runs.workdir.ChangedRunConfig: ram://doc/cfg was started with other settings: --learning_rate=0.1 (now 0.5). Restart with the recorded values, or use a new --workdir for a new run.
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
