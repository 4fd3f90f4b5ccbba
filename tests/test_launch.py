"""`python -m kprefix.launch`: bad flags fail fast; a short run writes everything."""

import json
import os
import subprocess
import sys

import pytest


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
])
def test_bad_flags_fail_with_the_flag_named(flag, message, tmp_path):
    result = _launch(flag, f"--workdir={tmp_path}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]


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
