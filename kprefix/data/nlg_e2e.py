"""E2E NLG challenge data: the original CSV release and TFDS ``e2e_cleaned``.

Two forms of the same data (``source_format``):

* ``"reference"``: what Li & Liang's prefix-tuning code, and the paper's code
  built on it, train and decode on (their ``data/e2e_data/src1_*.txt``): the
  source ``"name : The Eagle | Type : coffee shop | price : more than £ 30"``
  (``eatType`` -> ``Type``, ``priceRange`` -> ``price``, ``familyFriendly`` ->
  ``family friendly``; values tokenised), and tokenised targets
  (``"Prices start at £ 30 ."``): the training file's own tokens, and
  :func:`tokenize_e2e` for the dev/test references.
* ``"raw"``: the challenge's MR string as is, e.g.
  ``"name[The Eagle], eatType[coffee shop], food[French]"``, and untokenised
  targets: the shared training file ``trainset_tokenized.csv`` only exists in
  a tokenised form, so :func:`read_e2e_csv` *detokenises* it by default
  (``"Prices start at £30."``), to look like the untokenised dev/test
  references; pass ``detokenize=False`` to keep its tokens.

References for one MR are grouped in the order the MR first appears in the
file, which is the order the official E2E scorer expects.

Example:
    >>> parse_mr("name[The Eagle], eatType[coffee shop]")
    [('name', 'The Eagle'), ('eatType', 'coffee shop')]
    >>> reference_source([("name", "The Eagle"), ("priceRange", "£20-25")])
    'name : The Eagle | price : £ 20 - 25'
    >>> detokenize_e2e("It 's a family - friendly pub , prices from £ 20 .")
    "It's a family-friendly pub, prices from £20."
    >>> tokenize_e2e("It's a family-friendly pub, prices from £20.")
    "It 's a family - friendly pub , prices from £ 20 ."
"""

from __future__ import annotations

import csv
import dataclasses
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from kprefix.data.nlg_common import (NLGExample, PathLike, require_file, shared_data_dir,
                                     tfds_not_prepared_error)

E2E_SPLIT_FILES = {
    "train": "trainset_tokenized.csv",
    "validation": "devset.csv",
    "test": "testset_w_refs.csv",
}
_SPLIT_ALIASES = {"dev": "validation", "devel": "validation", "valid": "validation"}

_MR_HEADERS = ("mr", "MR")
_REFERENCE_HEADERS = ("ref", "ref_tokenized")
_TOKENIZED_REFERENCE_HEADER = "ref_tokenized"

_MR_SLOT = re.compile(r"\s*([^\[\],]+?)\s*\[([^\]]*)\]")

SOURCE_FORMATS = ("reference", "raw")
# Attribute names as Li & Liang's src1_*.txt spell them; the others are kept.
REFERENCE_ATTRIBUTE_NAMES = {"eatType": "Type", "priceRange": "price",
                             "familyFriendly": "family friendly"}

_TOKENIZE_RULES = [
    (re.compile(r"([.,;:!?%()\"])"), r" \1 "),
    (re.compile(r"£"), " £ "),
    (re.compile(r"-"), " - "),
    (re.compile(r"(n't|'s|'re|'ll|'ve|'m|'d)\b", re.IGNORECASE), r" \1"),
    (re.compile(r"\s+"), " "),
]

_DETOKENIZE_RULES = [
    (re.compile(r" (n't|'s|'re|'ll|'ve|'m|'d|'t)\b"), r"\1"),
    (re.compile(r"£ (?=\d)"), "£"),
    (re.compile(r"(?<=\d)- £(?=\d)"), "-£"),
    (re.compile(r"(?<=\w) - (?=\w)"), "-"),
    (re.compile(r" ([.,;:!?%])"), r"\1"),
    (re.compile(r"\s+"), " "),
]


def parse_mr(mr: str) -> List[Tuple[str, str]]:
    """Splits an MR string into (attribute, value) pairs, keeping their order."""
    slots = _MR_SLOT.findall(mr)
    if not slots and mr.strip():
        raise ValueError(f"not an E2E meaning representation (want 'attr[value], ...'): {mr!r}")
    return slots


def linearize_mr(slots: Iterable[Tuple[str, str]]) -> str:
    """Builds the MR string ``attr[value], attr[value]`` the model reads.

    >>> linearize_mr([("name", "Alimentum"), ("area", "city centre")])
    'name[Alimentum], area[city centre]'
    """
    return ", ".join(f"{attribute}[{value}]" for attribute, value in slots)


def reference_source(slots: Iterable[Tuple[str, str]]) -> str:
    """The source line of Li & Liang's ``src1_*.txt``: ``attr : value | attr : value``."""
    return " | ".join(f"{REFERENCE_ATTRIBUTE_NAMES.get(attribute, attribute)} : "
                      f"{tokenize_e2e(value)}" for attribute, value in slots)


def tokenize_e2e(text: str) -> str:
    """Tokenises like the E2E ``*_tokenized`` files: punctuation, clitics, £ and hyphens apart.

    On the dev and test references it reproduces Li & Liang's ``src1_*.txt``
    lines exactly for about 98.5% of them (the rest differ in the spacing of
    quotes, clitics and hyphens the original tokeniser treated specially), and
    every source value exactly.
    """
    for pattern, replacement in _TOKENIZE_RULES:
        text = pattern.sub(replacement, text)
    return text.strip()


