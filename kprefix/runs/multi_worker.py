"""Training on several workers: the strategy, dead-peer detection, signals.

`make_multi_worker_strategy` builds a `tf.distribute.MultiWorkerMirroredStrategy`
from `TF_CONFIG` whose failures are bounded in time:

- the coordination service's heartbeat marks a worker dead after
  `peer_timeout_seconds` without a heartbeat, and every collective waits at
  most that long (`CommunicationOptions(timeout_seconds=...)`), so a survivor
  stops instead of waiting forever for a dead peer;
- evaluation, export and checkpointing take as long as they take: before
  them `lengthen_collective_timeout` and `wait_for_peers` give the peers a
  separate, longer bound (`--phase_timeout_seconds`), while the heartbeat
  still finds a dead peer within `peer_timeout_seconds`;
- `exit_on_signals` makes SIGTERM and SIGINT end the process even while its
  main thread is blocked inside a collective, where Python signal handlers
  cannot run;
- `describe_peer_failure` turns TensorFlow's collective errors into a one-line
  message naming the lost worker and how to resume.

Example (one worker; a real cluster sets `TF_CONFIG` on every worker):

>>> from kprefix.runs.multi_worker import cluster_from_tf_config
>>> cluster_from_tf_config('{"cluster": {"worker": ["host-a:2222", "host-b:2222"]},'
...                        ' "task": {"type": "worker", "index": 1}}')
(['host-a:2222', 'host-b:2222'], 'worker', 1)
"""

import json
import os
import re
import signal
import sys
import threading
import time

import tensorflow as tf

# Keras's first `fit`/`evaluate` under a strategy reduces one input batch to
# learn its shapes; with several workers that reduction receives a nested
# structure, which MultiWorkerMirroredStrategy cannot reduce.
_KERAS_SHAPE_BUILD_PATCHED = False


def cluster_from_tf_config(tf_config=None):
    """`(worker addresses, task type, task index)` from `TF_CONFIG`.

    `tf_config` is the JSON text (default: the environment variable). A
    missing or malformed `TF_CONFIG` raises a `ValueError` saying what to set.
    """
    text = os.environ.get("TF_CONFIG", "") if tf_config is None else tf_config
    if not text:
        raise ValueError(
            "--strategy=multi_worker_mirrored needs TF_CONFIG, e.g. "
            '\'{"cluster": {"worker": ["host0:port", "host1:port"]}, '
            '"task": {"type": "worker", "index": 0}}\' (launch/multi_worker.sh sets it).')
    try:
        config = json.loads(text)
        cluster = config["cluster"]
        task_type, task_index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not valid ({error!r}): {text}") from None
    workers = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    return workers, task_type, task_index


def make_multi_worker_strategy(peer_timeout_seconds):
    """A MultiWorkerMirroredStrategy whose dead peers are detected in bounded time.

    Every training collective waits at most `peer_timeout_seconds`, and the
    coordination service declares a worker dead after that long without a
    heartbeat. Both must exceed the slowest step of a healthy worker
    (compilation included): the first step's collectives start only when every
    worker has compiled. Waits outside training steps, for a peer that is
    alive but busy (the chief writing a checkpoint or an export, evaluation),
    get a longer bound: see `lengthen_collective_timeout` and `wait_for_peers`.
    """
    if peer_timeout_seconds <= 0:
        raise ValueError(f"--peer_timeout_seconds={peer_timeout_seconds} must be positive.")
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    cluster_spec = resolver.cluster_spec()
    timeout_ms = int(peer_timeout_seconds * 1000)
    if cluster_spec.jobs and context.context().coordination_service is None:
        # The strategy configures the coordination service itself unless it
        # already is; done here to set the heartbeat timeout.
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2 as pb
        jobs = [pb.CoordinatedJob(name=job, num_tasks=cluster_spec.num_tasks(job))
                for job in ("chief", "worker") if job in cluster_spec.jobs]
        context.context().configure_coordination_service(
            service_type="standalone",
            service_leader=multi_worker_util.coordination_leader(cluster_spec),
            heartbeat_timeout_in_ms=timeout_ms,
            coordinated_jobs=jobs,
        )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver,
        communication_options=tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=float(peer_timeout_seconds)),
    )
    patch_keras_shape_build()
    # After the strategy: its coordination service installs a SIGTERM handler
    # of its own (for preemption notices) when it starts.
    if threading.current_thread() is threading.main_thread():
        exit_on_signals()
    return strategy


