"""Runs many small launches side by side: a few single-threaded processes beat one wide one.

The replication's models are tiny, so one launch keeps two cores only half
busy (small matrix products, Python and tf.data overhead, process start-up).
`LaunchPool(parallel=N)` runs up to N launches at once, each with
`cpu_count // N` TensorFlow intra- and inter-op threads, so the cores stay
busy without being oversubscribed. On a 2-core CPU, two single-threaded
launches of the replication's ViT take the wall time of one two-threaded one.

Every launch is still `python -m kprefix.launch ...` in its own workdir
(`kprefix.sweep.run_locally`); a run whose `results.json` exists is skipped,
and a diverged run (its `results.json` says so) counts as finished. After a
failed run no new run starts, the running ones finish, and the failure is
raised.

Example:

>>> pool = LaunchPool("python -m kprefix.launch", parallel=1)
>>> pool.map(lambda x: x * x, [1, 2, 3])
[1, 4, 9]
"""

import concurrent.futures
import os
import threading

from kprefix import sweep


def default_parallel_runs():
    """One launch per CPU core on a machine without accelerators, else one."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return 1
    return max(1, os.cpu_count() or 1)


class LaunchPool:
    """At most `parallel` launches at once; `on_run(run)` is told of each run started."""

    def __init__(self, launcher, parallel=1, on_run=None):
        if parallel < 1:
            raise ValueError(f"parallel={parallel}: use 1 or more launches at once.")
        self.launcher = launcher
        self.parallel = parallel
        self.on_run = on_run
        self._slots = threading.Semaphore(parallel)
        self._failed = threading.Event()
        self.env = None
        if parallel > 1:
            threads = str(max(1, (os.cpu_count() or 1) // parallel))
            self.env = {**os.environ, "TF_NUM_INTRAOP_THREADS": threads,
                        "TF_NUM_INTEROP_THREADS": threads}

    def run(self, run, launch_args):
        """Runs `run` unless it is finished; blocks until a slot is free and it ends."""
        if run.is_finished():
            return
        with self._slots:
            if self._failed.is_set():
                raise sweep.SweepError(f"Not started after an earlier failure: {run.workdir}")
            if self.on_run is not None:
                self.on_run(run)
            try:
                sweep.run_locally(run, run.command(self.launcher, launch_args), env=self.env)
            except sweep.SweepError:
                # A diverged run writes results.json ("status": "diverged") and
                # ranks last in its selection; anything else is a real failure.
                if not run.is_finished():
                    self._failed.set()
                    raise

    def run_all(self, runs, launch_args):
        """Runs every unfinished run of `runs`, up to `parallel` at once."""
        self.map(lambda run: self.run(run, launch_args), runs)

    def map(self, function, items):
        """`[function(item) for item in items]`, up to `parallel` calls at once (in
        threads; launches inside them share this pool's slots). The first error is
        raised once every started call has ended."""
        items = list(items)
        if self.parallel == 1 or len(items) < 2:
            return [function(item) for item in items]
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as executor:
            futures = [executor.submit(function, item) for item in items]
            concurrent.futures.wait(futures)
        return [future.result() for future in futures]
