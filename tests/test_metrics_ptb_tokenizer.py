"""Tests of coco-caption's PTB tokenisation: the Java jar and the Python imitation."""

import csv
import os

import pytest

from kprefix.data.nlg_common import SHARED_DATA_ENV_VAR, default_shared_data_dir
from kprefix.metrics import java
from kprefix.metrics.ptb_tokenizer import coco_tokenize, python_ptb_tokenize

DATA_DIR = os.environ.get(SHARED_DATA_ENV_VAR) or str(default_shared_data_dir())
E2E_DIR = os.path.join(DATA_DIR, "e2e")
JAVA_PROBLEM = java.java_unavailable_reason()


@pytest.mark.parametrize("text, expected", [
    ("It's £20-25 (cheap).", "it 's # 20-25 -lrb- cheap -rrb- ."),
    ('He said "no", didn\'t he?', "he said `` no '' , did n't he ?"),
    ("St. Mary's cannot open... e.g. today", "st. mary 's can not open ... e.g. today"),
    ("A 5-star, family-friendly pub near the U.S.A. border.",
     "a 5-star , family-friendly pub near the u.s.a. border ."),
    ("Rated 4.5/5 - 1,000 reviews; 12% off [today] {x}",
     "rated 4.5/5 - 1,000 reviews ; 12 % off -lsb- today -rsb- -lcb- x -rcb-"),
    ("in the city center., close to it — really", "in the city center. , close to it -- really"),
])
def test_python_tokenizer_follows_the_ptb_lexer(text, expected):
    assert python_ptb_tokenize(text) == expected


def test_coco_tokenize_drops_coco_punctuation_but_keeps_lowercased_brackets():
    # coco-caption compares against "-LRB-" after lower-casing, so "-lrb-" survives.
    assert coco_tokenize(["It's (cheap), isn't it?"], use_java=False) == [
        "it 's -lrb- cheap -rrb- is n't it"]
    assert coco_tokenize([], use_java=False) == []


@pytest.mark.skipif(JAVA_PROBLEM is not None, reason=f"needs Java: {JAVA_PROBLEM}")
@pytest.mark.skipif(not os.path.isdir(E2E_DIR), reason=f"E2E data folder {E2E_DIR} is absent")
def test_python_tokenizer_agrees_with_the_jar_on_the_e2e_test_set():
    texts = []
    with open(os.path.join(E2E_DIR, "testset_w_refs.csv"), encoding="utf-8", newline="") as handle:
        texts += [row["ref"] for row in csv.DictReader(handle)]
    with open(os.path.join(E2E_DIR, "reference_outputs", "tgen.tsv"), encoding="utf-8",
              newline="") as handle:
        texts += [row["output"] for row in csv.DictReader(handle, delimiter="\t")]
    texts += ["", "Two  spaces\nand a newline"]
    from_jar = coco_tokenize(texts, use_java=True)
    from_python = coco_tokenize(texts, use_java=False)
    assert len(from_jar) == len(texts)
    assert from_jar[-2:] == ["", "two spaces and a newline"]
    disagreements = [(t, j, p) for t, j, p in zip(texts, from_jar, from_python) if j != p]
    assert disagreements == []