def _several_workers(strategy):
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def lengthen_collective_timeout(strategy, seconds):
    """Collectives that `strategy` builds from now on wait up to `seconds` for a peer.

    For the phases after training (evaluation, export), whose functions are
    traced after this call: one worker may reach a collective long before a
    slower one, which is still alive (its heartbeat says so). A dead peer is
    still found by the heartbeat. Does nothing outside a multi-worker cluster.

    >>> lengthen_collective_timeout(tf.distribute.get_strategy(), 3600)
    """
    if not _several_workers(strategy):
        return
    extended = strategy.extended
    options = extended._communication_options.merge(
        tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(seconds)))
    extended._communication_options = options
    for ops in (extended._cross_device_ops, extended._host_cross_device_ops):
        ops._options = options


def wait_for_peers(strategy, name, seconds):
    """Waits at most `seconds` until every worker has called this with `name`.

    After a checkpoint, so that no worker waits inside a training collective
    (bounded by the short peer timeout) while the chief is still writing.
    A dead peer ends the wait early (the barrier fails when the heartbeat
    finds a worker unhealthy). Does nothing outside a multi-worker cluster.

    >>> wait_for_peers(tf.distribute.get_strategy(), "checkpoint-1", 60)
    """
    if not _several_workers(strategy):
        return
    from tensorflow.python.eager import context

    context.context().wait_at_barrier(f"kprefix-{name}", int(seconds * 1000))


def patch_keras_shape_build():
    """Lets Keras build a model from a multi-worker batch (idempotent).

    Keras's TensorFlow trainer learns input shapes on the first `fit` or
    `evaluate` by `strategy.reduce("MEAN", batch, axis=None)` over the whole
    nested batch. MultiWorkerMirroredStrategy with more than one worker cannot
    reduce a nested structure ("Attempt to convert a value (PerReplica...)"),
    and only the shapes are needed, so this takes each input's first local
    replica instead: no communication, same shapes.
    """
    global _KERAS_SHAPE_BUILD_PATCHED
    if _KERAS_SHAPE_BUILD_PATCHED:
        return
    from keras.src import tree
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, it in iterator:
                batch = next(it)
                data_batch = tree.map_structure(
                    lambda v: (strategy.experimental_local_results(v)[0]
                               if isinstance(v, tf.distribute.DistributedValues) else v),
                    batch)
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    trainer_module = sys.modules[TensorFlowTrainer.__module__]
    keras_reduce = trainer_module.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        # Keras reduces each step's logs (scalars) across workers with
        # `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars; the
        # mean over replicas is `axis=None`, as Keras does on one worker.
        if (reduction in ("auto", "mean", "sum")
                and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            op = "SUM" if reduction == "sum" else "MEAN"
            return tf.nest.map_structure(
                lambda v: (strategy.reduce(op, v, axis=None)
                           if isinstance(v, tf.distribute.DistributedValues) else v),
                values)
        return keras_reduce(values, strategy, reduction)

    trainer_module.reduce_per_replica = reduce_per_replica
    _KERAS_SHAPE_BUILD_PATCHED = True


_PEER = re.compile(r"/job:(\w+)/(?:replica:\d+/)?task:(\d+)")
# What TensorFlow raises in a collective whose peer died or stopped answering.
PEER_FAILURE_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                       tf.errors.AbortedError, tf.errors.CancelledError,
                       tf.errors.FailedPreconditionError, tf.errors.InternalError)


