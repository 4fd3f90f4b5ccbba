"""Pieces the side-by-side peer benchmarks share: worker processes, profiles, the CPU.

A peer benchmark runs each side in its own process, which warms up, prints
`READY {json}` and then answers one command per stdin line (`RATE ...`,
`PROFILE {json}`, and `PEAK mb` at `exit`). `Worker` drives such a process
from the coordinating one.

The profilers give op time by op type of what ran between `start` and
`stop`: TensorFlow's profiler on its compute threads, `torch.profiler` for
PyTorch. `op_breakdown` groups it into matrix products, softmax and loss,
and the rest.

Example:

>>> from peer_workers import op_breakdown
>>> op_breakdown({"MatMul": 2.0, "Mul": 0.5, "Softmax": 0.25}, wall=3.0)["matmul"]
2.0
"""

import collections
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

# Op types that are matrix products (TensorFlow's oneDNN kernels, torch's aten ops).
MATMUL_OP = re.compile(r"MatMul|Einsum|Conv2D|^aten::(mm|addmm|bmm|baddbmm|addbmm|"
                       r"convolution|_convolution|mkldnn_convolution|linear)$")
LOSS_OP = re.compile(r"Softmax|CrossEntropy|^aten::(_log_softmax|_softmax|nll_loss|cross_entropy)")
# A TensorFlow op's profiler event is named `scope/name:Type`.
TF_OP_EVENT = re.compile(r"^(.*[^:]):([A-Za-z_][A-Za-z0-9_]*)$")


def peak_mb():
    """This process's peak resident memory, in MB.

    Linux's `VmHWM`, the high-water mark of this program's own address space.
    Not `ru_maxrss`: a child started by a large process inherits that
    process's resident size at the fork in its `ru_maxrss`, so a worker
    started after the parity check would report the coordinator's size.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds():
    """User + system CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def op_breakdown(seconds_by_type, wall, top=6):
    """`{"wall", "matmul", "softmax_loss", "other_ops", "top": [(type, s), ...], "calls"}`."""
    matmul = sum(t for k, t in seconds_by_type.items() if MATMUL_OP.search(k))
    loss = sum(t for k, t in seconds_by_type.items() if LOSS_OP.search(k))
    largest = sorted(seconds_by_type.items(), key=lambda item: -item[1])[:top]
    return {"wall": wall, "matmul": matmul, "softmax_loss": loss,
            "other_ops": sum(seconds_by_type.values()) - matmul - loss, "top": largest}


class TensorFlowProfile:
    """Op time by type between `start()` and `stop()` (TensorFlow's profiler)."""

    def start(self):
        import tensorflow as tf

        self._logdir = tempfile.TemporaryDirectory()
        tf.profiler.experimental.start(self._logdir.name)
        self._start = time.perf_counter()

    def stop(self):
        """Returns `(op_breakdown, {op type: calls})`."""
        import tensorflow as tf
        from tensorflow.tsl.profiler.protobuf import xplane_pb2

        wall = time.perf_counter() - self._start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        [path] = glob.glob(os.path.join(self._logdir.name, "**", "*.xplane.pb"), recursive=True)
        with open(path, "rb") as trace:
            space.ParseFromString(trace.read())
        self._logdir.cleanup()
        seconds, calls = collections.Counter(), collections.Counter()
        for plane in space.planes:
            for line in plane.lines:
                if line.name.startswith("tf_Compute"):
                    for event in line.events:
                        match = TF_OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                        if match:
                            seconds[match.group(2)] += event.duration_ps / 1e12
                            calls[match.group(2)] += 1
        return op_breakdown(seconds, wall), dict(calls)


def profile_torch(run):
    """`(op_breakdown, {op type: calls})` of `run()`, by op self time (torch.profiler)."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    events = [e for e in profiler.key_averages() if e.self_cpu_time_total > 0]
    return (op_breakdown({e.key: e.self_cpu_time_total / 1e6 for e in events}, wall),
            {e.key: e.count for e in events})


def cpu_model():
    """The CPU's model name, as /proc/cpuinfo or `platform` give it."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def spread(values):
    """`median (min-max)` of `values`."""
    return f"{statistics.median(values):9.2f} ({min(values):.2f}-{max(values):.2f})"


class Worker:
    """One side's process, started with `command`, driven line by line."""

    def __init__(self, side, command, show_logs=False):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.side = side
        self.stderr = None if show_logs else open(os.devnull, "w")
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, env=env)
        self.info = json.loads(self._answer("READY"))

    def _answer(self, tag):
        for line in self.process.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]
        sys.exit(f"The {self.side} side stopped (exit {self.process.wait()}); rerun with "
                 "--worker_logs to see why.")

    def ask(self, command, tag):
        """Sends `command`, returns the text of the answer tagged `tag`."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._answer(tag)

    def close(self):
        """Ends the process; returns its peak memory in MB."""
        peak = float(self.ask("exit", "PEAK"))
        self.process.wait()
        return peak
