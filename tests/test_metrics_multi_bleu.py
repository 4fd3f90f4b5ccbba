"""Tests of the multi-bleu.perl BLEU used by the WebNLG scorer."""

import math

import pytest

from kprefix.metrics.multi_bleu import multi_bleu


def test_two_sentence_toy_by_hand():
    # Sentence 2 "a b x d" vs "a b c d": 3/4 unigrams, 1/3 bigrams, 0/2 trigrams -> with
    # sentence 1 perfect: precisions 7/8, 4/6, 2/4, 1/2, lengths equal.
    result = multi_bleu(["a b c d", "a b x d"], [["a b c d"], ["a b c d"]])
    assert result.precisions == pytest.approx((7 / 8, 4 / 6, 2 / 4, 1 / 2))
    assert result.bleu == pytest.approx(100 * (7 / 8 * 4 / 6 * 2 / 4 * 1 / 2) ** 0.25)
    assert result.perl_line().startswith("BLEU = 61.80, 87.5/66.7/50.0/50.0 (BP=1.000")


def test_lowercasing_is_the_lc_flag_and_ascii_only():
    assert multi_bleu(["The Cat sat on it"], [["the cat sat on it"]]).bleu == pytest.approx(100)
    assert multi_bleu(["The Cat sat on it"], [["the cat sat on it"]], lowercase=False).bleu < 100
    # Perl's byte-wise lc leaves "É" alone, so "École" and "école" differ.
    ascii_only = multi_bleu(["École is a b c"], [["école is a b c"]])
    assert ascii_only.precisions[0] == pytest.approx(4 / 5)
    unicode_aware = multi_bleu(["École is a b c"], [["école is a b c"]], ascii_only_lowercase=False)
    assert unicode_aware.bleu == pytest.approx(100)


def test_no_tokenization_and_no_smoothing():
    # "mat." and "mat" are different tokens; no 4-gram match means BLEU 0.
    result = multi_bleu(["the cat sat mat."], [["the cat sat mat"]])
    assert result.precisions[3] == 0 and result.bleu == 0


def test_brevity_penalty_and_empty_reference_slots():
    short = multi_bleu(["a b c d"], [["a b c d e f g h"]])
    assert short.brevity_penalty == pytest.approx(math.exp(1 - 8 / 4))
    # An empty slot (a blank line in reference file 2) is a reference of length 0:
    # it ties with the 8-word one (both 4 away) and wins as the shorter.
    outputs = ["a b c d", "a b"]
    padded = multi_bleu(outputs, [["a b c d e f g h", ""], ["a b c d"]])
    assert (padded.hypothesis_length, padded.reference_length) == (6, 4)
    assert padded.brevity_penalty == 1.0
    unpadded = multi_bleu(outputs, [["a b c d e f g h"], ["a b c d"]])
    assert unpadded.brevity_penalty == pytest.approx(math.exp(1 - 12 / 6))


def test_mismatched_line_counts_are_rejected():
    with pytest.raises(ValueError, match="same number of lines"):
        multi_bleu(["a", "b"], [["a"]])
