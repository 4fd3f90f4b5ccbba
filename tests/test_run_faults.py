"""`python -m kprefix.launch` under faults: kills, SIGTERM, NaN, a busy or reused
workdir, bad sizes, bad serving inputs, and a workdir on TF's `ram://` filesystem.

Every run is a real process, as a user or a cluster manager would start it.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from kprefix.checkpoints import CheckpointStore
from kprefix.data.nlg import locate_shared_data_dir
from kprefix.workdir import WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = [f"--flagfile={os.path.join(ROOT, 'configs', 'quickstart.cfg')}",
              "--prefix_length=4", "--batch_size=128"]
DIGITS_STEPS = 1437 // 128  # training examples / batch size
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def launch(*flags, timeout=600):
    return subprocess.run([sys.executable, "-m", "kprefix.launch", *flags], capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def final_state(workdir):
    """The arrays of the newest checkpoint of a finished run."""
    store = CheckpointStore(os.path.join(workdir, "checkpoints"))
    return store.read(store.steps()[-1]), store.steps()[-1]


def kill_and_resume(flags, workdir, kill_after_step, sig=signal.SIGKILL):
    """Starts a run, sends `sig` once a checkpoint at or past `kill_after_step`
    exists, and returns the process and then the completed rerun."""
    process = subprocess.Popen([sys.executable, "-m", "kprefix.launch", *flags,
                                f"--workdir={workdir}"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=ENV)
    store = CheckpointStore(os.path.join(workdir, "checkpoints"))
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if store.steps() and store.steps()[-1] >= kill_after_step:
            process.send_signal(sig)
            break
        time.sleep(0.02)
    output = process.communicate(timeout=300)[0]
    rerun = launch(*flags, f"--workdir={workdir}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return process, output, rerun


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """An uninterrupted 2-epoch quickstart-like run with mid-epoch checkpoints."""
    workdir = str(tmp_path_factory.mktemp("digits") / "straight")
    result = launch(*QUICKSTART, "--epochs=2", "--checkpoint_every_steps=3",
                    f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.mark.large
def test_sigkill_at_a_random_step_then_restart_is_bit_identical(digits_run, tmp_path):
    step = int(np.random.default_rng().integers(1, 2 * DIGITS_STEPS - 3))
    process, _, rerun = kill_and_resume(
        [*QUICKSTART, "--epochs=2", "--checkpoint_every_steps=3"], str(tmp_path / "killed"), step)
    assert process.returncode == -signal.SIGKILL, f"run ended before the kill at step {step}"
    assert "Resumed from" in rerun.stdout
    expected, final_step = final_state(digits_run)
    resumed, resumed_step = final_state(str(tmp_path / "killed"))
    assert resumed_step == final_step == 2 * DIGITS_STEPS
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=f"{key} (kill {step})")


@pytest.mark.large
def test_sigterm_saves_and_exits_for_a_restart(digits_run, tmp_path):
    workdir = str(tmp_path / "preempted")
    process, output, rerun = kill_and_resume(
        [*QUICKSTART, "--epochs=2", "--checkpoint_every_steps=3"], workdir, 3, signal.SIGTERM)
    assert process.returncode == 42, output[-3000:]
    assert "stopped by SIGTERM at step" in output and "Traceback" not in output
    assert not os.path.exists(os.path.join(workdir, "run.lock"))
    assert "Resumed from" in rerun.stdout
    expected, _ = final_state(digits_run)
    resumed, _ = final_state(workdir)
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=key)


DATA, _ = locate_shared_data_dir()


@pytest.mark.large
@pytest.mark.skipif(not (DATA / "e2e").is_dir(), reason=f"E2E files not found under {DATA}")
def test_text_run_killed_and_restarted_is_bit_identical(tmp_path):
    flags = ["--task=table_to_text", "--backbone=gpt2_tiny", "--dataset=e2e",
             f"--text_data_dir={DATA}", "--max_train_examples=4", "--batch_size=8", "--epochs=2",
             "--optimizer=adamw", "--learning_rate=1e-3", "--warmup_steps=2",
             "--prefix_length=3", "--source_length=48", "--target_length=16", "--num_beams=1",
             "--max_new_tokens=4", "--min_new_tokens=1", "--max_eval_examples=2",
             "--checkpoint_every_steps=2", "--noexport"]
    straight = launch(*flags, f"--workdir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected, final_step = final_state(str(tmp_path / "straight"))
    step = int(np.random.default_rng().integers(2, final_step - 4))
    process, _, rerun = kill_and_resume(flags, str(tmp_path / "killed"), step)
    assert process.returncode == -signal.SIGKILL, f"run ended before the kill at step {step}"
    resumed, resumed_step = final_state(str(tmp_path / "killed"))
    assert resumed_step == final_step
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=f"{key} (kill {step})")


@pytest.mark.large
def test_divergence_stops_with_strict_json_and_no_poisoned_files(tmp_path):
    workdir = tmp_path / "nan"
    result = launch(*QUICKSTART, "--epochs=1", "--learning_rate=1e30",
                    "--checkpoint_every_steps=1", f"--workdir={workdir}")
    assert result.returncode == 1
    assert "training diverged" in result.stderr and "Traceback" not in result.stderr
    results = json.loads((workdir / "results.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert results["status"] == "diverged" and results["diverged_at_step"] >= 1
    store = CheckpointStore(str(workdir / "checkpoints"))
    assert store.steps(), "the last good checkpoint is kept"
    for step in store.steps():
        assert all(np.all(np.isfinite(a)) for a in store.read(step).values()
                   if a.dtype.kind == "f")
    assert not [name for name in os.listdir(workdir) if name.startswith("export")]


@pytest.mark.large
def test_second_run_refuses_a_live_workdir_and_restarts_must_match(tmp_path):
    workdir = str(tmp_path / "run")
    with WorkdirLock(workdir):
        busy = launch(*QUICKSTART, "--epochs=1", f"--workdir={workdir}")
    assert busy.returncode == 1
    assert f"pid {os.getpid()}" in busy.stderr and "in use by a live run" in busy.stderr
    assert not os.path.exists(os.path.join(workdir, "results.json"))

    first = launch(*QUICKSTART, "--epochs=1", "--noexport", f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr[-3000:]
    changed = launch(*QUICKSTART, "--epochs=1", "--prefix_length=5", "--learning_rate=0.5",
                     f"--workdir={workdir}")
    assert changed.returncode != 0
    assert "--prefix_length=4 (now 5)" in changed.stderr
    assert "--learning_rate=0.8 (now 0.5)" in changed.stderr
    longer = launch(*QUICKSTART, "--epochs=2", "--noexport", f"--workdir={workdir}")
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "Continuing with more --epochs" in longer.stdout
    assert f"at step {DIGITS_STEPS}" in longer.stdout


@pytest.mark.parametrize("flag, message", [
    ("--epochs=0", "--epochs=0"),
    ("--batch_size=0", "--batch_size=0"),
    ("--batch_size=5000", "--batch_size=5000 leaves no training batch"),
    ("--checkpoint_every_steps=-1", "--checkpoint_every_steps=-1"),
])
def test_sizes_that_cannot_train_are_usage_errors(flag, message, tmp_path):
    result = launch(*QUICKSTART, flag, f"--workdir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_unwritable_workdir_is_a_usage_error(tmp_path):
    (tmp_path / "file").write_text("")
    result = launch(*QUICKSTART, f"--workdir={tmp_path / 'file' / 'run'}")
    assert result.returncode != 0
    assert "--workdir=" in result.stderr and "cannot write" in result.stderr


@pytest.mark.large
def test_serving_signature_refuses_bad_shapes_without_aborting(digits_run, tmp_path):
    script = textwrap.dedent(f"""
        import numpy as np, tensorflow as tf
        serve = tf.saved_model.load({os.path.join(digits_run, 'export')!r}).signatures[
            "serving_default"]
        print("ok", serve(images=tf.zeros((2, 16, 16, 3)))["probabilities"].shape)
        for shape in [(16, 16, 3), (1, 2, 16, 16, 3), (2, 32, 32, 3), (2, 16, 16, 1)]:
            try:
                serve(images=tf.zeros(shape))
                print("accepted", shape)
            except tf.errors.InvalidArgumentError as error:
                print("refused", shape, "must have shape (batch, 16, 16, 3)" in error.message)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "ok (2, 10)"
    assert lines[1:] == [f"refused {s} True" for s in
                         ["(16, 16, 3)", "(1, 2, 16, 16, 3)", "(2, 32, 32, 3)", "(2, 16, 16, 1)"]]


