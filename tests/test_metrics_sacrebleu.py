"""BLEU comes from sacrebleu: multi-bleu.perl and mteval figures computed by it."""

import os

import pytest
import sacrebleu

from kprefix.data.nlg_common import locate_shared_data_dir
from kprefix.metrics import mteval
from kprefix.metrics.multi_bleu import multi_bleu
from kprefix.metrics.webnlg import normalize_webnlg_output, read_text_lines, read_webnlg_references

WEBNLG_DIR = locate_shared_data_dir()[0] / "webnlg2017"


def test_bleu_is_computed_by_sacrebleu_with_the_scripts_settings():
    result = multi_bleu(["a b c d", "a b x d"], [["a b c d"], ["a b c d", ""]])
    assert "|tok:none|smooth:none|" in result.signature
    assert f"version:{sacrebleu.__version__}" in result.signature
    scores = mteval.mteval_bleu_nist(["a b c d"], [["a b c d e"]])
    assert "|tok:none|smooth:exp|" in scores.bleu_signature


@pytest.mark.skipif(not WEBNLG_DIR.is_dir(), reason=f"WebNLG folder {WEBNLG_DIR} is absent")
def test_webnlg_bleu_is_sacrebleus_corpus_bleu():
    outputs = [normalize_webnlg_output(line) for line in read_text_lines(
        os.path.join(WEBNLG_DIR, "reference_outputs", "bart-large_webnlg-all.txt"))]
    references = read_webnlg_references(os.path.join(WEBNLG_DIR, "eval_references"),
                                        [True] * len(outputs)).bleu
    ours = multi_bleu(outputs, references)
    streams = [[group[k] for group in references] for k in range(len(references[0]))]
    theirs = sacrebleu.corpus_bleu([o.lower() for o in outputs],
                                   [[r.lower() for r in s] for s in streams],
                                   tokenize="none", smooth_method="none")
    assert round(ours.bleu, 4) == round(theirs.score, 4) == 58.0641
