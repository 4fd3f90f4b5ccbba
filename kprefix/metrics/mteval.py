"""Corpus BLEU and NIST as NIST's mteval-v13a computes them (E2E scorer's default).

The E2E challenge scorer (e2e-metrics ``measure_scores.py``, default mode) writes
the references and outputs into SGML files and runs its bundled
``mteval-v13a-sig.pl``. This module reproduces that computation in Python:

* text normalisation: mteval's default ("13a") tokenisation after lower-casing
  ASCII letters only (the Perl script uses ``tr/A-Z/a-z/``);
* instances may have different numbers of references (the SGML writer pads
  them with empty slots, which the script skips). NIST's length penalty
  compares the output length with total reference words divided by the
  *corpus-wide mean* number of references per instance, not with the sum of
  per-instance mean lengths. This is what separates the Perl NIST (8.6094
  for the E2E TGen baseline) from the pure-Python one (8.5923);
* BLEU (computed by sacrebleu on the normalised tokens): up to 4-grams,
  clipped counts, "closest" reference length (ties go to the shorter one),
  mteval's smoothing when some n-gram order has no match (sacrebleu's "exp");
* NIST (computed here: sacrebleu has no NIST): up to 5-grams, information
  weights estimated from all references, mteval's length penalty (0.5 at 2/3
  of the reference length).

Example:
    >>> scores = mteval_bleu_nist(["the cat sat on the mat"],
    ...                           [["the cat sat on the mat", "a cat sat"]])
    >>> round(scores.bleu, 4)
    1.0
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Counter, Dict, List, Sequence, Tuple

from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from kprefix.metrics.multi_bleu import reference_streams

BLEU_MAX_ORDER = 4
NIST_MAX_ORDER = 5

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_tokenize_13a = Tokenizer13a()

Ngram = Tuple[str, ...]


def mteval_normalize(text: str, lowercase: bool = True) -> List[str]:
    """Tokenises ``text`` as mteval-v13a does by default; returns the tokens.

    >>> mteval_normalize("Blue Spice is a coffee shop, near £20-25.")
    ['blue', 'spice', 'is', 'a', 'coffee', 'shop', ',', 'near', '£20', '-', '25', '.']
    """
    # The SGML reader folds every run of whitespace into one space first.
    text = " ".join(text.split())
    if lowercase:
        text = text.translate(_ASCII_LOWER)
    return _tokenize_13a(text).split()


def _count_ngrams(tokens: Sequence[str], max_order: int) -> Counter[Ngram]:
    counts: Counter[Ngram] = collections.Counter()
    for order in range(1, max_order + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start:start + order])] += 1
    return counts


@dataclasses.dataclass(frozen=True)
class MtevalScores:
    """System-level scores plus the per-order precisions behind them."""

    bleu: float
    nist: float
    bleu_precisions: Tuple[float, ...]
    nist_ngram_info: Tuple[float, ...]
    hypothesis_length: int
    bleu_reference_length: int
    nist_length_penalty: float
    bleu_signature: str = ""  # sacrebleu's signature of the BLEU computation


def nist_length_penalty(length_ratio: float) -> float:
    """mteval's NIST brevity factor: 1 at or above the reference length, 0.5 at 2/3.

    >>> nist_length_penalty(1.2), round(nist_length_penalty(2 / 3), 6)
    (1.0, 0.5)
    """
    if length_ratio >= 1:
        return 1.0
    if length_ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) ** 2
    return math.exp(-beta * math.log(length_ratio) ** 2)


def _ngram_information(tokenized_references: Sequence[Sequence[Sequence[str]]]) -> Dict[Ngram, float]:
    """Information weight of each reference n-gram: -log2 P(last word | history)."""
    counts: Counter[Ngram] = collections.Counter()
    total_words = 0
    for references in tokenized_references:
        for reference in references:
            total_words += len(reference)
            counts.update(_count_ngrams(reference, NIST_MAX_ORDER))
    information = {}
    for ngram, count in counts.items():
        history_count = counts[ngram[:-1]] if len(ngram) > 1 else total_words
        information[ngram] = -math.log2(count / history_count)
    return information


def _mteval_bleu(tokenized_hypotheses, tokenized_references):
    """sacrebleu's BLEU of already-normalised tokens, with mteval's smoothing.

    Reference slots that normalise to nothing are skipped, as mteval skips them.
    """
    bleu = BLEU(lowercase=False, tokenize="none", smooth_method="exp",
                max_ngram_order=BLEU_MAX_ORDER, force=True)
    references = [[" ".join(r) if r else None for r in group] for group in tokenized_references]
    score = bleu.corpus_score([" ".join(h) for h in tokenized_hypotheses],
                              reference_streams(references))
    return score, str(bleu.get_signature())


def mteval_bleu_nist(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                     lowercase: bool = True) -> MtevalScores:
    """Scores ``hypotheses`` against multi-reference ``references`` like mteval-v13a.

    Args:
      hypotheses: one system output per instance.
      references: for each instance, its (one or more) reference texts.
      lowercase: mteval's default; pass False to mimic its ``-c`` flag.

    Returns:
      :class:`MtevalScores`; ``bleu`` is in [0, 1] like the E2E scorer prints it.

    >>> s = mteval_bleu_nist(["a b c d e"], [["a b c d e f"]])
    >>> round(s.bleu, 4)  # perfect precision, brevity penalty exp(1 - 6/5)
    0.8187
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"mteval: {len(hypotheses)} hypotheses but {len(references)} reference groups; "
            "give exactly one reference group per hypothesis, in the same order.")
    if not hypotheses:
        raise ValueError("mteval: nothing to score (no hypotheses were given).")
    for index, group in enumerate(references):
        if not group:
            raise ValueError(f"mteval: instance {index} has no reference; each needs at least one.")
    tokenized_hypotheses = [mteval_normalize(h, lowercase) for h in hypotheses]
    tokenized_references = [[mteval_normalize(r, lowercase) for r in group] for group in references]
    # mteval counts a reference slot only when its normalised text is non-empty.
    non_empty_references = sum(1 for group in tokenized_references for r in group if r)
    mean_references_per_instance = max(non_empty_references, 1) / len(references)
    information = _ngram_information(tokenized_references)

    matches = [0] * NIST_MAX_ORDER
    totals = [0] * NIST_MAX_ORDER
    matched_information = [0.0] * NIST_MAX_ORDER
    total_reference_words = 0
    for hypothesis, group in zip(tokenized_hypotheses, tokenized_references):
        hypothesis_counts = _count_ngrams(hypothesis, NIST_MAX_ORDER)
        max_reference_counts: Counter[Ngram] = collections.Counter()
        for reference in group:
            for ngram, count in _count_ngrams(reference, NIST_MAX_ORDER).items():
                if count > max_reference_counts[ngram]:
                    max_reference_counts[ngram] = count
            total_reference_words += len(reference)
        for ngram, count in hypothesis_counts.items():
            clipped = min(count, max_reference_counts.get(ngram, 0))
            if clipped:
                matches[len(ngram) - 1] += clipped
                matched_information[len(ngram) - 1] += information[ngram] * clipped
        for order in range(1, NIST_MAX_ORDER + 1):
            totals[order - 1] += max(0, len(hypothesis) - order + 1)

    hypothesis_length = totals[0]
    bleu, bleu_signature = _mteval_bleu(tokenized_hypotheses, tokenized_references)
    average_reference_length = total_reference_words / mean_references_per_instance
    penalty = nist_length_penalty(hypothesis_length / average_reference_length
                                  if average_reference_length else 0.0)
    per_order_information = tuple(info / max(total, 1)
                                  for info, total in zip(matched_information, totals))
    return MtevalScores(
        bleu=bleu.score / 100,
        nist=sum(per_order_information) * penalty,
        bleu_precisions=tuple(p / 100 for p in bleu.precisions),
        nist_ngram_info=per_order_information,
        hypothesis_length=hypothesis_length,
        bleu_reference_length=bleu.ref_len,
        nist_length_penalty=penalty,
        bleu_signature=bleu_signature,
    )
