"""Several workers: training matches one worker, dead peers fail fast, restarts resume.

The cluster tests start real `kprefix.launch` processes on localhost ports
(see `tests/multiworker.py`).
"""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from kprefix.runs import multi_worker, train
from kprefix.runs.checkpoints import CheckpointStore
from multiworker import REPO, Cluster

# The quickstart model and data, shortened to stay fast.
QUICK = ["--flagfile=configs/quickstart.cfg", "--warmup_epochs=1"]
PEER_TIMEOUT = 15  # seconds; far above a healthy step (~0.1 s) on a loaded 2-core machine
EXIT_MARGIN = 30  # seconds to notice the abort, shut down and exit


def _final_state(workdir):
    store = CheckpointStore(os.path.join(workdir, "checkpoints"))
    return store.read(store.steps()[-1])


def _written_paths(trace_file, root):
    """Paths under `root` that a traced process created, opened for writing,
    renamed, or made as folders (strace output)."""
    written = set()
    for line in open(trace_file, errors="replace"):
        if not re.match(r"\d+\s+(openat|rename|renameat2?|mkdir|mkdirat)\(", line):
            continue
        if line.split("(", 1)[0].split()[-1].startswith("open") and not re.search(
                r"O_WRONLY|O_RDWR|O_CREAT", line):
            continue
        written.update(path for path in re.findall(r'"([^"]+)"', line)
                       if path.startswith(root))
    return written


@pytest.mark.large
def test_two_workers_train_evaluate_export_like_one_worker_with_one_writer(tmp_path):
    """Both workers share one --workdir, as on a pod; only the chief writes there."""
    if shutil.which("strace") is None:
        pytest.skip("strace is needed to see which process writes which file")
    workdir = str(tmp_path / "run")
    trace = tmp_path / "worker1.strace"
    # XLA requested explicitly (on CPU it is off unless asked for).
    flags = QUICK + ["--epochs=1", "--jit_compile", f"--workdir={workdir}"]
    tracer = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", str(trace),
              "-e", "trace=openat,rename,renameat,renameat2,mkdir,mkdirat"]
    # The one-worker reference run (default strategy, same global batch and
    # seed) needs nothing from the cluster: it runs beside it.
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        single = pool.submit(
            subprocess.run, [sys.executable, "-m", "kprefix.launch", *QUICK, "--epochs=1",
                             "--noexport", f"--workdir={tmp_path / 'single'}"],
            cwd=REPO, env=env, check=True, timeout=300, capture_output=True)
        with Cluster(2, flags, log_dir=tmp_path,
                     wrapper=lambda i: tracer if i == 1 else []) as cluster:
            codes = cluster.wait(timeout=300)
            logs = [cluster.log(0), cluster.log(1)]
        single.result()
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert "--jit_compile is off" in logs[0]  # XLA cannot compile CPU collectives
    assert "the chief wrote the results" in logs[1]

    # One writer: worker 1 wrote nothing under the workdir but its own
    # temporary copy of the export (and the writability probe), all removed.
    by_worker_1 = _written_paths(trace, workdir)
    assert by_worker_1, "the trace shows no file activity: is strace working?"
    own = [p for p in by_worker_1 if os.path.relpath(p, workdir).split(os.sep)[0] not in
           (".", "") and not re.match(r"(export\.partial-|\.write-test-)",
                                      os.path.relpath(p, workdir))]
    assert not own, f"worker 1 wrote into the chief's files: {sorted(own)[:5]}"
    leftovers = [name for name in os.listdir(workdir)
                 if re.search(r"\.partial-|\.old-|\.tmp-|\.write-test-", name)]
    assert not leftovers and sorted(os.listdir(workdir)) == [
        "checkpoints", "export", "results.json", "run_config.json", "tensorboard"]
    assert not [n for n in os.listdir(os.path.join(workdir, "checkpoints")) if ".tmp-" in n]

    # The one-worker run's results (default strategy: XLA on).
    one = json.loads((tmp_path / "single" / "results.json").read_text())
    two = json.loads(open(os.path.join(workdir, "results.json")).read())
    # Every step sees the same global batch as on one worker; only the order
    # of float additions differs. So weights agree to float32 rounding, and
    # the accuracy on the 359 test digits within one digit.
    assert abs(two["eval_accuracy"] - one["eval_accuracy"]) <= 1 / 359 + 1e-9
    reference = _final_state(str(tmp_path / "single"))
    for name, value in _final_state(workdir).items():
        np.testing.assert_allclose(value, reference[name], atol=1e-5, err_msg=name)
    assert os.path.exists(os.path.join(workdir, "export", "saved_model.pb"))


