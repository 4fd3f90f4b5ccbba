"""Tests of the full E2E scorer (mteval + coco-caption) against the official TGen scores."""

import os

import pytest

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.data.nlg_e2e import read_e2e_csv
from kprefix.metrics import java
from kprefix.metrics.coco_caption import PYTHON_TOKENIZER, coco_caption_scores
from kprefix.metrics.e2e import score_e2e

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
E2E_DIR = os.path.join(DATA_DIR, "e2e")
needs_data = pytest.mark.skipif(not os.path.isdir(E2E_DIR),
                                reason=f"E2E data folder {E2E_DIR} is absent")
JAVA_PROBLEM = java.java_unavailable_reason()
needs_java = pytest.mark.skipif(JAVA_PROBLEM is not None, reason=f"METEOR needs Java: {JAVA_PROBLEM}")

# e2e-metrics measure_scores.py (default mode) on the TGen baseline outputs.
OFFICIAL_TGEN = {"BLEU": 0.6593, "NIST": 8.6094, "METEOR": 0.4483, "ROUGE_L": 0.6850,
                 "CIDEr": 2.2338}
TOLERANCE = {"BLEU": 0.002, "NIST": 0.02, "METEOR": 0.002, "ROUGE_L": 0.002, "CIDEr": 0.002}


def _tgen_outputs_and_references():
    examples = read_e2e_csv(os.path.join(E2E_DIR, "testset_w_refs.csv"))
    with open(os.path.join(E2E_DIR, "reference_outputs", "tgen.tsv"), encoding="utf-8") as handle:
        next(handle)
        outputs = {}
        for line in handle:
            mr, output = line.rstrip("\n").split("\t")
            outputs[mr.strip('"')] = output
    return [outputs[e.source] for e in examples], [list(e.targets) for e in examples]


@pytest.fixture(scope="module")
def tgen():
    return _tgen_outputs_and_references()


@pytest.fixture(scope="module")
def official_scores(tgen):
    """One full run (METEOR's jar takes ~25 s to start), shared by the tests below."""
    return score_e2e(*tgen).as_dict()


@needs_data
@needs_java
@pytest.mark.parametrize("metric", list(OFFICIAL_TGEN))
def test_tgen_baseline_matches_the_official_e2e_scorer(official_scores, metric):
    assert official_scores[metric] == pytest.approx(OFFICIAL_TGEN[metric], abs=TOLERANCE[metric])


@needs_data
def test_without_java_meteor_is_unavailable_and_the_rest_still_matches(tgen, monkeypatch):
    monkeypatch.setenv(java.JAVA_ENV_VAR, "/nonexistent/bin/java")
    scores = score_e2e(*tgen).as_dict()
    assert scores["METEOR"].startswith("unavailable: no Java runtime found")
    assert scores["coco_tokenizer"] == PYTHON_TOKENIZER
    for metric in ("BLEU", "NIST", "ROUGE_L", "CIDEr"):
        assert scores[metric] == pytest.approx(OFFICIAL_TGEN[metric], abs=TOLERANCE[metric])


def test_coco_scores_of_a_toy_pair():
    # Identical tokens: ROUGE-L F = 1; one of two references different does not lower it.
    scores = coco_caption_scores(["The pub is cheap."], [["the pub is cheap", "A dear pub."]],
                                 use_java=False)
    assert scores.rouge_l == pytest.approx(1.0)
    assert scores.meteor is None and scores.meteor_unavailable == "Java use was switched off" \
        or JAVA_PROBLEM is not None
    # 3 of 4 output tokens in order in a 4-token reference: P = R = 3/4 -> F = 3/4.
    partial = coco_caption_scores(["the pub is dear"], [["the pub is cheap"]], use_java=False)
    assert partial.rouge_l == pytest.approx(0.75)


def test_mismatched_lengths_name_the_fix():
    with pytest.raises(ValueError, match="give exactly one output per MR"):
        score_e2e(["a", "b"], [["a"]], use_java=False)
    with pytest.raises(ValueError, match="at least one reference"):
        coco_caption_scores(["a"], [[]], use_java=False)


def test_forcing_java_without_java_raises(monkeypatch):
    monkeypatch.setenv(java.JAVA_ENV_VAR, "/nonexistent/bin/java")
    with pytest.raises(java.JavaUnavailableError, match="KPREFIX_JAVA"):
        coco_caption_scores(["a"], [["a"]], use_java=True)
