"""Tests of the WebNLG 2017 scorer (BLEU, TER, METEOR wiring) on the official references."""

import os
import shutil

import pytest

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.data.nlg_webnlg import load_webnlg
from kprefix.metrics import webnlg
from kprefix.metrics.webnlg import (normalize_webnlg_output, read_text_lines,
                                    read_webnlg_references, score_webnlg)

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
WEBNLG_DIR = os.path.join(DATA_DIR, "webnlg2017")
REFERENCES_DIR = os.path.join(WEBNLG_DIR, "eval_references")
BART_OUTPUTS = os.path.join(WEBNLG_DIR, "reference_outputs", "bart-large_webnlg-all.txt")
needs_data = pytest.mark.skipif(not os.path.isdir(WEBNLG_DIR),
                                reason=f"WebNLG folder {WEBNLG_DIR} is absent")

# The challenge scripts (multi-bleu.perl -lc, tercom 0.7.25) on the BART-large outputs.
OFFICIAL_BLEU = {"seen": 64.51, "unseen": 50.20, "all": 58.06}
OFFICIAL_TER = {"seen": 0.32312, "unseen": 0.44137, "all": 0.37733}


@pytest.fixture(scope="module")
def seen_flags():
    return [bool(e.seen) for e in load_webnlg("test", DATA_DIR)]


@pytest.fixture(scope="module")
def references(seen_flags):
    return read_webnlg_references(REFERENCES_DIR, seen_flags)


@pytest.fixture(scope="module")
def bart_scores(references):
    return score_webnlg(read_text_lines(BART_OUTPUTS), references, with_meteor=False)


@needs_data
@pytest.mark.parametrize("subset", list(OFFICIAL_BLEU))
def test_bleu_matches_multi_bleu_perl(bart_scores, subset):
    assert bart_scores["BLEU"][subset] == pytest.approx(OFFICIAL_BLEU[subset], abs=0.05)


@needs_data
@pytest.mark.parametrize("subset", list(OFFICIAL_TER))
def test_ter_matches_tercom(bart_scores, subset):
    assert bart_scores["TER"][subset] == pytest.approx(OFFICIAL_TER[subset], abs=0.002)


@needs_data
def test_subset_sizes_and_meteor_marked_not_requested(bart_scores):
    assert bart_scores["num_entries"] == {"seen": 971, "unseen": 891, "all": 1862}
    assert bart_scores["METEOR"] == "unavailable: METEOR was not requested"


@needs_data
@pytest.mark.parametrize("subset, category_files", [("seen", "old-cat"), ("unseen", "new-cat")])
def test_seen_and_unseen_files_are_the_all_files_filtered_by_category(
        references, seen_flags, subset, category_files):
    wanted = subset == "seen"
    for slot in range(3):
        official = read_text_lines(os.path.join(
            REFERENCES_DIR, f"gold-{category_files}-reference{slot}.lex"))
        assert official == [r[slot] for r, s in zip(references.bleu, seen_flags) if s == wanted]


@needs_data
def test_meteor_statistics_are_aggregated_per_subset(references, monkeypatch):
    evaluated = []

    class FakeMeteor:
        def __init__(self, *args):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *args):
            pass

        def segment_statistics(self, output, refs):
            assert len(refs) == 3
            return output

        def evaluate(self, statistics):
            evaluated.append(list(statistics))
            return float(len(statistics)), []

    monkeypatch.setattr(webnlg, "MeteorScorer", FakeMeteor)
    monkeypatch.setattr(webnlg.java, "java_unavailable_reason", lambda: None)
    outputs = [f"output {i}" for i in range(len(references))]
    scores = score_webnlg(outputs, references)
    assert scores["METEOR"] == {"seen": 971.0, "unseen": 891.0, "all": 1862.0}
    seen_outputs = [o for o, s in zip(outputs, references.seen) if s]
    assert evaluated[0] == seen_outputs and evaluated[2] == outputs


@needs_data
def test_meteor_is_unavailable_without_java(references, monkeypatch):
    monkeypatch.setenv("KPREFIX_JAVA", "/nonexistent/bin/java")
    outputs = read_text_lines(BART_OUTPUTS)[:971]
    seen_only = webnlg.WebNLGReferences(references.bleu[:971], references.meteor[:971],
                                        references.ter[:971], references.seen[:971])
    scores = score_webnlg(outputs, seen_only)
    assert scores["METEOR"].startswith("unavailable: no Java runtime found")
    assert list(scores["BLEU"]) == ["seen", "all"]  # no unseen entries in this slice


def test_outputs_are_normalized_like_the_challenge_script():
    assert normalize_webnlg_output("  Adolfo Suárez Madrid–Barajas Airport's runway is 18L/36R.\n") == (
        "adolfo suarez madrid - barajas airport ' s runway is 18l / 36r .")


@needs_data
def test_wrong_prediction_count_and_reference_files_are_reported(references, tmp_path, seen_flags):
    with pytest.raises(ValueError, match="3 predictions but the test set has 1862 entries"):
        score_webnlg(["a", "b", "c"], references, with_meteor=False)
    with pytest.raises(ValueError, match="has 1862 lines but the test set has 10 entries"):
        read_webnlg_references(REFERENCES_DIR, seen_flags[:10])
    partial = tmp_path / "eval_references"
    partial.mkdir()
    shutil.copy(os.path.join(REFERENCES_DIR, "gold-all-cat-reference0.lex"), partial)
    with pytest.raises(FileNotFoundError, match="WebNLG BLEU reference file not found"):
        read_webnlg_references(partial, seen_flags)


def test_read_text_lines_keeps_blank_lines_and_ignores_the_final_newline(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("a\n\nb\n", encoding="utf-8")
    assert read_text_lines(path) == ["a", "", "b"]
    path.write_text("a\n\nb", encoding="utf-8")
    assert read_text_lines(path) == ["a", "", "b"]
