"""The run directory: chief detection, lock, recorded settings, atomic files."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from kprefix.runs import cluster, files, workdir


def test_chief_is_the_chief_task_or_worker_zero():
    def task(config):
        return cluster.cluster_role({"TF_CONFIG": json.dumps(config)})

    workers = {"worker": ["localhost:1", "localhost:2"]}
    assert task({"cluster": workers, "task": {"type": "worker", "index": 0}}).is_chief
    assert not task({"cluster": workers, "task": {"type": "worker", "index": 1}}).is_chief
    with_chief = dict(workers, chief=["localhost:3"])
    assert task({"cluster": with_chief, "task": {"type": "chief", "index": 0}}).is_chief
    assert not task({"cluster": with_chief, "task": {"type": "worker", "index": 0}}).is_chief
    assert not cluster.cluster_role({"TPU_WORKER_ID": "3"}).is_chief
    assert cluster.cluster_role({"TPU_WORKER_ID": "0"}).is_chief
    assert cluster.cluster_role({}).is_chief


def test_json_is_strict_and_atomic(tmp_path):
    path = str(tmp_path / "results.json")
    files.write_json(path, {"loss": float("nan"), "values": [1.0, float("inf")]})
    text = open(path).read()
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}")) == {
        "loss": None, "values": [1.0, None]}
    assert os.listdir(tmp_path) == ["results.json"]


def test_a_live_lock_refuses_and_names_its_holder(tmp_path):
    with workdir.WorkdirLock(str(tmp_path)):
        with pytest.raises(workdir.WorkdirBusy, match=f"pid {os.getpid()}"):
            workdir.WorkdirLock(str(tmp_path)).acquire()
    assert not (tmp_path / "run.lock").exists()


def test_lock_of_a_killed_run_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from kprefix.runs.workdir import WorkdirLock
        WorkdirLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.WorkdirBusy, match=f"pid {holder.pid}"):
        workdir.WorkdirLock(str(tmp_path)).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = workdir.WorkdirLock(str(tmp_path)).acquire()
    assert lock.took_over["pid"] == holder.pid
    lock.release()


def test_lock_with_an_old_heartbeat_is_stale(tmp_path):
    files.write_json(str(tmp_path / "run.lock"), {
        "host": "another-host", "pid": 1, "token": "x", "started": 0,
        "heartbeat": time.time() - 3600})
    lock = workdir.WorkdirLock(str(tmp_path), stale_seconds=300).acquire()
    assert lock.took_over["host"] == "another-host"
    lock.release()


def test_heartbeat_keeps_a_lock_fresh(tmp_path):
    lock = workdir.WorkdirLock(str(tmp_path), heartbeat_seconds=0.05).acquire()
    first = json.loads((tmp_path / "run.lock").read_text())["heartbeat"]
    time.sleep(0.3)
    assert json.loads((tmp_path / "run.lock").read_text())["heartbeat"] > first
    lock.release()


def test_restart_with_changed_settings_names_them(tmp_path):
    run = str(tmp_path)
    assert workdir.check_run_config(run, {"prefix_length": 10, "learning_rate": 0.1,
                                          "epochs": 2}) == []
    with pytest.raises(workdir.ChangedRunConfig) as error:
        workdir.check_run_config(run, {"prefix_length": 16, "learning_rate": 0.5, "epochs": 2})
    assert "--learning_rate=0.1 (now 0.5)" in str(error.value)
    assert "--prefix_length=10 (now 16)" in str(error.value)
    with pytest.raises(workdir.ChangedRunConfig, match="--epochs=2 \\(now 1\\)"):
        workdir.check_run_config(run, {"prefix_length": 10, "learning_rate": 0.1, "epochs": 1})
    assert workdir.check_run_config(run, {"prefix_length": 10, "learning_rate": 0.1,
                                          "epochs": 5}) == ["epochs"]
    assert json.loads((tmp_path / "run_config.json").read_text())["epochs"] == 5


def _folder(path, text):
    path.mkdir()
    (path / "saved_model.pb").write_text(text)
    (path / "variables").mkdir()
    (path / "variables" / "data").write_text(text * 1000)


def test_replace_directory_swaps_old_for_new(tmp_path):
    _folder(tmp_path / "export", "old")
    partial = files.partial_directory(str(tmp_path / "export"))
    _folder(tmp_path / os.path.basename(partial), "new")
    files.replace_directory(partial, str(tmp_path / "export"))
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (tmp_path / "export" / "saved_model.pb").read_text() == "new"


def test_recover_puts_back_an_export_moved_aside_and_drops_partial_ones(tmp_path):
    _folder(tmp_path / "export.old-1234", "old")
    _folder(tmp_path / "export.partial-5678", "half")
    files.recover_directory(str(tmp_path / "export"))
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (tmp_path / "export" / "saved_model.pb").read_text() == "old"


def test_killed_replacement_leaves_old_or_new_never_neither(tmp_path):
    """SIGKILL a process that keeps replacing the folder, at several moments."""
    target = tmp_path / "export"
    _folder(target, "v0")
    script = textwrap.dedent(f"""
        import os, pathlib
        from kprefix.runs import files
        target = {str(target)!r}
        for version in range(1, 100000):
            partial = pathlib.Path(files.partial_directory(target))
            partial.mkdir()
            (partial / "variables").mkdir()
            (partial / "variables" / "data").write_text(str(version) * 1000)
            (partial / "saved_model.pb").write_text(str(version))
            files.replace_directory(str(partial), target)
            if version == 1:
                print("running", flush=True)
    """)
    for delay in (0.0, 0.013, 0.05, 0.11, 0.2):
        process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                   text=True)
        assert process.stdout.readline().strip() == "running"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        files.recover_directory(str(target))
        assert (target / "saved_model.pb").exists()
        version = (target / "saved_model.pb").read_text()
        assert (target / "variables" / "data").read_text() == version * 1000
        assert sorted(os.listdir(tmp_path)) == ["export"]


def test_workdir_that_cannot_be_written_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match="cannot write to .*file/run"):
        workdir.check_writable(str(blocker / "run"))

