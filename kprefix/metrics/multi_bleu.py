"""Corpus BLEU exactly as Moses' ``multi-bleu.perl`` computes it (WebNLG 2017 scorer).

What the Perl script does, and so what this module does:

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

import collections
import dataclasses
import math
from typing import Counter, List, Sequence, Tuple

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

    def perl_line(self) -> str:
        """The summary line as multi-bleu.perl prints it."""
        p = "/".join(f"{100 * x:.1f}" for x in self.precisions)
        ratio = self.hypothesis_length / self.reference_length if self.reference_length else 0.0
        return (f"BLEU = {self.bleu:.2f}, {p} (BP={self.brevity_penalty:.3f}, ratio={ratio:.3f}, "
                f"hyp_len={self.hypothesis_length}, ref_len={self.reference_length})")


def _ngrams(tokens: Sequence[str]) -> Counter[Tuple[str, ...]]:
    counts: Counter[Tuple[str, ...]] = collections.Counter()
    for order in range(1, MAX_ORDER + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start:start + order])] += 1
    return counts


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
    >>> multi_bleu(["a b c d"], [["a b c d e f g h"]]).brevity_penalty == math.exp(1 - 8 / 4)
    True
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"multi-bleu: {len(hypotheses)} hypothesis lines but {len(references)} "
                         "reference groups; the files must have the same number of lines.")

    def normalize(text: str) -> List[str]:
        if lowercase:
            text = text.translate(_ASCII_LOWER) if ascii_only_lowercase else text.lower()
        return text.split()

    correct = [0] * MAX_ORDER
    total = [0] * MAX_ORDER
    hypothesis_length = reference_length = 0
    for hypothesis, group in zip(hypotheses, references):
        words = normalize(hypothesis)
        max_reference_counts: Counter[Tuple[str, ...]] = collections.Counter()
        closest_diff, closest_length = 9999, 9999
        for reference in group:
            reference_words = normalize(reference)
            diff = abs(len(words) - len(reference_words))
            if diff < closest_diff or (diff == closest_diff and len(reference_words) < closest_length):
                closest_diff, closest_length = diff, len(reference_words)
            for ngram, count in _ngrams(reference_words).items():
                if count > max_reference_counts[ngram]:
                    max_reference_counts[ngram] = count
        hypothesis_length += len(words)
        reference_length += closest_length
        for ngram, count in _ngrams(words).items():
            total[len(ngram) - 1] += count
            correct[len(ngram) - 1] += min(count, max_reference_counts.get(ngram, 0))

    precisions = tuple(c / t if t else 0.0 for c, t in zip(correct, total))
    if reference_length == 0 or hypothesis_length == 0:
        return MultiBleuResult(0.0, precisions, 0.0, hypothesis_length, reference_length)
    brevity_penalty = 1.0
    if hypothesis_length < reference_length:
        brevity_penalty = math.exp(1 - reference_length / hypothesis_length)
    if min(precisions) == 0:
        bleu = 0.0
    else:
        bleu = brevity_penalty * math.exp(sum(math.log(p) for p in precisions) / MAX_ORDER)
    return MultiBleuResult(100 * bleu, precisions, brevity_penalty, hypothesis_length,
                           reference_length)