def describe_peer_failure(error, tf_config=None):
    """A one-line message naming the lost worker(s) of a multi-worker `error`.

    Names the tasks TensorFlow reports other than this one; when it names
    none (a plain collective timeout), names every other worker of the cluster.

    >>> error = tf.errors.UnavailableError(None, None, "tasks are unhealthy "
    ...     "(stopped sending heartbeats):\\n/job:worker/replica:0/task:1")
    >>> describe_peer_failure(error, '{"cluster": {"worker": ["a:1", "b:2"]},'
    ...                              ' "task": {"type": "worker", "index": 0}}')
    'Lost worker 1 (b:2): a peer of this worker (0) died or stopped responding (UnavailableError). Restart all workers with the same flags to resume from the last checkpoint.'
    """
    workers, task_type, task_index = cluster_from_tf_config(tf_config)
    me = (task_type, task_index)
    named = sorted({(job, int(task)) for job, task in _PEER.findall(str(error))} - {me})
    if not named:
        named = [("worker", i) for i in range(len(workers)) if ("worker", i) != me]

    def address(job, index):
        addresses = workers if job == "worker" else []
        return f" ({addresses[index]})" if index < len(addresses) else ""

    lost = ", ".join(f"{job} {index}{address(job, index)}" for job, index in named)
    return (f"Lost {lost}: a peer of this {task_type} ({task_index}) died or stopped "
            f"responding ({type(error).__name__}). Restart all workers with the same "
            "flags to resume from the last checkpoint.")


def exit_on_signals(grace_seconds=10.0, signals=(signal.SIGTERM, signal.SIGINT)):
    """Makes `signals` end the process even while it is blocked in TensorFlow.

    A Python signal handler runs only when the main thread returns to the
    interpreter, which never happens while it waits on a collective whose peer
    is gone. This installs handlers that raise `SystemExit` in the main thread
    as usual, and a watchdog thread, woken by the signal itself through
    `signal.set_wakeup_fd`, that ends the process with exit code 128 + signal
    when it is still alive `grace_seconds` later. Must be called from the main
    thread; returns the previous handlers.
    """
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    previous = {}

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    for sig in signals:
        previous[sig] = signal.signal(sig, handler)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watchdog():
        signum = None
        while signum not in signals:  # other handled signals wake it too
            signum = os.read(read_fd, 1)[0]
        time.sleep(grace_seconds)
        sys.stderr.write(f"Exiting on signal {signum}: the process did not stop within "
                         f"{grace_seconds:g} seconds (blocked in TensorFlow).\n")
        sys.stderr.flush()
        os._exit(128 + signum)

    threading.Thread(target=watchdog, name="exit-on-signals", daemon=True).start()
    return previous


def exit_after(seconds, code, message=""):
    """Ends the process with `code` in `seconds` unless it has exited by then.

    For a failed multi-worker run, whose normal exit can wait on peers that
    are gone.
    """
    def leave():
        time.sleep(seconds)
        sys.stderr.write(message + "\n" if message else "")
        sys.stderr.flush()
        os._exit(code)

    threading.Thread(target=leave, name="exit-after", daemon=True).start()


def report_failure_to_peers(error):
    """Tells every worker of the cluster that this one failed with `error`.

    Their collectives abort at once with a message naming this worker, instead
    of waiting for its heartbeat to time out. Does nothing outside a cluster.
    """
    from tensorflow.python.eager import context

    try:
        _, task_type, task_index = cluster_from_tf_config()
        context.context().report_error_to_cluster(
            tf.errors.ABORTED,
            f"{task_type} {task_index} failed: {type(error).__name__}: {error}"[:2000])
    except Exception:  # no cluster, or the service is already gone
        pass


def as_one_of_several_workers(run):
    """`run()` as one worker of several: a dead peer ends the run with a
    message naming it (the strategy also makes SIGTERM/SIGINT end a blocked
    worker, see `exit_on_signals`)."""
    from absl import app

    try:
        return run()
    except PEER_FAILURE_ERRORS as error:
        detail = [line for line in str(error).splitlines() if line.strip() and not line.startswith(
            (" ", "\t", "Graph execution error", "Detected at", "The error could be"))]
        print("TensorFlow: " + " ".join(detail[:3]), file=sys.stderr)
        message = describe_peer_failure(error)
        # TensorFlow's exit waits on a shutdown barrier that the dead peer
        # never reaches; give exit handlers a few seconds, then leave.
        exit_after(seconds=5, code=1, message=message)
        sys.exit(message)
    except BaseException as error:
        # Any other failure (preemption included): tell the peers at once
        # (instead of after --peer_timeout_seconds) and leave promptly.
        report_failure_to_peers(error)
        # A preempted run (kprefix.runs.train.Preempted) carries its own status.
        code = (error.exit_code if isinstance(getattr(error, "exit_code", None), int)
                else error.code if isinstance(error, SystemExit) and isinstance(error.code, int)
                else 2 if isinstance(error, app.UsageError) else 1)
        exit_after(seconds=5, code=code)
        raise
