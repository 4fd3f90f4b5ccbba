"""The WebNLG 2017 challenge scores: BLEU, METEOR and TER on seen, unseen and all categories.

Follows the challenge's evaluation scripts (as used by prefix-tuning):

* outputs are normalised like the references: ASCII transliteration
  (unidecode), lower-casing, and a space around every non-word character;
* BLEU: ``multi-bleu.perl -lc`` against the first three reference slots
  (``gold-*-reference{0,1,2}.lex``), x100;
* METEOR: METEOR 1.5 ``-l en -norm -r 3`` against ``gold-*-reference-3ref.meteor``;
* TER: tercom 0.7.25 against ``gold-*-reference-3ref.ter``;
* *seen* = the ten categories of the training data, *unseen* = the five new
  ones; the subset files of the official references are the "all" files
  filtered by category, in test order.

Example:
    >>> normalize_webnlg_output("Adolfo Suárez Madrid–Barajas Airport is in Madrid.")
    'adolfo suarez madrid - barajas airport is in madrid .'
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Dict, List, Optional, Sequence, Union

from unidecode import unidecode

from kprefix.data.nlg_common import PathLike, require_file
from kprefix.metrics import java
from kprefix.metrics.meteor import MeteorScorer
from kprefix.metrics.multi_bleu import multi_bleu
from kprefix.metrics.ter import read_tercom_references, segment_ter_statistics, ter_from_statistics

SUBSETS = ("seen", "unseen", "all")
NUM_BLEU_REFERENCES = 3
NUM_METEOR_REFERENCES = 3
_NON_WORD = re.compile(r"(\W)")


def normalize_webnlg_output(text: str) -> str:
    """The challenge's normalisation of system outputs (and, before release, of references)."""
    text = unidecode(text.strip()).lower()
    return " ".join(" ".join(_NON_WORD.split(text)).split())


@dataclasses.dataclass(frozen=True)
class WebNLGReferences:
    """The official test references, per entry in test order, and each entry's seen flag."""

    bleu: List[List[str]]
    meteor: List[List[str]]
    ter: List[List[str]]
    seen: List[bool]

    def __len__(self) -> int:
        return len(self.seen)


def read_text_lines(path: PathLike) -> List[str]:
    """Lines of a UTF-8 file without their newlines; empty lines kept, no phantom last line."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def read_webnlg_references(eval_references_dir: PathLike, seen: Sequence[bool]) -> WebNLGReferences:
    """Reads the official ``gold-all-cat-*`` reference files of the 2017 test set.

    Args:
      eval_references_dir: the folder with ``gold-all-cat-reference0.lex`` etc.
      seen: per test entry, whether its category is seen (see
        :func:`kprefix.data.nlg_webnlg.load_webnlg` for the test split).
    """
    folder = pathlib.Path(eval_references_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"WebNLG eval_references folder not found: {folder}")
    num_entries = len(seen)
    slots = []
    for slot in range(NUM_BLEU_REFERENCES):
        path = require_file(folder / f"gold-all-cat-reference{slot}.lex", "WebNLG BLEU reference file")
        lines = read_text_lines(path)
        if len(lines) != num_entries:
            raise ValueError(f"{path} has {len(lines)} lines but the test set has {num_entries} "
                             "entries; use the references of the same test set")
        slots.append(lines)
    meteor_path = require_file(folder / "gold-all-cat-reference-3ref.meteor",
                               "WebNLG METEOR reference file")
    meteor_lines = read_text_lines(meteor_path)
    if len(meteor_lines) != NUM_METEOR_REFERENCES * num_entries:
        raise ValueError(f"{meteor_path} has {len(meteor_lines)} lines; "
                         f"{NUM_METEOR_REFERENCES} per entry x {num_entries} entries expected")
    ter_path = require_file(folder / "gold-all-cat-reference-3ref.ter", "WebNLG TER reference file")
    ter_references = read_tercom_references(str(ter_path))
    if len(ter_references) != num_entries:
        raise ValueError(f"{ter_path} has references for {len(ter_references)} ids but the test "
                         f"set has {num_entries} entries")
    return WebNLGReferences(
        bleu=[list(group) for group in zip(*slots)],
        meteor=[meteor_lines[i * NUM_METEOR_REFERENCES:(i + 1) * NUM_METEOR_REFERENCES]
                for i in range(num_entries)],
        ter=ter_references,
        seen=list(seen),
    )


def _subset_indices(seen: Sequence[bool]) -> Dict[str, List[int]]:
    subsets = {"seen": [i for i, s in enumerate(seen) if s],
               "unseen": [i for i, s in enumerate(seen) if not s],
               "all": list(range(len(seen)))}
    return {name: indices for name, indices in subsets.items() if indices}


def score_webnlg(predictions: Sequence[str], references: WebNLGReferences,
                 use_java: Optional[bool] = None, with_meteor: bool = True
                 ) -> Dict[str, Union[Dict[str, float], Dict[str, int], str]]:
    """BLEU (x100), METEOR and TER for seen / unseen / all test entries.

    Args:
      predictions: one output per test entry, in test order (raw text is fine:
        it is normalised like the official script does).
      references: from :func:`read_webnlg_references`.
      use_java: None = METEOR when Java is available; False skips METEOR.
      with_meteor: False skips METEOR (it takes ~35 s).

    Returns:
      ``{"BLEU": {...}, "METEOR": {...} or "unavailable: <reason>", "TER": {...},
      "num_entries": {...}}`` keyed by subset.
    """
    if len(predictions) != len(references):
        raise ValueError(f"WebNLG: {len(predictions)} predictions but the test set has "
                         f"{len(references)} entries; write one output per line, in test order")
    outputs = [normalize_webnlg_output(p) for p in predictions]
    subsets = _subset_indices(references.seen)
    scores: Dict[str, Union[Dict[str, float], Dict[str, int], str]] = {
        "num_entries": {name: len(indices) for name, indices in subsets.items()}}

    scores["BLEU"] = {name: multi_bleu([outputs[i] for i in indices],
                                       [references.bleu[i] for i in indices]).bleu
                      for name, indices in subsets.items()}

    java_problem = java.java_unavailable_reason()
    if not with_meteor:
        scores["METEOR"] = "unavailable: METEOR was not requested"
    elif use_java is False or java_problem is not None:
        scores["METEOR"] = f"unavailable: {java_problem or 'Java use was switched off'}"
    else:
        with MeteorScorer() as scorer:
            statistics = [scorer.segment_statistics(o, r) for o, r in zip(outputs, references.meteor)]
            scores["METEOR"] = {name: scorer.evaluate([statistics[i] for i in indices])[0]
                                for name, indices in subsets.items()}

    ter_statistics = [segment_ter_statistics(o, r) for o, r in zip(outputs, references.ter)]
    scores["TER"] = {name: ter_from_statistics([ter_statistics[i] for i in indices]).ter
                     for name, indices in subsets.items()}
    return scores