@pytest.mark.large
def test_train_interrupt_resume_and_export_entirely_on_ram_filesystem():
    """TF's in-memory filesystem stands in for gs://: it only lives in one
    process, so the interruption is a SIGTERM to ourselves mid-run."""
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        import tensorflow as tf
        from absl import flags
        from kprefix import launch
        from kprefix.checkpoints import CheckpointStore

        workdir = "ram://runs/quickstart"
        flags.FLAGS({["launch", *QUICKSTART]!r} + ["--epochs=2", "--checkpoint_every_steps=4",
                     "--workdir=" + workdir])
        store = CheckpointStore(workdir + "/checkpoints")

        def preempt():
            while not store.steps():
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=preempt, daemon=True).start()
        try:
            launch.main(["launch"])
        except SystemExit as stop:
            print("first run exit", stop.code, "at", store.steps()[-1])
        launch.main(["launch"])
        results = tf.io.gfile.GFile(workdir + "/results.json").read()
        serve = tf.saved_model.load(workdir + "/export").signatures["serving_default"]
        print("probabilities", serve(images=tf.zeros((1, 16, 16, 3)))["probabilities"].shape)
        print("completed", '"status": "completed"' in results)
        print("files", sorted(name.rstrip("/") for name in tf.io.gfile.listdir(workdir)))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=600, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "first run exit 42" in result.stdout
    assert "Resumed from ram://runs/quickstart/checkpoints" in result.stdout
    assert "probabilities (1, 10)" in result.stdout
    assert "completed True" in result.stdout
    assert "files ['checkpoints', 'export', 'results.json', 'run_config.json', " \
           "'tensorboard']" in result.stdout, result.stdout[-2000:]
