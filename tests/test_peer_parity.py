"""The PEFT benchmark's parity check: kprefix and Hugging Face PEFT prefix-tuning
compute the same logits from the same weights and prefix values.

Needs the optional extra (`pip install -e ".[peer]"`); skipped without it.
"""

import os
import pathlib
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from peer_parity import INSTALL_HINT, max_logit_difference, peer_missing  # noqa: E402

MISSING = peer_missing()
needs_peer = pytest.mark.skipif(MISSING is not None,
                                reason=f"needs {MISSING}; install with {INSTALL_HINT}")


@pytest.mark.large
@needs_peer
@pytest.mark.parametrize("variant", ["deep_share", "no_share"])
def test_tiny_gpt2_logits_equal_peft(variant):
    assert max_logit_difference(variant, backbone="gpt2_tiny", length=3, mlp_hidden=8) < 1e-4


@pytest.mark.large
@needs_peer
def test_benchmark_configuration_logits_equal_peft():
    # The check `benchmarks/peer_peft.py` runs before timing (GPT-2 small, P=10, MLP 512).
    assert max_logit_difference("deep_share", length=10, mlp_hidden=512) < 1e-4


@pytest.mark.large
@needs_peer
def test_misaligned_positions_are_caught():
    # Real tokens at positions 0.. (kprefix's default) against Hugging Face's P..:
    # the check must see the difference.
    difference = max_logit_difference("no_share", backbone="gpt2_tiny", length=3,
                                      mlp_hidden=8, position_offset="0")
    assert difference > 1e-2


def test_benchmark_without_the_extra_says_how_to_install_it():
    # The benchmark as a user without torch/peft runs it: `peft` cannot be imported.
    code = ("import runpy, sys; sys.modules['peft'] = None; sys.argv = ['peer_peft.py']; "
            f"sys.path.insert(0, {str(BENCHMARKS)!r}); "
            f"runpy.run_path({str(BENCHMARKS / 'peer_peft.py')!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'pip install -e ".[peer]"' in done.stderr
    assert "peft" in done.stderr
