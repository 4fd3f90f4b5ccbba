"""The text benchmark against Hugging Face PEFT (`benchmarks/peer_e2e.py`), run as a user
runs it, on tiny configs of both models.

Needs the optional extra (`pip install -e ".[peer]"`) and the benchmark data folder
(E2E, XSUM and the replication's offline corpus); skipped without either.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from kprefix.data.nlg_common import locate_shared_data_dir

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from peer_parity import INSTALL_HINT, peer_missing  # noqa: E402

MISSING = peer_missing()
DATA, ORIGIN = locate_shared_data_dir()


@pytest.mark.large
@pytest.mark.skipif(MISSING is not None, reason=f"needs {MISSING}; install with {INSTALL_HINT}")
@pytest.mark.skipif(not (DATA / "e2e").is_dir() or not (DATA / "xsum").is_dir(),
                    reason=f"no E2E/XSUM data under {DATA} ({ORIGIN})")
def test_benchmark_runs_both_models_and_writes_their_blocks(tmp_path):
    output = tmp_path / "peer_e2e.json"
    env = dict(os.environ, KPREFIX_SHARED_DATA=str(DATA), PYTHONPATH=os.pathsep.join(
        [str(BENCHMARKS.parent), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peer_e2e.py"), "--size=tiny", "--rounds=1",
         "--examples=20", "--decode_sources=3", "--new_tokens=6", "--xsum_examples=16",
         "--xsum_decode_sources=3", "--merges=300", f"--json_output={output}"],
        capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(output.read_text())
    for block in ("gpt2_e2e", "bart_xsum"):
        assert results[block]["parity_max_logit_difference"] < 1e-4
        for name in ("train_ratio", "train_ratio_grouped", "decode_ratio", "first_step_ratio",
                     "peak_memory_ratio", "bucketing_gain"):
            assert results[block][name] > 0, (block, name)
        # Buckets never make more shapes than the launcher's limit of 8.
        assert 1 <= results[block]["kprefix_shapes"]["bucketed"] <= 8
        assert results[block]["kprefix_shapes"]["fixed"] == 1
    assert results["train_ratio"] == results["gpt2_e2e"]["train_ratio"]
    assert isinstance(results["bart_xsum"]["peft_generate_uses_prefix"], bool)
    assert "== bart_xsum" in run.stdout and "PEFT's generate uses its prefix" in run.stdout
