"""ROUGE-1/2/L for XSUM, as Google's ``rouge_score`` package computes them.

Each summary is scored against its reference with ``RougeScorer(["rouge1",
"rouge2", "rougeL"], use_stemmer=True)`` (lower-cased alphanumeric tokens,
Porter stemming of words longer than 3 characters); the corpus score is the
mean F-measure over summaries, x100, as the paper reports it.

Example:
    >>> scores = rouge_f1(["the cats sat on the mat"], ["the cat sat on a mat"])
    >>> round(scores["rouge1"], 2)  # 5 of 6 unigrams shared after stemming cats -> cat
    83.33
"""

from __future__ import annotations

from typing import Dict, Sequence

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_f1(predictions: Sequence[str], references: Sequence[str],
             use_stemmer: bool = True) -> Dict[str, float]:
    """Mean ROUGE F-measure x100 of ``predictions`` against single ``references``."""
    if len(predictions) != len(references):
        raise ValueError(f"ROUGE: {len(predictions)} predictions but {len(references)} references; "
                         "give one prediction per reference, in the same order.")
    if not predictions:
        raise ValueError("ROUGE: nothing to score (no predictions were given).")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)
        for rouge_type in ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: 100 * total / len(predictions) for rouge_type, total in totals.items()}
