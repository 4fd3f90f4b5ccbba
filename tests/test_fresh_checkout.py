"""Without the benchmark data folder the suite still collects, and data tests skip."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pytest(tmp_path, *args):
    env = dict(os.environ, KPREFIX_SHARED_DATA=str(tmp_path / "no_data_here"),
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.large
def test_every_module_collects_without_the_data_folder(tmp_path):
    result = _pytest(tmp_path, "--collect-only", "-q", "tests")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"^\d+ tests collected in", result.stdout, re.M), result.stdout[-500:]
    assert "error" not in result.stdout.splitlines()[-1].lower()


@pytest.mark.large
def test_data_tests_skip_with_a_one_line_reason_and_the_rest_run(tmp_path):
    result = _pytest(tmp_path, "-q", "-rs", "tests/test_data_nlg.py",
                     "tests/test_text_launch.py::test_text_run_trains_decodes_scores_and_exports")
    assert result.returncode == 0, result.stdout[-3000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped and all("no_data_here" in line for line in skipped), skipped
    summary = result.stdout.splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and re.search(r"\d+ skipped", summary), summary
