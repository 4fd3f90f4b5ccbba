"""`python -m kprefix.launch`: bad flags fail fast; a short run writes everything."""

import json
import os
import subprocess
import sys

import pytest
from absl import app, flags

from helpers import assert_one_line_error
from kprefix import launch


def _launch(*flags, cwd=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "kprefix.launch", *flags],
        capture_output=True, text=True, timeout=timeout, cwd=cwd,
    )


@pytest.mark.parametrize("flag, message", [
    ("--prefix_variant=bogus", "prefix_variant"),
    ("--prefix_length=0", "--prefix_length"),
    ("--prefix_placement=middle", "--prefix_placement"),
    ("--backbone=no_such_backbone", "--backbone='no_such_backbone'"),
    ("--dataset=imagenet_by_hand", "--dataset='imagenet_by_hand'"),
    ("--image_normalization=preset", "--image_normalization=preset"),
    ("--prefix_placement=99", "prefix placement names layers [99]"),
])
def test_bad_flags_fail_with_the_flag_named(flag, message, tmp_path):
    result = _launch(flag, f"--workdir={tmp_path / 'run'}")
    assert_one_line_error(result, 2, message)
    assert not (tmp_path / "run").exists()


def _launch_flags_of_type(kind):
    return sorted(f.name for f in flags.FLAGS.get_flags_for_module(launch)
                  if f.flag_type() == kind)


@pytest.fixture
def parsed():
    """Parses a launch command line in this process as `kprefix.launch` does,
    then builds its `RunConfig` with `launch.run_config_from_flags` (the checks
    that need no data or model); returns the error the launch would print as its one line."""
    def check(*args):
        flags.FLAGS.unparse_flags()
        try:
            flags.FLAGS(["launch", *args])
            launch.run_config_from_flags()
        except (flags.Error, app.UsageError) as error:
            return str(error)
        return None
    yield check
    flags.FLAGS.unparse_flags()


@pytest.mark.parametrize("value", [0, -1])
@pytest.mark.parametrize("name", _launch_flags_of_type("int"))
def test_every_integer_flag_refuses_values_it_cannot_use(name, value, parsed, tmp_path):
    """-1 is never a count, size or seed; 0 only where the help says what it means."""
    error = parsed(f"--{name}={value}", f"--workdir={tmp_path / 'run'}")
    if error is None:
        assert value == 0 and "0" in flags.FLAGS[name].help, (
            f"--{name}={value} passes the checks; its help does not say what {value} means")
    else:
        assert f"--{name}" in error and "\n" not in error.strip(), error
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", _launch_flags_of_type("string enum"))
def test_every_enum_flag_refuses_a_bogus_value(name, parsed):
    error = parsed(f"--{name}=bogus")
    assert error is not None and f"--{name}=bogus" in error and "one of" in error, error


@pytest.mark.parametrize("flag", ["--num_beams=0", "--eval_batch_size=0", "--epochs=-1",
                                  "--prefix_length=0", "--seed=-1", "--task=bogus",
                                  "--precision=fp8", "--learning_rate=nan",
                                  "--min_new_tokens=9", "--workdir=", "--workdir=  "])
def test_bad_values_fail_in_one_line_before_anything_is_written(flag, tmp_path):
    workdir = [] if flag.startswith("--workdir") else [f"--workdir={tmp_path / 'run'}"]
    result = _launch(*workdir, "--max_new_tokens=8", flag, cwd=tmp_path)
    assert_one_line_error(result, 2, flag.split("=")[0])
    assert os.listdir(tmp_path) == []


def test_missing_tfds_dataset_names_the_preparation(tmp_path):
    result = _launch("--dataset=vtab/dtd", f"--tfds_data_dir={tmp_path / 'empty'}",
                     f"--workdir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "--dataset='vtab/dtd'" in result.stderr and "dtd" in result.stderr
    assert "prepare" in result.stderr or "tfds build" in result.stderr


@pytest.mark.large
def test_short_run_trains_evaluates_checkpoints_and_exports(tmp_path):
    workdir = tmp_path / "run"
    result = _launch(
        f"--flagfile={os.path.join(os.path.dirname(__file__), '..', 'configs', 'quickstart.cfg')}",
        "--epochs=2", "--prefix_length=4", f"--workdir={workdir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert 0.0 <= results["eval_accuracy"] <= 1.0
    assert results["flags"]["epochs"] == 2 and results["flags"]["prefix_length"] == 4
    assert len(results["history"]["loss"]) == 2
    assert results["status"] == "completed"
    steps = 1437 // 64  # digits training examples / batch size
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        f"ckpt-{s}.{suffix}" for s in (steps, 2 * steps) for suffix in ("json", "npz")]
    assert (workdir / "export" / "saved_model.pb").exists()
    assert str(workdir / "export") in result.stdout
    # A second start finds the finished checkpoints and does not retrain.
    again = _launch(
        f"--flagfile={os.path.join(os.path.dirname(__file__), '..', 'configs', 'quickstart.cfg')}",
        "--epochs=2", "--prefix_length=4", f"--workdir={workdir}", "--noexport",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Training already finished" in again.stdout
    assert json.loads((workdir / "results.json").read_text())["resumed_from_step"] == 2 * steps


def test_verbosity_adds_the_traceback_above_the_one_line(tmp_path):
    result = _launch("--verbosity=0", "--min_new_tokens=9", "--max_new_tokens=8",
                     f"--workdir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback")
    assert result.stderr.splitlines()[-1].startswith("Error: --min_new_tokens=9 exceeds")