def detokenize_e2e(text: str) -> str:
    """Undoes the tokenisation of ``trainset_tokenized.csv`` (punctuation, clitics, £, hyphens)."""
    for pattern, replacement in _DETOKENIZE_RULES:
        text = pattern.sub(replacement, text)
    return text.strip()


def group_references(rows: Iterable[Tuple[str, str]]) -> List[NLGExample]:
    """Groups (MR, reference) rows by MR, in order of each MR's first appearance."""
    grouped: Dict[str, List[str]] = {}
    for mr, reference in rows:
        grouped.setdefault(mr, [])
        if reference:
            grouped[mr].append(reference)
    return [NLGExample(source=mr, targets=tuple(references), example_id=str(index))
            for index, (mr, references) in enumerate(grouped.items())]


def _pick_column(header: Sequence[str], candidates: Sequence[str], path: PathLike, what: str) -> str:
    for name in candidates:
        if name in header:
            return name
    raise ValueError(f"{path}: no {what} column (looked for {', '.join(candidates)}; "
                     f"the header is {', '.join(header)})")


def read_e2e_csv(path: PathLike, detokenize: bool = True) -> List[NLGExample]:
    """Reads an E2E CSV (``mr,ref`` / ``mr,ref_tokenized`` / ``MR`` only) into grouped examples.

    Args:
      path: the CSV file.
      detokenize: for a ``ref_tokenized`` column, undo the tokenisation (see module doc).

    Returns:
      One :class:`NLGExample` per distinct MR; ``targets`` is empty for MR-only files.
    """
    path = require_file(path, "E2E CSV file")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        mr_column = _pick_column(header, _MR_HEADERS, path, "MR")
        reference_column = next((name for name in _REFERENCE_HEADERS if name in header), None)
        rows = []
        for row in reader:
            reference = row[reference_column] if reference_column else ""
            if reference and reference_column == _TOKENIZED_REFERENCE_HEADER and detokenize:
                reference = detokenize_e2e(reference)
            rows.append((row[mr_column], reference))
    return group_references(rows)


def _canonical_split(split: str) -> str:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in E2E_SPLIT_FILES:
        raise ValueError(f"unknown E2E split {split!r}; use one of {', '.join(E2E_SPLIT_FILES)}")
    return split


def load_e2e(split: str, data_dir: Optional[PathLike] = None, detokenize: bool = True,
             source_format: str = "raw") -> List[NLGExample]:
    """Loads an E2E split from the shared CSV release (``<data>/e2e/<file>``).

    Args:
      split: train, validation (dev) or test.
      data_dir: the folder holding ``e2e/``; default :func:`shared_data_dir`.
      detokenize: ``"raw"`` only: undo the training file's tokenisation.
      source_format: ``"reference"`` or ``"raw"`` (see the module doc).

    >>> examples = load_e2e("validation")  # doctest: +REQUIRES_BENCHMARK_DATA
    >>> len(examples), examples[0].source  # doctest: +REQUIRES_BENCHMARK_DATA
    (547, 'name[Alimentum], area[city centre], familyFriendly[no]')
    >>> load_e2e("validation",  # doctest: +REQUIRES_BENCHMARK_DATA
    ...          source_format="reference")[0].source
    'name : Alimentum | area : city centre | family friendly : no'
    """
    if source_format not in SOURCE_FORMATS:
        raise ValueError(f"unknown E2E source format {source_format!r}; use one of "
                         f"{', '.join(SOURCE_FORMATS)}")
    split = _canonical_split(split)  # a bad split fails before the folder
    folder = shared_data_dir(data_dir) / "e2e"
    reference = source_format == "reference"
    examples = read_e2e_csv(folder / E2E_SPLIT_FILES[split],
                            detokenize=detokenize and not reference)
    if not reference:
        return examples
    already_tokenized = split == "train"
    return [dataclasses.replace(
        example, source=reference_source(parse_mr(example.source)),
        targets=example.targets if already_tokenized
        else tuple(tokenize_e2e(t) for t in example.targets)) for example in examples]


def e2e_example_from_tfds(features: Mapping) -> Tuple[str, str]:
    """(MR string, reference) from one decoded TFDS ``e2e_cleaned`` example."""
    table = features["input_text"]["table"]
    headers = [_as_text(h) for h in table["column_header"]]
    contents = [_as_text(c) for c in table["content"]]
    return linearize_mr(zip(headers, contents)), _as_text(features["target_text"])


def _as_text(value) -> str:
    if hasattr(value, "numpy"):
        value = value.numpy()
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_e2e_tfds(split: str, data_dir: Optional[PathLike] = None) -> List[NLGExample]:
    """Loads TFDS ``e2e_cleaned`` (cleaned E2E release) into grouped examples.

    The dataset must already be built (``tfds build e2e_cleaned``): this
    machine cannot download it, and a missing build raises FileNotFoundError.
    """
    import tensorflow_datasets as tfds  # heavy import, only for this code path

    builder = tfds.builder("e2e_cleaned", data_dir=None if data_dir is None else str(data_dir))
    if not builder.is_prepared():
        raise tfds_not_prepared_error("e2e_cleaned", data_dir)
    dataset = builder.as_dataset(split=_canonical_split(split))
    return group_references(e2e_example_from_tfds(example) for example in tfds.as_numpy(dataset))
