"""WebNLG challenge 2017 data: the challenge XML and TFDS ``web_nlg``.

Each entry is a set of DBpedia triples with one or more lexicalisations.
Two source forms (``source_format``):

* ``"reference"``: the string Li & Liang's code (and the paper's, built on it)
  feeds GPT-2 (``LineByLineWebNLGTextDataset``): every (modified) triple
  becomes ``" | subject : property : object"``, concatenated, so the source
  starts with ``" | "``; DBpedia's underscores are kept. Training keeps only
  the lexicalisations marked ``comment="good"``, as that code does.
* ``"raw"``: the triples joined with ``" | "`` and underscores turned into
  spaces (:func:`linearize_triples`); all lexicalisations.

Test entries keep their category and whether it is *seen* (one of the ten
training categories) or *unseen* (the five categories new in the test set).

Example:
    >>> triples = [("Abilene_Regional_Airport", "cityServed", "Abilene,_Texas"),
    ...            ("Abilene,_Texas", "isPartOf", "Texas")]
    >>> linearize_triples(triples)
    'Abilene Regional Airport : cityServed : Abilene, Texas | Abilene, Texas : isPartOf : Texas'
    >>> reference_source(triples)
    ' | Abilene_Regional_Airport : cityServed : Abilene,_Texas | Abilene,_Texas : isPartOf : Texas'
"""

from __future__ import annotations

import dataclasses
import pathlib
import xml.etree.ElementTree as ElementTree
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from kprefix.data.nlg_e2e import SOURCE_FORMATS
from kprefix.data.nlg_common import (NLGExample, PathLike, require_file, shared_data_dir,
                                     tfds_not_prepared_error)

# The test set's five categories that the training data does not cover.
WEBNLG2017_UNSEEN_CATEGORIES = frozenset(
    ["Artist", "Athlete", "CelestialBody", "MeanOfTransportation", "Politician"])

WEBNLG_TEST_FILE = "test/testdata_with_lex.xml"
_SPLIT_ALIASES = {"validation": "dev", "valid": "dev"}
# Our split names -> TFDS web_nlg's (which also has "test_unseen").
_TFDS_SPLITS = {"dev": "validation", "valid": "validation", "test": "test_all"}

Triple = Tuple[str, str, str]


def linearize_triples(triples: Iterable[Sequence[str]]) -> str:
    """``"s : p : o | s : p : o"`` with underscores turned into spaces."""
    return " | ".join(" : ".join(part.replace("_", " ") for part in triple) for triple in triples)


def reference_source(triples: Iterable[Sequence[str]]) -> str:
    """``" | s : p : o | s : p : o"`` as Li & Liang's WebNLG dataset builds it (underscores kept)."""
    return "".join(" | " + " : ".join(triple) for triple in triples)


def parse_triple(text: str) -> Triple:
    """Splits the XML form ``"subject | property | object"`` into its three parts."""
    parts = [part.strip() for part in text.split(" | ")]
    if len(parts) != 3:
        raise ValueError(f"not a WebNLG triple (want 'subject | property | object'): {text!r}")
    return parts[0], parts[1], parts[2]


def is_seen_category(category: str) -> bool:
    """True for the ten WebNLG 2017 categories that training covers."""
    return category not in WEBNLG2017_UNSEEN_CATEGORIES


def read_webnlg_xml(paths: Iterable[PathLike], good_only: bool = False) -> List[NLGExample]:
    """Reads WebNLG 2017 challenge XML files (in the given order) into examples.

    Args:
      paths: XML files; entries keep file order, then document order.
      good_only: keep only lexicalisations with ``comment="good"`` (the training
        files also have a few marked ``toFix``); default keeps all of them.
    """
    examples = []
    for path in paths:
        path = require_file(path, "WebNLG XML file")
        root = ElementTree.parse(path).getroot()
        for entry in root.iter("entry"):
            category = entry.get("category", "")
            triples = tuple(parse_triple(t.text or "") for t in entry.iter("mtriple"))
            lexicalisations = [lex for lex in entry.findall("lex")
                               if not good_only or lex.get("comment") == "good"]
            examples.append(NLGExample(
                source=linearize_triples(triples),
                targets=tuple(" ".join((lex.text or "").split()) for lex in lexicalisations),
                example_id=entry.get("eid", ""),
                category=category,
                seen=is_seen_category(category),
                triples=triples,
            ))
    return examples


