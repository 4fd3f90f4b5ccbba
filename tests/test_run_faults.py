"""`python -m kprefix.launch` under faults: kills, SIGTERM, NaN and explosion, a
busy or reused workdir, bad settings, files left by other runs, a full disk, no
network, bad serving inputs, and a workdir on TF's `ram://` filesystem; and
two launches with the same flags, which must end bit-identical.

Every run is a real process, as a user or a cluster manager would start it.
Failures must end with their exit status and one `Error:` line, and leave
what was written before as it was.
"""

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import assert_one_line_error, file_digests
from kprefix.runs.checkpoints import CheckpointStore
from kprefix.data.nlg import locate_shared_data_dir
from kprefix.runs.workdir import WorkdirLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = [f"--flagfile={os.path.join(ROOT, 'configs', 'quickstart.cfg')}",
              "--prefix_length=4", "--batch_size=128"]
DIGITS_STEPS = 1437 // 128  # training examples / batch size
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def launch(*flags, timeout=600, env=ENV, **options):
    return subprocess.run([sys.executable, "-m", "kprefix.launch", *flags], capture_output=True,
                          text=True, timeout=timeout, env=env, **options)


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
def test_two_launches_on_a_preset_folder_with_the_same_flags_end_bit_identical(tmp_path):
    from kprefix.backbones import build_backbone

    preset = str(tmp_path / "vit")
    build_backbone("vit_tiny").save_to_preset(preset)
    flags = [*QUICKSTART, f"--backbone={preset}", "--epochs=1", "--max_steps_per_epoch=4",
             "--noexport"]
    for name in ("first", "second"):
        result = launch(*flags, f"--workdir={tmp_path / name}")
        assert result.returncode == 0, result.stderr[-3000:]
    first, _ = final_state(str(tmp_path / "first"))
    second, _ = final_state(str(tmp_path / "second"))
    for key in first:
        np.testing.assert_array_equal(second[key], first[key], err_msg=key)


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
    assert_one_line_error(result, 2, "--workdir=", "cannot write")


def test_bad_dataset_writes_nothing(tmp_path):
    result = launch(*QUICKSTART, "--dataset=bogus", f"--workdir={tmp_path / 'run'}")
    assert_one_line_error(result, 2, "--dataset='bogus'")
    assert not (tmp_path / "run").exists()  # so the corrected rerun is not refused


def test_changed_settings_are_refused_in_one_line(tmp_path):
    (tmp_path / "run_config.json").write_text(json.dumps({"learning_rate": 0.5}))
    before = file_digests(tmp_path)
    result = launch(*QUICKSTART, f"--workdir={tmp_path}")
    assert_one_line_error(result, 2, "was started with other settings",
                          "--learning_rate=0.5 (now 0.8)")
    assert file_digests(tmp_path) == before


def test_missing_tf_config_is_a_usage_error_in_one_line(tmp_path):
    env = {k: v for k, v in ENV.items() if k != "TF_CONFIG"}
    result = launch(*QUICKSTART, "--strategy=multi_worker_mirrored",
                    f"--workdir={tmp_path / 'run'}", env=env)
    assert_one_line_error(result, 2, "needs TF_CONFIG")
    assert not (tmp_path / "run").exists()


def test_hub_handle_without_network_or_repository_fails_fast_in_one_line(tmp_path):
    start = time.monotonic()
    result = launch(*QUICKSTART, "--backbone=hf://nobody/nothing",
                    f"--workdir={tmp_path / 'run'}")
    assert result.returncode in (1, 2)
    # Without network: "no network: ... cannot reach huggingface.co"; with
    # network the hub answers that the repository does not exist.
    assert_one_line_error(result, result.returncode, "nobody/nothing")
    assert time.monotonic() - start < 120
    assert not (tmp_path / "run").exists()


