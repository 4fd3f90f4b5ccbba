"""Clean logs: plain epoch lines when piped, TensorFlow quiet by default, help in order."""

import os
import re
import subprocess
import sys

import pytest

from kprefix.cli import tensorflow_logs as logs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(*args, cwd=ROOT):
    # stdout and stderr are pipes here, as when a run is logged to a file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPP_")}
    return subprocess.run([sys.executable, "-m", "kprefix.launch", *args], cwd=cwd, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)


@pytest.mark.large
def test_piped_run_prints_one_plain_line_per_epoch_and_no_tensorflow_noise(tmp_path):
    result = _launch("--flagfile=configs/quickstart.cfg", "--epochs=3", "--prefix_length=2",
                     f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert not {"\x1b", "\r", "\x08"} & set(output), repr(output[:800])
    epochs = [line for line in result.stdout.splitlines() if line.startswith("Epoch ")]
    assert [line.split(" - ")[0] for line in epochs] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]
    assert all("loss: " in line for line in epochs)
    # No C++ start-up logs ("I0000 ... port.cc:153] oneDNN ...") and no absl banner.
    # Nor TensorFlow's Python INFO lines (the SavedModel export writes some).
    assert not re.search(r"^[IW]\d{4} ", output, re.M), output[-2000:]
    assert (tmp_path / "export" / "saved_model.pb").exists()
    assert "absl::InitializeLog" not in result.stderr


def test_verbosity_sets_tensorflow_log_levels(monkeypatch):
    import logging
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    logs.configure_tensorflow_logging(["prog", "--epochs=1"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert logging.getLogger("tensorflow").level == logging.WARNING
    logs.configure_tensorflow_logging(["prog", "--verbosity=0"])
    assert logging.getLogger("tensorflow").level == logging.INFO
    logs.configure_tensorflow_logging(["prog", "--verbosity", "0"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    logs.configure_tensorflow_logging(["prog", "-v=-1"])
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    assert logging.getLogger("tensorflow").level == logging.WARNING
    noisy = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\nI0000 00:00:1795836777.890513    7416 cpu_feature_guard.cc:227] This "
             "TensorFlow binary is optimized.\nTo enable the following instructions: AVX2 FMA, "
             "in other operations, rebuild TensorFlow.\nTraceback: a real error\n")
    assert logs.drop_startup_noise(noisy) == "Traceback: a real error\n"


def test_helpfull_lists_the_launch_flags_first_in_their_source_groups(tmp_path):
    result = _launch("--helpfull", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout[result.stdout.index("\n  --"):]  # after the module's usage text
    order = ["--task", "\nModel:\n", "--backbone", "--prefix_variant", "--prefix_dropout",
             "\nData:\n", "--dataset", "\nDecoding:\n", "\nOptimization:\n", "--learning_rate",
             "\nHardware:\n", "\nOutputs:\n", "--workdir", "\nabsl.app:\n"]
    positions = [text.find(item) for item in order]
    assert -1 not in positions and positions == sorted(positions), list(zip(order, positions))
    assert result.stderr == ""
    short = _launch("--help", cwd=tmp_path).stdout
    assert "--prefix_length" in short and "absl.app:" not in short
