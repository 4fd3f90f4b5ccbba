"""METEOR, ROUGE_L and CIDEr as coco-caption computes them (the E2E scorer's second half).

coco-caption first PTB-tokenises every hypothesis and reference (lower-cased,
punctuation dropped; see :mod:`kprefix.metrics.ptb_tokenizer`), then scores the
tokens with its ``Rouge`` (sentence ROUGE-L F with beta 1.2, averaged),
``Cider`` (CIDEr-D, document frequencies from the references) and ``Meteor``
(METEOR 1.5 jar). ROUGE_L and CIDEr come straight from pycocoevalcap's
scorers. Without Java the tokenisation falls back to the Python imitation of
the PTB tokenizer and METEOR is reported unavailable.

Example:
    >>> scores = coco_caption_scores(["The Eagle is a pub."], [["The Eagle is a pub."]],
    ...                              use_java=False)
    >>> round(scores.rouge_l, 4), scores.meteor_unavailable is not None
    (1.0, True)
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from kprefix.metrics import java
from kprefix.metrics.meteor import meteor_score
from kprefix.metrics.ptb_tokenizer import coco_tokenize

JAVA_TOKENIZER = "stanford-corenlp-3.4.1 PTBTokenizer (java)"
PYTHON_TOKENIZER = "python imitation of the PTB tokenizer (no java)"


@dataclasses.dataclass(frozen=True)
class CocoCaptionScores:
    """Corpus scores; ``meteor`` is None when ``meteor_unavailable`` says why."""

    rouge_l: float
    cider: float
    meteor: Optional[float]
    meteor_unavailable: Optional[str]
    tokenizer: str


def _tokenize_all(hypotheses: Sequence[str], references: Sequence[Sequence[str]], use_java: bool):
    flat_references = [reference for group in references for reference in group]
    tokenized = coco_tokenize(list(flat_references) + list(hypotheses), use_java=use_java)
    tokenized_hypotheses = tokenized[len(flat_references):]
    remaining = iter(tokenized[:len(flat_references)])
    tokenized_references = [[next(remaining) for _ in group] for group in references]
    return tokenized_hypotheses, tokenized_references


def coco_caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                        use_java: Optional[bool] = None, with_meteor: bool = True
                        ) -> CocoCaptionScores:
    """coco-caption ROUGE_L, CIDEr and (with Java) METEOR for multi-reference outputs.

    Args:
      hypotheses: one output per instance.
      references: per instance, one or more references.
      use_java: None = use Java when it is available; False forces the Python
        tokenizer and skips METEOR.
      with_meteor: False skips METEOR (the slowest part, ~30 s for the jar to load).
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"coco-caption: {len(hypotheses)} hypotheses but {len(references)} "
                         "reference groups; give one reference group per hypothesis.")
    if not hypotheses:
        raise ValueError("coco-caption: nothing to score (no hypotheses were given).")
    if any(not group for group in references):
        raise ValueError("coco-caption: every hypothesis needs at least one reference.")
    java_problem = java.java_unavailable_reason()
    if use_java is None:
        use_java = java_problem is None
    elif use_java and java_problem is not None:
        raise java.JavaUnavailableError(java_problem)

    tokenized_hypotheses, tokenized_references = _tokenize_all(hypotheses, references, use_java)
    ids = range(len(tokenized_hypotheses))
    candidates: Dict[int, List[str]] = {i: [tokenized_hypotheses[i]] for i in ids}
    ground_truth: Dict[int, List[str]] = {i: tokenized_references[i] for i in ids}
    rouge_l, _ = Rouge().compute_score(ground_truth, candidates)
    cider, _ = Cider().compute_score(ground_truth, candidates)

    meteor, meteor_unavailable = None, None
    if not with_meteor:
        meteor_unavailable = "METEOR was not requested"
    elif not use_java:
        meteor_unavailable = java_problem or "Java use was switched off"
    else:
        meteor, _ = meteor_score(tokenized_hypotheses, tokenized_references)
    return CocoCaptionScores(
        rouge_l=float(rouge_l), cider=float(cider), meteor=meteor,
        meteor_unavailable=meteor_unavailable,
        tokenizer=JAVA_TOKENIZER if use_java else PYTHON_TOKENIZER)