@pytest.mark.large
def test_checkpoint_files_without_manifest_stop_the_start_and_are_never_overwritten(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "ckpt-3.npz").write_bytes(b"left by a run whose manifests were removed")
    before = file_digests(tmp_path)
    flags = [*QUICKSTART, "--epochs=1", "--checkpoint_every_steps=1", "--noexport",
             f"--workdir={tmp_path}"]
    refused = launch(*flags)
    assert_one_line_error(refused, 2, "ckpt-3.npz", "Move them away",
                          "--resume_from_unverified")
    assert file_digests(tmp_path) == before

    verified = launch(*flags, "--resume_from_unverified")
    assert verified.returncode == 0, verified.stderr[-3000:]
    assert "Not using" in verified.stdout and "ckpt-3.npz" in verified.stdout
    # Set aside when step 3 was written again, and never pruned.
    assert (folder / "ckpt-3.npz.damaged").read_bytes() == (
        b"left by a run whose manifests were removed")
    assert CheckpointStore(str(folder)).steps() == [DIGITS_STEPS - 2, DIGITS_STEPS - 1,
                                                    DIGITS_STEPS]


def _limit_file_size(limit):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.large
def test_full_disk_during_export_is_one_line_and_checkpoints_stay_good(tmp_path):
    """A file-size limit between the checkpoint's size and the export's makes
    the export's writes fail as on a full disk (EFBIG instead of ENOSPC)."""
    result = launch(*QUICKSTART, "--epochs=1", "--prefix_length=2", f"--workdir={tmp_path}",
                    preexec_fn=_limit_file_size(600_000))
    assert_one_line_error(result, 1, "file-size limit", "export", "rerun the same command")
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    assert store.steps() == [DIGITS_STEPS] and store.read(DIGITS_STEPS)
    assert not [name for name in os.listdir(tmp_path) if name.startswith("export")]
    assert not (tmp_path / "results.json").exists()


def write_generated_e2e(folder, pairs=16):
    """E2E-format CSVs of `pairs` made-up restaurant descriptions under `folder/e2e`."""
    (folder / "e2e").mkdir(parents=True)
    names, foods = ["Aromi", "Cotto", "Zizzi", "Wildwood"], ["Thai", "Italian", "French"]
    rows = [(f"name[{names[i % 4]}], food[{foods[i % 3]}]",
             f"{names[i % 4]} serves {foods[i % 3]} food .") for i in range(pairs)]
    for name in ("trainset_tokenized.csv", "devset.csv", "testset_w_refs.csv"):
        with open(folder / "e2e" / name, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([("mr", "ref"), *rows])
    return folder


@pytest.mark.large
def test_text_run_whose_weights_explode_with_a_finite_loss_is_diverged(tmp_path):
    """At a learning rate of 1e30 the prefix blows up while attention and
    LayerNorm keep the loss finite and flat; the guard still stops the run.
    TensorFlow's C++ error lines (oneDNN's DT_INT64 notice) stay hidden."""
    data = write_generated_e2e(tmp_path / "data")
    workdir = tmp_path / "run"
    env = {k: v for k, v in ENV.items() if not k.startswith("TF_CPP_")}
    result = launch("--task=table_to_text", "--backbone=gpt2_tiny", "--dataset=e2e",
                    f"--text_data_dir={data}", "--batch_size=2", "--epochs=2",
                    "--optimizer=adamw", "--learning_rate=1e30", "--warmup_steps=0",
                    "--prefix_length=2", "--source_length=32", "--target_length=16",
                    "--num_beams=1", "--max_new_tokens=4", "--min_new_tokens=1",
                    "--max_eval_examples=2", "--eval_batch_size=2", "--checkpoint_every_steps=3",
                    f"--workdir={workdir}", env=env)
    assert_one_line_error(result, 1, "training diverged", "exploded")
    assert "E0000" not in result.stderr and "DT_INT64" not in result.stderr
    results = json.loads((workdir / "results.json").read_text())
    assert results["status"] == "diverged"
    store = CheckpointStore(str(workdir / "checkpoints"))
    assert all(step < results["diverged_at_step"] for step in store.steps())
    assert not [name for name in os.listdir(workdir) if name.startswith("export")]


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
        from kprefix.runs.checkpoints import CheckpointStore

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
