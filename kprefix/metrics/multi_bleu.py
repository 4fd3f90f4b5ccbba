"""Corpus BLEU as Moses' ``multi-bleu.perl`` computes it (WebNLG 2017 scorer), by sacrebleu.

sacrebleu's BLEU with no tokenisation and no smoothing is ``multi-bleu.perl``'s
computation; this module only feeds it the way the Perl script reads its files:

* no tokenisation: tokens are the whitespace-separated pieces of each line
  (so references are expected to be pre-tokenised, as WebNLG's are);
* ``-lc`` lower-cases hypotheses and references (the script reads bytes, so only
  ASCII letters change; ``ascii_only_lowercase`` mirrors that);
* reference slots are parallel files; an empty line in a slot is still a
  reference of length 0 and takes part in choosing the closest length;
* clipped n-gram precisions for n = 1..4, no smoothing (a zero precision gives
  BLEU 0), brevity penalty from the sum of closest reference lengths (ties go
  to the shorter reference);
* the score is reported x100; the script prints it rounded to 2 decimals.

Example:
    >>> round(multi_bleu(["the cat sat on the mat"], [["the cat sat on the mat"]]).bleu, 2)
    100.0
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

from sacrebleu.metrics import BLEU

MAX_ORDER = 4
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


@dataclasses.dataclass(frozen=True)
class MultiBleuResult:
    """BLEU x100 and the statistics multi-bleu.perl prints next to it."""

    bleu: float
    precisions: Tuple[float, ...]
    brevity_penalty: float
    hypothesis_length: int
    reference_length: int
    signature: str = ""  # sacrebleu's signature of the computation

    def perl_line(self) -> str:
        """The summary line as multi-bleu.perl prints it."""
        p = "/".join(f"{100 * x:.1f}" for x in self.precisions)
        ratio = self.hypothesis_length / self.reference_length if self.reference_length else 0.0
        return (f"BLEU = {self.bleu:.2f}, {p} (BP={self.brevity_penalty:.3f}, ratio={ratio:.3f}, "
                f"hyp_len={self.hypothesis_length}, ref_len={self.reference_length})")


def reference_streams(references: Sequence[Sequence[Optional[str]]]):
    """Per-segment reference lists as sacrebleu's parallel streams (None: no such slot)."""
    width = max((len(group) for group in references), default=0)
    return [[group[k] if k < len(group) else None for group in references] for k in range(width)]


def multi_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
               lowercase: bool = True, ascii_only_lowercase: bool = True) -> MultiBleuResult:
    """BLEU of ``hypotheses`` against per-segment reference lists, like ``multi-bleu.perl [-lc]``.

    Args:
      hypotheses: one line per segment.
      references: for each segment, its references (empty strings allowed: they
        behave like empty lines in a reference file).
      lowercase: the ``-lc`` flag.
      ascii_only_lowercase: lower-case A-Z only, as the byte-oriented Perl does.

    The empty reference is 4 words away, like the 8-word one, and wins the tie
    for being shorter, so the 4-word output gets no brevity penalty:

    >>> multi_bleu(["a b c d"], [["a b c d e f g h", ""]]).reference_length
    0
    >>> import math
    >>> multi_bleu(["a b c d"], [["a b c d e f g h"]]).brevity_penalty == math.exp(1 - 8 / 4)
    True
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"multi-bleu: {len(hypotheses)} hypothesis lines but {len(references)} "
                         "reference groups; the files must have the same number of lines.")
    if lowercase and ascii_only_lowercase:
        hypotheses = [h.translate(_ASCII_LOWER) for h in hypotheses]
        references = [[r.translate(_ASCII_LOWER) for r in group] for group in references]
    bleu = BLEU(lowercase=lowercase and not ascii_only_lowercase, tokenize="none",
                smooth_method="none", max_ngram_order=MAX_ORDER, force=True)
    if not hypotheses:
        return MultiBleuResult(0.0, (0.0,) * MAX_ORDER, 0.0, 0, 0, str(bleu.get_signature()))
    score = bleu.corpus_score(list(hypotheses), reference_streams(references))
    return MultiBleuResult(
        bleu=score.score,
        precisions=tuple(p / 100 for p in score.precisions),
        brevity_penalty=score.bp if score.ref_len and score.sys_len else 0.0,
        hypothesis_length=score.sys_len,
        reference_length=score.ref_len,
        signature=str(bleu.get_signature()),
    )
