"""Tests of the mteval-v13a BLEU/NIST used by the E2E scorer."""

import csv
import math
import os

import pytest

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.metrics import mteval

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
E2E_DIR = os.path.join(DATA_DIR, "e2e")
needs_data = pytest.mark.skipif(not os.path.isdir(E2E_DIR),
                                reason=f"E2E data folder {E2E_DIR} is absent")


def test_normalization_is_mteval_13a_with_ascii_lowercasing():
    assert mteval.mteval_normalize("Blue Spice's £20-25 (cheap) place, near ÉCOLE.  Rated 4.5/5!") == [
        "blue", "spice's", "£20", "-", "25", "(", "cheap", ")", "place", ",", "near", "École", ".",
        "rated", "4.5", "/", "5", "!"]
    assert mteval.mteval_normalize("A b", lowercase=False) == ["A", "b"]


def test_bleu_of_a_two_sentence_toy():
    # Sentence 2 matches 3/4 unigrams, 1/3 bigrams, 0/2 trigrams, 0/1 4-grams;
    # sentence 1 matches everything; equal lengths, so no brevity penalty.
    scores = mteval.mteval_bleu_nist(["a b c d", "a b x d"], [["a b c d"], ["a b c d"]])
    assert scores.bleu_precisions == pytest.approx((7 / 8, 4 / 6, 2 / 4, 1 / 2))
    assert scores.bleu == pytest.approx((7 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25)


def test_nist_of_a_two_sentence_toy():
    # References hold a, b, c, d twice each: every unigram carries -log2(2/8) = 2 bits,
    # and each longer n-gram is fully predictable (0 bits). 7 matched unigrams of 8.
    scores = mteval.mteval_bleu_nist(["a b c d", "a b x d"], [["a b c d"], ["a b c d"]])
    assert scores.nist_ngram_info == pytest.approx((7 * 2 / 8, 0, 0, 0, 0))
    assert scores.nist == pytest.approx(1.75)


def test_bleu_brevity_uses_the_closest_reference_and_prefers_the_shorter_on_ties():
    # Output of 5 words; references of 6 and 4 words are equally close: 4 is used.
    scores = mteval.mteval_bleu_nist(["a b c d e"], [["a b c d e f", "a b c d"]])
    assert scores.bleu_reference_length == 4
    assert scores.bleu == pytest.approx(1.0)
    short = mteval.mteval_bleu_nist(["a b c d"], [["a b c d e f"]])
    assert short.bleu == pytest.approx(math.exp(1 - 6 / 4))


def test_nist_length_penalty_divides_reference_words_by_the_mean_reference_count():
    # 12 reference words, 3 references over 2 segments -> mean reference length 8;
    # 4 output words -> ratio 1/2 (per-segment means would give 4/7).
    scores = mteval.mteval_bleu_nist(["a b", "a b"], [["a b c d", "a b c d e f"], ["a b"]])
    assert scores.nist_length_penalty == pytest.approx(mteval.nist_length_penalty(0.5))
    assert mteval.nist_length_penalty(2 / 3) == pytest.approx(0.5)
    assert mteval.nist_length_penalty(1.0) == 1.0 and mteval.nist_length_penalty(0.0) == 0.0


def test_smoothing_when_an_ngram_order_has_no_match():
    # 4 words, no bigram match: mteval counts the first order without a match as 1/2 match,
    # the next as 1/4 (precisions 1, 0.5/3, 0.25/2, 0.125/1).
    scores = mteval.mteval_bleu_nist(["a c b d"], [["a b c d"]])
    assert scores.bleu_precisions == pytest.approx((1.0, 0.5 / 3, 0.25 / 2, 0.125 / 1))


def test_bad_input_is_rejected_with_the_reason():
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference groups"):
        mteval.mteval_bleu_nist(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="instance 0 has no reference"):
        mteval.mteval_bleu_nist(["a"], [[]])
    with pytest.raises(ValueError, match="nothing to score"):
        mteval.mteval_bleu_nist([], [])


@needs_data
def test_e2e_tgen_baseline_matches_the_official_perl_scorer():
    references = {}
    with open(os.path.join(E2E_DIR, "testset_w_refs.csv"), encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            references.setdefault(row["mr"], []).append(row["ref"])
    with open(os.path.join(E2E_DIR, "reference_outputs", "tgen.tsv"), encoding="utf-8",
              newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    scores = mteval.mteval_bleu_nist([r["output"] for r in rows], [references[r["MR"]] for r in rows])
    # The official script prints 4 decimals: BLEU 0.6593, NIST 8.6094.
    assert round(scores.bleu, 4) == 0.6593
    assert round(scores.nist, 4) == 8.6094