def webnlg_split_files(split: str, data_dir: Optional[PathLike] = None) -> List[pathlib.Path]:
    """The XML files of a split: train/dev by number of triples, or the full test file."""
    split = _SPLIT_ALIASES.get(split, split)
    if split not in ("train", "dev", "test"):
        raise ValueError(f"unknown WebNLG split {split!r}; use train, dev (validation) or test")
    folder = shared_data_dir(data_dir) / "webnlg2017"
    if split == "test":
        return [folder / WEBNLG_TEST_FILE]
    files = sorted((folder / split).glob("*triples/*.xml"),
                   key=lambda p: (int(p.parent.name.split("triple")[0]), p.name))
    if not files:
        raise FileNotFoundError(f"no WebNLG XML files under {folder / split}/<n>triples/")
    return files




def load_webnlg(split: str, data_dir: Optional[PathLike] = None, good_only: bool = False,
                source_format: str = "raw") -> List[NLGExample]:
    """Loads a WebNLG 2017 split from ``<data>/webnlg2017``.

    Args:
      split: train, dev (validation) or test.
      data_dir: the folder holding ``webnlg2017/``; default :func:`shared_data_dir`.
      good_only: keep only lexicalisations marked good (``"reference"`` does
        so for the train split whatever this says).
      source_format: ``"reference"`` or ``"raw"`` (see the module doc).

    >>> test = load_webnlg("test")  # doctest: +REQUIRES_BENCHMARK_DATA
    >>> len(test), sum(e.seen for e in test)  # doctest: +REQUIRES_BENCHMARK_DATA
    (1862, 971)
    """
    if source_format not in SOURCE_FORMATS:
        raise ValueError(f"unknown WebNLG source format {source_format!r}; use one of "
                         f"{', '.join(SOURCE_FORMATS)}")
    reference = source_format == "reference"
    good_only = good_only or (reference and _SPLIT_ALIASES.get(split, split) == "train")
    examples = read_webnlg_xml(webnlg_split_files(split, data_dir), good_only=good_only)
    if reference:
        examples = [dataclasses.replace(e, source=reference_source(e.triples)) for e in examples]
    return examples


def webnlg_example_from_tfds(features: Mapping) -> Tuple[str, str, str]:
    """(source, reference, category) from one decoded TFDS ``web_nlg`` example."""
    table = features["input_text"]["table"]
    rows: dict = {}
    for header, row, content in zip(table["column_header"], table["row_number"], table["content"]):
        rows.setdefault(int(row), {})[_as_text(header)] = _as_text(content)
    triples = [(r.get("subject", ""), r.get("predicate", ""), r.get("object", ""))
               for _, r in sorted(rows.items())]
    return (linearize_triples(triples), _as_text(features["target_text"]),
            _as_text(features["input_text"]["context"]))


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_webnlg_tfds(split: str, data_dir: Optional[PathLike] = None) -> List[NLGExample]:
    """Loads TFDS ``web_nlg`` (train, validation/dev, test_all/test, test_unseen), grouped by input.

    TFDS yields one example per lexicalisation, in its own (shuffled) order;
    lexicalisations of the same triples and category are grouped back into one
    multi-reference example, in order of first appearance. The dataset must
    already be built (``tfds build web_nlg``).
    """
    import tensorflow_datasets as tfds  # heavy import, only for this code path

    builder = tfds.builder("web_nlg", data_dir=None if data_dir is None else str(data_dir))
    if not builder.is_prepared():
        raise tfds_not_prepared_error("web_nlg", data_dir)
    grouped: Dict[Tuple[str, str], List[str]] = {}
    for features in tfds.as_numpy(builder.as_dataset(split=_TFDS_SPLITS.get(split, split))):
        source, reference, category = webnlg_example_from_tfds(features)
        grouped.setdefault((source, category), []).append(reference)
    return [NLGExample(source=source, targets=tuple(references), example_id=str(index),
                       category=category, seen=is_seen_category(category))
            for index, ((source, category), references) in enumerate(grouped.items())]