@pytest.mark.large
def test_dead_peer_fails_fast_and_a_restart_resumes(tmp_path):
    workdir = str(tmp_path / "run")
    flags = QUICK + ["--epochs=30", "--noexport", f"--peer_timeout_seconds={PEER_TIMEOUT}",
                     f"--workdir={workdir}"]
    with Cluster(2, flags, log_dir=tmp_path) as cluster:
        # Epoch 2 has begun: the checkpoint of epoch 1 is written.
        assert cluster.wait_for_log(0, "Epoch 1/", timeout=240), cluster.log(0)[-3000:]
        # A stopped process keeps its sockets open, like a hung or unreachable
        # machine: only the heartbeat and collective timeouts can detect it.
        cluster.kill(1, signal.SIGSTOP)
        stopped = time.monotonic()
        code = cluster.wait_one(0, timeout=PEER_TIMEOUT + EXIT_MARGIN)
        waited = time.monotonic() - stopped
        log = cluster.log(0)
    assert code not in (0, None), f"worker 0 still running after {waited:.0f} s"
    assert "Lost worker 1 (localhost:" in log, log[-3000:]
    assert "Restart all workers" in log

    # Restart both: they resume from the chief's newest checkpoint. While
    # worker 1 hangs and the peer timeout is long, SIGTERM still ends worker 0.
    flags = QUICK + ["--epochs=30", "--noexport", "--peer_timeout_seconds=600",
                     f"--workdir={workdir}"]
    with Cluster(2, flags, log_dir=tmp_path / "restart") as cluster:
        assert cluster.wait_for_log(0, "Resumed from", timeout=240), cluster.log(0)[-3000:]
        assert cluster.wait_for_log(1, "Resumed from", timeout=60)
        # A full epoch after the resumed one has ended: training goes on.
        assert cluster.wait_for_log(0, "Epoch 3/", timeout=120), cluster.log(0)[-3000:]
        cluster.kill(1, signal.SIGSTOP)
        time.sleep(2)
        cluster.kill(0, signal.SIGTERM)
        code = cluster.wait_one(0, timeout=20 + 10)
        log = cluster.log(0)
    done = [int(match) for match in re.findall(r"Resumed from \S+ at step (\d+)", log)]
    assert done and done[0] >= 22, log[-3000:]  # at least epoch 1's 22 steps
    assert code == 128 + signal.SIGTERM, log[-3000:]


def _throttle(process, running=0.25, stopped=0.75):
    """Lets `process` run `running` seconds of every `running + stopped` until it
    exits: a machine so loaded that the process gets a quarter of a core. Its
    heartbeat threads still run every second, as on a live machine."""
    while process.poll() is None:
        process.send_signal(signal.SIGSTOP)
        time.sleep(stopped)
        process.send_signal(signal.SIGCONT)
        time.sleep(running)


@pytest.mark.large
def test_slow_evaluation_and_export_beyond_the_peer_timeout_are_no_dead_peer(tmp_path):
    """The chief evaluates, exports and writes its results four times slower
    than worker 1, for far longer than --peer_timeout_seconds: both finish."""
    peer_timeout = 6
    flags = QUICK + ["--epochs=1", "--batch_size=128", f"--peer_timeout_seconds={peer_timeout}",
                     f"--workdir={tmp_path / 'run'}"]
    with Cluster(2, flags, log_dir=tmp_path) as cluster:
        # The epoch line follows the epoch's checkpoint: training is over.
        assert cluster.wait_for_log(0, "Epoch 1/1", timeout=240), cluster.log(0)[-3000:]
        slowed = time.monotonic()
        _throttle(cluster.processes[0])
        slow_phase = time.monotonic() - slowed
        codes = cluster.wait(timeout=120)
        logs = [cluster.log(0), cluster.log(1)]
    assert codes == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert slow_phase > 2 * peer_timeout, f"the slowed phase took only {slow_phase:.0f} s"
    assert "Lost worker" not in logs[0] + logs[1]
    assert (tmp_path / "run" / "export" / "saved_model.pb").exists()


def test_peer_failure_message_names_the_other_worker():
    config = json.dumps({"cluster": {"worker": ["a:1", "b:2", "c:3"]},
                         "task": {"type": "worker", "index": 2}})
    heartbeat = tf.errors.UnavailableError(
        None, None, "The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:0\nThe tasks have crashed.")
    assert multi_worker.describe_peer_failure(heartbeat, config).startswith(
        "Lost worker 0 (a:1): a peer of this worker (2)")
    timeout = tf.errors.DeadlineExceededError(None, None, "Collective timed out")
    assert multi_worker.describe_peer_failure(timeout, config).startswith(
        "Lost worker 0 (a:1), worker 1 (b:2):")


def test_tf_config_errors_say_what_to_set():
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        multi_worker.cluster_from_tf_config("")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid"):
        multi_worker.cluster_from_tf_config('{"cluster": {}}')


def test_signal_ends_a_process_blocked_outside_python(tmp_path):
    # The main thread blocks in C (a read that never returns), as in a
    # collective whose peer is gone; SIGTERM must still end the process.
    script = ("import os, sys; sys.path.insert(0, %r)\n"
              "from kprefix.runs.multi_worker import exit_on_signals\n"
              "exit_on_signals(grace_seconds=1)\n"
              "r, w = os.pipe(); print('blocked', flush=True); os.read(r, 1)\n" % str(REPO))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"blocked\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM


def test_mirrored_over_two_devices_trains_with_jit_compile_requested(two_cpus):
    from helpers import image_classifier

    strategy = tf.distribute.MirroredStrategy(two_cpus)
    assert train.jit_compile_for(strategy, True) is False
    assert train.jit_compile_for(tf.distribute.get_strategy(), True) is True
    x = np.random.RandomState(0).uniform(-1, 1, (8, 16, 16, 3)).astype("float32")
    y = np.arange(8) % 4
    with strategy.scope():
        model = image_classifier("deep_share")
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=train.jit_compile_for(strategy, True))
    history = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), verbose=0)
    assert np.isfinite(history.history["loss"][0])

