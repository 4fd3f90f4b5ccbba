"""Tests of METEOR 1.5 through the pycocoevalcap jar (one JVM for the whole module)."""

import os

import pytest

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.data.nlg_webnlg import load_webnlg
from kprefix.metrics import java
from kprefix.metrics.meteor import MeteorScorer, meteor_jar, meteor_score
from kprefix.metrics.webnlg import normalize_webnlg_output, read_text_lines, read_webnlg_references

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
WEBNLG_DIR = os.path.join(DATA_DIR, "webnlg2017")
JAVA_PROBLEM = java.java_unavailable_reason()
pytestmark = pytest.mark.skipif(JAVA_PROBLEM is not None, reason=f"METEOR needs Java: {JAVA_PROBLEM}")

# METEOR 1.5 -l en -norm -r 3 on the BART-large WebNLG outputs (challenge script).
OFFICIAL_WEBNLG = {"seen": 0.45769, "unseen": 0.39752, "all": 0.42968}


@pytest.fixture(scope="module")
def scorer():
    with MeteorScorer() as running:
        yield running


def test_identical_text_scores_one_and_order_matters(scorer):
    same = scorer.segment_statistics("the cat sat on the mat", ["the cat sat on the mat"])
    shuffled = scorer.segment_statistics("on the mat the cat sat", ["the cat sat on the mat"])
    corpus, (same_score, shuffled_score) = scorer.evaluate([same, shuffled])
    assert same_score == pytest.approx(1.0)
    # Same words in 2 chunks instead of 1: only the fragmentation penalty differs.
    assert 0.5 < shuffled_score < same_score
    assert shuffled_score < corpus < same_score


def test_the_best_reference_counts_and_unrelated_text_scores_zero(scorer):
    with_bad_reference = scorer.segment_statistics("the cat sat", ["a dog barked", "the cat sat"])
    (_, (score,)) = scorer.evaluate([with_bad_reference])
    assert score == pytest.approx(1.0)
    unrelated = scorer.evaluate([scorer.segment_statistics("zebra", ["the cat sat"])])[0]
    assert unrelated == 0.0


def test_empty_inputs_are_rejected(scorer):
    with pytest.raises(ValueError, match="at least one reference"):
        scorer.segment_statistics("a", [])
    with pytest.raises(ValueError, match="no segment statistics"):
        scorer.evaluate([])
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference groups"):
        meteor_score(["a", "b"], [["a"]])


def test_the_jar_ships_with_pycocoevalcap():
    assert meteor_jar().endswith(os.path.join("meteor", "meteor-1.5.jar"))
    assert os.path.isfile(meteor_jar())


@pytest.mark.skipif(not os.path.isdir(WEBNLG_DIR), reason=f"WebNLG folder {WEBNLG_DIR} is absent")
def test_webnlg_bart_outputs_match_the_challenge_meteor(scorer):
    seen = [bool(e.seen) for e in load_webnlg("test", DATA_DIR)]
    references = read_webnlg_references(os.path.join(WEBNLG_DIR, "eval_references"), seen)
    outputs = [normalize_webnlg_output(line) for line in read_text_lines(
        os.path.join(WEBNLG_DIR, "reference_outputs", "bart-large_webnlg-all.txt"))]
    statistics = [scorer.segment_statistics(o, r) for o, r in zip(outputs, references.meteor)]
    subsets = {"seen": [s for s, k in zip(statistics, seen) if k],
               "unseen": [s for s, k in zip(statistics, seen) if not k],
               "all": statistics}
    for subset, official in OFFICIAL_WEBNLG.items():
        assert scorer.evaluate(subsets[subset])[0] == pytest.approx(official, abs=0.002), subset
