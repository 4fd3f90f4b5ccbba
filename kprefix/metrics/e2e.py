"""The E2E NLG challenge scores: BLEU, NIST, METEOR, ROUGE_L, CIDEr.

Matches the official scorer (e2e-metrics ``measure_scores.py`` in its default
mode): BLEU and NIST from mteval-v13a (:mod:`kprefix.metrics.mteval`), METEOR,
ROUGE_L and CIDEr from coco-caption (:mod:`kprefix.metrics.coco_caption`).
On the TGen baseline this gives the published 0.6593 / 8.6094 / 0.4483 /
0.6850 / 2.2338.

Example:
    >>> scores = score_e2e(["The Eagle is a pub."], [["The Eagle is a pub.", "A pub."]],
    ...                    use_java=False)
    >>> round(scores.bleu, 4), scores.as_dict()["METEOR"].startswith("unavailable")
    (1.0, True)
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Sequence, Union

from kprefix.metrics.coco_caption import coco_caption_scores
from kprefix.metrics.mteval import mteval_bleu_nist


@dataclasses.dataclass(frozen=True)
class E2EScores:
    """The five E2E metrics (BLEU in [0, 1], as the official script prints it)."""

    bleu: float
    nist: float
    meteor: Optional[float]
    rouge_l: float
    cider: float
    meteor_unavailable: Optional[str] = None
    tokenizer: str = ""

    def as_dict(self) -> Dict[str, Union[float, str]]:
        """Official metric names; METEOR is the string 'unavailable: <reason>' when not computed."""
        meteor: Union[float, str] = (self.meteor if self.meteor is not None
                                     else f"unavailable: {self.meteor_unavailable}")
        return {"BLEU": self.bleu, "NIST": self.nist, "METEOR": meteor,
                "ROUGE_L": self.rouge_l, "CIDEr": self.cider, "coco_tokenizer": self.tokenizer}


def score_e2e(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
              use_java: Optional[bool] = None, with_meteor: bool = True) -> E2EScores:
    """Scores one output per MR against that MR's references.

    Args:
      hypotheses: system outputs, one per MR, in the order of ``references``.
      references: per MR, all its human references.
      use_java: None uses Java when available (exact coco-caption tokenisation and
        METEOR); False uses the Python tokenizer and skips METEOR.
      with_meteor: False skips METEOR even with Java (it takes ~30 s).
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"E2E: {len(hypotheses)} outputs but {len(references)} MRs with references; "
            "give exactly one output per MR, in the order the MRs first appear in the "
            "reference file.")
    mteval = mteval_bleu_nist(hypotheses, references)
    coco = coco_caption_scores(hypotheses, references, use_java=use_java, with_meteor=with_meteor)
    return E2EScores(bleu=mteval.bleu, nist=mteval.nist, meteor=coco.meteor,
                     rouge_l=coco.rouge_l, cider=coco.cider,
                     meteor_unavailable=coco.meteor_unavailable, tokenizer=coco.tokenizer)
