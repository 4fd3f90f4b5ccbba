"""Tests of the tercom-compatible TER."""

import os

import pytest
from sacrebleu.metrics.ter import TER

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.metrics import ter
from kprefix.metrics.webnlg import normalize_webnlg_output, read_text_lines

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
WEBNLG_DIR = os.path.join(DATA_DIR, "webnlg2017")


def test_a_block_shift_costs_one_edit():
    # "b c d a" -> "a b c d": one shift of "a" instead of two edits.
    assert ter.segment_ter_statistics("b c d a", ["a b c d"]) == (1, 4.0)
    assert ter.ter_score(["b c d a"], [["a b c d"]]).ter == pytest.approx(0.25)


def test_shift_plus_substitution():
    # Move "d e" to the front (1 shift), then "x" -> "c" (1 substitution): 2 edits / 5 words.
    assert ter.segment_ter_statistics("a b x d e", ["d e a b c"]) == (2, 5.0)


def test_best_reference_edits_over_average_reference_length():
    edits, length = ter.segment_ter_statistics("the cat sat", ["the cat sat down", "a cat"])
    assert (edits, length) == (1, 3.0)   # 1 insertion vs the first; (4 + 2) / 2 words
    corpus = ter.ter_from_statistics([(1, 3.0), (2, 5.0)])
    assert corpus.ter == pytest.approx(3 / 8)


def test_case_insensitive_by_default_and_empty_references():
    assert ter.segment_ter_statistics("The Cat", ["the cat"]) == (0, 2.0)
    assert ter.segment_ter_statistics("The Cat", ["the cat"], case_sensitive=True)[0] == 2
    assert ter.segment_ter_statistics("a b", [""]) == (2, 0.0)
    assert ter.ter_from_statistics([(2, 0.0)]).ter == 1.0


def test_move_block_semantics():
    words = list("abcdef")
    assert ter._move_block(words, 3, 2, 1) == list("adebcf")     # earlier target
    assert ter._move_block(words, 0, 2, 5) == list("cdeabf")     # later target
    assert ter._move_block(words, 1, 2, 3) == list("adebcf")     # target inside: counted after removal


def test_tercom_reference_files_are_grouped_by_id(tmp_path):
    path = tmp_path / "refs.ter"
    path.write_text("a b (id1)\nc d (id1)\n\ne f (id2)\n", encoding="utf-8")
    assert ter.read_tercom_references(str(path)) == [["a b", "c d"], ["e f"]]
    path.write_text("no id here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="refs.ter:1: not in tercom"):
        ter.read_tercom_references(str(path))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference groups"):
        ter.ter_score(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="at least one reference"):
        ter.segment_ter_statistics("a", [])


@pytest.mark.skipif(not os.path.isdir(WEBNLG_DIR), reason=f"WebNLG folder {WEBNLG_DIR} is absent")
def test_agrees_with_sacrebleu_segment_by_segment_on_webnlg_outputs():
    # sacrebleu ports tercom but is ~50x slower; compare on a slice of real segments.
    outputs = read_text_lines(os.path.join(WEBNLG_DIR, "reference_outputs",
                                           "bart-large_webnlg-all.txt"))
    references = ter.read_tercom_references(
        os.path.join(WEBNLG_DIR, "eval_references", "gold-all-cat-reference-3ref.ter"))
    sacrebleu_ter = TER()
    for index in range(1500, 1530):
        hypothesis = normalize_webnlg_output(outputs[index])
        theirs = sacrebleu_ter.corpus_score([hypothesis], [[r] for r in references[index]])
        edits, length = ter.segment_ter_statistics(hypothesis, references[index])
        assert (edits, length) == pytest.approx((theirs.num_edits, theirs.ref_length)), index
