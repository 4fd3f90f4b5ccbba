"""The ViT benchmark against the authors' PyTorch model: its parity check and its run.

Needs the optional extra (`pip install -e ".[peer]"`); skipped without torch.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason='needs torch; pip install -e ".[peer]"')

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from vit_reference import (DeepSharePrefix, kprefix_classifier, load_from_kprefix,  # noqa: E402
                           max_logit_difference, reference_model, trainable_parameter_count)


def test_tiny_vit_logits_equal_the_reference():
    assert max_logit_difference("vit_tiny", prefix_length=3) < 1e-4


def test_reference_splits_key_and_value_interleaved():
    # The authors' reshape(P, hidden, 2): feature 2j is key j, feature 2j + 1 value j.
    prefix = DeepSharePrefix(length=2, hidden=4, patch_size=4, mlp_hidden=3)
    with torch.no_grad():
        key, value = prefix()
        out = prefix.trans(prefix.embedding)
    np.testing.assert_array_equal(key, out[:, 0::2])
    np.testing.assert_array_equal(value, out[:, 1::2])


def test_mapped_prefixes_equal_kprefixs():
    classifier = kprefix_classifier("vit_tiny", prefix_length=3, num_classes=5)
    from kprefix.backbones import BUILT_IN

    reference = reference_model(BUILT_IN["vit_tiny"][1], prefix_length=3, num_classes=5)
    load_from_kprefix(reference, classifier)
    for ours, theirs in zip(classifier.prefix.prefix_values().values(), reference.prefixes):
        with torch.no_grad():
            key, value = theirs()
        np.testing.assert_allclose(ours[0].reshape(3, -1), key, atol=1e-6)
        np.testing.assert_allclose(ours[1].reshape(3, -1), value, atol=1e-6)


@pytest.mark.large
def test_benchmark_configuration_matches_the_issue():
    # ViT-B/16 sizes, P=10 rows of P' per layer, 100 classes: 1,515,172 on both sides.
    from kprefix.backbones import BUILT_IN

    reference = reference_model(BUILT_IN["vit_b16_random"][1], prefix_length=10)
    assert trainable_parameter_count(reference) == 1_515_172
    assert max_logit_difference("vit_b16_random", prefix_length=10) < 1e-4


@pytest.mark.large
def test_benchmark_runs_and_writes_its_ratios(tmp_path):
    output = tmp_path / "ratios.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(BENCHMARKS.parent), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run(
        [sys.executable, str(BENCHMARKS / "peer_vit.py"), "--vit=vit_tiny", "--rounds=2",
         "--precisions=float32", "--profile", f"--json_output={output}"],
        capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    ratios = json.loads(output.read_text())
    for name in ("train_ratio", "train_ratio_per_call", "peak_memory_ratio",
                 "first_step_ratio"):
        assert ratios[name] > 0
    assert "steps inside one fit call" in run.stdout and "largest op types" in run.stdout
