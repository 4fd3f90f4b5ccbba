"""Tests of the XSUM ROUGE scorer."""

import os
import re

import pytest

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.data.nlg_xsum import load_xsum
from kprefix.metrics.rouge import rouge_f1

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
XSUM_DIR = os.path.join(DATA_DIR, "xsum")


def test_hand_computed_toy():
    # Output of 7 words vs reference of 6: 6 shared unigrams (P 6/7, R 1) -> F 12/13;
    # 4 of 6 / 5 bigrams shared -> F 8/11; the LCS is the whole reference -> F 12/13.
    scores = rouge_f1(["the cat was found under the bed"], ["the cat was under the bed"])
    assert scores["rouge1"] == pytest.approx(100 * 12 / 13)
    assert scores["rouge2"] == pytest.approx(100 * 8 / 11)
    assert scores["rougeL"] == pytest.approx(100 * 12 / 13)


def test_stemming_and_averaging_over_summaries():
    stemmed = rouge_f1(["cats running"], ["cat runs"])
    assert stemmed["rouge1"] == pytest.approx(100.0)
    assert rouge_f1(["cats running"], ["cat runs"], use_stemmer=False)["rouge1"] == 0.0
    # Mean over summaries: one perfect (100) and one with nothing shared (0).
    assert rouge_f1(["a b", "c d"], ["a b", "e f"])["rouge1"] == pytest.approx(50.0)


def test_mismatched_counts_are_rejected():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_f1(["a", "b"], ["a"])


@pytest.mark.skipif(not os.path.isdir(XSUM_DIR), reason=f"XSUM folder {XSUM_DIR} is absent")
def test_xsum_test_sample_references_and_lead_baseline():
    examples = load_xsum("test", DATA_DIR)
    references = [e.targets[0] for e in examples]
    assert rouge_f1(references, references) == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    # The first sentence of each article: XSUM's LEAD baseline is ~16 ROUGE-1 / ~2 ROUGE-2.
    lead = [re.split(r"(?<=[.!?])\s", e.source.strip())[0] for e in examples]
    scores = rouge_f1(lead, references)
    assert 12 < scores["rouge1"] < 20
    assert 0.5 < scores["rouge2"] < 4
    assert scores["rouge2"] < scores["rougeL"] < scores["rouge1"]
