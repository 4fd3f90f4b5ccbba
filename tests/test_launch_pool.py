"""kprefix.replicate.launch_pool: launches side by side, thread budget, skip and failure.

The launcher here is a small real program (not kprefix.launch, whose own runs
the replication tests cover): it records when it ran and with which thread
settings, sleeps, and writes `results.json` like a finished launch.
"""

import json
import os
import sys
import textwrap

import pytest

from kprefix import sweep
from kprefix.replicate.launch_pool import LaunchPool

LAUNCHER = textwrap.dedent("""
    import json, os, sys, time
    args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
    workdir = args["workdir"]
    started = time.time()
    time.sleep(float(args.get("sleep", "0.5")))
    if args.get("fail") == "1":
        sys.exit("launch failed on purpose")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"started": started, "ended": time.time(),
                   "intra": os.environ.get("TF_NUM_INTRAOP_THREADS"),
                   "inter": os.environ.get("TF_NUM_INTEROP_THREADS")}, f)
""")


@pytest.fixture
def launcher(tmp_path):
    path = tmp_path / "fake_launch.py"
    path.write_text(LAUNCHER)
    return f"{sys.executable} {path}"


def _runs(tmp_path, count, **flags):
    return [sweep.Run(str(tmp_path / f"run{i}"), tuple((k, str(v)) for k, v in flags.items()))
            for i in range(count)]


def _read(run):
    with open(run.results_path) as f:
        return json.load(f)


def test_parallel_launches_overlap_and_share_the_cores(tmp_path, launcher, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    started = []
    pool = LaunchPool(launcher, parallel=2, on_run=started.append)
    runs = _runs(tmp_path, 4)
    pool.run_all(runs, ["--sleep=2"])
    spans = sorted((_read(r)["started"], _read(r)["ended"]) for r in runs)
    at_once = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert at_once == 2  # two at a time, never more
    assert {(_read(r)["intra"], _read(r)["inter"]) for r in runs} == {("2", "2")}
    assert sorted(r.workdir for r in started) == sorted(r.workdir for r in runs)


def test_one_launch_at_a_time_keeps_the_environment(tmp_path, launcher):
    runs = _runs(tmp_path, 2, sleep=0.1)
    LaunchPool(launcher, parallel=1).run_all(runs, [])
    first, second = (_read(r) for r in runs)
    assert first["ended"] <= second["started"]
    assert first["intra"] == os.environ.get("TF_NUM_INTRAOP_THREADS")


def test_finished_runs_are_skipped(tmp_path, launcher):
    runs = _runs(tmp_path, 2, sleep=0.1)
    os.makedirs(runs[0].workdir)
    with open(runs[0].results_path, "w") as f:
        json.dump({"kept": True}, f)
    started = []
    LaunchPool(launcher, parallel=2, on_run=started.append).run_all(runs, [])
    assert _read(runs[0]) == {"kept": True}
    assert [r.workdir for r in started] == [runs[1].workdir]


def test_a_failed_launch_stops_new_ones_and_is_raised(tmp_path, launcher):
    failing = _runs(tmp_path / "bad", 1, fail=1, sleep=0)
    later = _runs(tmp_path / "later", 3, sleep=0.1)
    pool = LaunchPool(launcher, parallel=1)
    with pytest.raises(sweep.SweepError, match="launch failed on purpose"):
        pool.run_all(failing + later, [])
    assert not any(run.is_finished() for run in later)
    with pytest.raises(sweep.SweepError, match="earlier failure"):
        pool.run(later[0], [])


def test_map_returns_in_order_and_raises_the_first_error():
    pool = LaunchPool("unused", parallel=3)
    assert pool.map(lambda x: x * 10, range(5)) == [0, 10, 20, 30, 40]

    def boom(x):
        if x == 2:
            raise ValueError("item 2")
        return x

    with pytest.raises(ValueError, match="item 2"):
        pool.map(boom, range(4))
    with pytest.raises(ValueError, match="parallel=0"):
        LaunchPool("unused", parallel=0)
