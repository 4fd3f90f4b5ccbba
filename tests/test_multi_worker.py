"""Several workers: training matches one worker, dead peers fail fast, restarts resume.

The cluster tests start real `kprefix.launch` processes on localhost ports
(see `tests/multiworker.py`).
"""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from kprefix import multi_worker, train
from multiworker import REPO, Cluster

# The quickstart model and data, shortened to stay fast.
QUICK = ["--flagfile=configs/quickstart.cfg", "--warmup_epochs=1"]
PEER_TIMEOUT = 15  # seconds; far above a healthy step (~0.1 s) on a loaded 2-core machine
EXIT_MARGIN = 30  # seconds to notice the abort, shut down and exit


def _weights(path):
    values = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: values.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return values


@pytest.mark.large
def test_two_workers_train_evaluate_export_like_one_worker(tmp_path):
    flags = QUICK + ["--epochs=1"]
    with Cluster(2, flags, workdir=lambda i: str(tmp_path / f"worker{i}")) as cluster:
        codes = cluster.wait(timeout=300)
        logs = [cluster.log(0), cluster.log(1)]
    assert codes == [0, 0], logs[0][-3000:]
    assert "--jit_compile is off" in logs[0]  # XLA cannot compile CPU collectives
    # One worker, default strategy (XLA on), same global batch and seed.
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    subprocess.run([sys.executable, "-m", "kprefix.launch", *flags, "--noexport",
                    f"--workdir={tmp_path / 'single'}"],
                   cwd=REPO, env=env, check=True, timeout=300, capture_output=True)
    one = json.loads((tmp_path / "single" / "results.json").read_text())
    reference = _weights(tmp_path / "single" / "checkpoints" / "epoch-1.weights.h5")
    for index in (0, 1):
        run = tmp_path / f"worker{index}"
        two = json.loads((run / "results.json").read_text())
        # Every step sees the same global batch as on one worker; only the
        # order of float additions differs. So weights agree to float32
        # rounding, and the accuracy on the 359 test digits within one digit.
        assert abs(two["eval_accuracy"] - one["eval_accuracy"]) <= 1 / 359 + 1e-9
        for name, value in _weights(run / "checkpoints" / "epoch-1.weights.h5").items():
            np.testing.assert_allclose(value, reference[name], atol=1e-5, err_msg=name)
    assert (tmp_path / "worker0" / "export" / "saved_model.pb").exists()


@pytest.mark.large
def test_dead_peer_fails_fast_and_a_restart_resumes(tmp_path):
    workdir = lambda i: str(tmp_path / f"worker{i}")  # noqa: E731
    flags = QUICK + ["--epochs=30", "--noexport", f"--peer_timeout_seconds={PEER_TIMEOUT}"]
    with Cluster(2, flags, workdir=workdir) as cluster:
        # Epoch 2 has begun: the checkpoint of epoch 1 is written.
        assert cluster.wait_for_log(0, "Epoch 2/", timeout=240), cluster.log(0)[-3000:]
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

    # Restart both: each resumes from its newest checkpoint. While worker 1
    # hangs and the peer timeout is long, SIGTERM still ends worker 0.
    flags = QUICK + ["--epochs=30", "--noexport", "--peer_timeout_seconds=600"]
    with Cluster(2, flags, workdir=workdir) as cluster:
        assert cluster.wait_for_log(0, "Resumed from", timeout=240), cluster.log(0)[-3000:]
        assert cluster.wait_for_log(1, "Resumed from", timeout=60)
        # A full epoch after the resumed one has begun: training goes on.
        assert cluster.wait_for_log(0, "Epoch 3/", timeout=120), cluster.log(0)[-3000:]
        cluster.kill(1, signal.SIGSTOP)
        time.sleep(2)
        cluster.kill(0, signal.SIGTERM)
        code = cluster.wait_one(0, timeout=20 + 10)
        log = cluster.log(0)
    done = [int(line.rsplit(" ", 1)[-1].rstrip(".")) for line in log.splitlines()
            if line.startswith("Resumed from")]
    assert done and done[0] >= 1, log[-3000:]
    assert code == 128 + signal.SIGTERM, log[-3000:]


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
              "from kprefix.multi_worker import exit_on_signals\n"
              "exit_on_signals(grace_seconds=1)\n"
              "r, w = os.pipe(); print('blocked', flush=True); os.read(r, 1)\n" % str(REPO))
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout.readline() == b"blocked\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM


def test_mirrored_over_two_devices_trains_with_jit_compile_requested():
    from helpers import image_classifier

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
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


def test_docstring_examples():
    import doctest

    for module in (multi_worker, train):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
