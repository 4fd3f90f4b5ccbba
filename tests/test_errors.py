"""Failures as one line: real full-disk, permission and network errors are named."""

import errno
import os
import socket

import pytest
import tensorflow as tf
from absl.app import UsageError

from kprefix.cli import errors

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"),
                                    reason="/dev/full (always full) is Linux only")


@needs_dev_full
def test_full_disk_from_python_and_from_tensorflow_is_named():
    with pytest.raises(OSError) as python_error:
        with open("/dev/full", "w") as f:
            f.write("x" * 100_000)
    with pytest.raises(tf.errors.OpError) as tensorflow_error:
        with tf.io.gfile.GFile("/dev/full", "w") as f:
            f.write("x" * 100_000)
    for error in (python_error.value, tensorflow_error.value):
        line = errors.one_line(error)
        assert line.startswith("no space left on the device"), line
        assert "rerun the same command" in line and "\n" not in line
        assert errors.exit_status(error) == 1


def test_permission_and_network_failures_are_named_through_their_causes():
    denied = PermissionError(errno.EACCES, "Permission denied", "/data/run")
    assert errors.one_line(denied).startswith("permission denied for /data/run")
    try:
        socket.getaddrinfo("no-such-host.invalid", 443)
    except socket.gaierror as cause:
        try:
            raise RuntimeError("config.json doesn't exist in preset directory") from cause
        except RuntimeError as error:
            assert errors.one_line(error).startswith("no network: gaierror")


def test_usage_errors_exit_2_and_tracebacks_only_when_asked(capsys):
    assert errors.report(UsageError("--epochs=0: use at least 1.")) == 2
    assert capsys.readouterr().err == "Error: --epochs=0: use at least 1.\n"
    try:
        raise ValueError("unexpected")
    except ValueError as error:
        assert errors.report(error, show_traceback=True) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.endswith("Error: ValueError: unexpected\n")
