"""Start local `kprefix.launch` workers that form one multi-worker cluster.

Each worker is a separate process on a free localhost port with its own
`TF_CONFIG`; `Cluster` starts them, waits for them with timeouts, kills one,
and always kills what is left when it is closed.

    with Cluster(2, ["--flagfile=configs/quickstart.cfg", "--epochs=1"],
                 workdir=lambda i: f"/tmp/run/w{i}") as cluster:
        codes = cluster.wait(timeout=120)
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_ports(count):
    """`count` distinct TCP ports that were free on localhost a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("localhost", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def tf_config(addresses, index):
    """The `TF_CONFIG` text of worker `index` of a cluster of `addresses`."""
    return json.dumps({"cluster": {"worker": list(addresses)},
                       "task": {"type": "worker", "index": index}})


class Cluster:
    """`num_workers` `python -m kprefix.launch` processes forming one cluster.

    `flags` go to every worker; `workdir(i)` gives worker i's `--workdir`
    (None: the flags name it). Each worker's stdout and stderr go to
    `log_dir/worker-<i>.log` (default: next to its workdir). `wrapper(i)` is
    a command that worker i runs under (e.g. `strace ...`; none by default).
    """

    def __init__(self, num_workers, flags, workdir=None, log_dir=None, env=None, wrapper=None):
        self.num_workers = num_workers
        self.wrapper = wrapper or (lambda index: [])
        self.flags = list(flags)
        self.workdir = workdir
        self.log_dir = Path(log_dir) if log_dir else None
        self.env = dict(env or {})
        self.processes = []
        self.log_paths = []
        self.started_at = None

    def start(self):
        addresses = [f"localhost:{port}" for port in free_ports(self.num_workers)]
        self.processes, self.log_paths = [], []
        for index in range(self.num_workers):
            flags = list(self.flags)
            if self.workdir is not None:
                flags.append(f"--workdir={self.workdir(index)}")
                log_dir = self.log_dir or Path(self.workdir(index)).parent
            else:
                log_dir = self.log_dir or Path(".")
            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"worker-{index}.log"
            env = dict(os.environ, TF_CONFIG=tf_config(addresses, index),
                       TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **self.env)
            with open(log_path, "ab") as log:
                self.processes.append(subprocess.Popen(
                    [*self.wrapper(index), sys.executable, "-m", "kprefix.launch",
                     "--strategy=multi_worker_mirrored", *flags],
                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
            self.log_paths.append(log_path)
        self.started_at = time.monotonic()
        return self

    def log(self, index):
        return self.log_paths[index].read_text(errors="replace")

    def wait_for_log(self, index, text, timeout):
        """Waits until worker `index`'s log contains `text`; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log(index):
                return True
            if self.processes[index].poll() is not None:
                return text in self.log(index)
            time.sleep(0.2)
        return False

    def wait_one(self, index, timeout):
        """Worker `index`'s exit code, or None if it is still running after `timeout`."""
        try:
            return self.processes[index].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait(self, timeout):
        """Every worker's exit code (None for one still running at the deadline)."""
        deadline = time.monotonic() + timeout
        return [self.wait_one(i, max(deadline - time.monotonic(), 0))
                for i in range(self.num_workers)]

    def kill(self, index, sig=signal.SIGKILL):
        self.processes[index].send_signal(sig)

    def close(self):
        """Kills every worker still running and reaps it."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
        for process in self.processes:
            process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.close()
