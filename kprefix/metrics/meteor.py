"""METEOR 1.5 through the jar that ships in pycocoevalcap (needs Java).

The jar runs as ``meteor-1.5.jar - - -stdio -l en -norm``, the way coco-caption
(and so the E2E scorer) runs it: one ``SCORE`` request per segment returns its
sufficient statistics, and an ``EVAL`` request over any set of statistics
returns the segment scores and the corpus score. Segments may have different
numbers of references. The WebNLG 2017 script instead runs the jar on files
(``HYP REF -l en -norm -r 3``, empty lines standing for missing references);
passing the same three lines, empty ones included, as a segment's references
gives the same corpus score (checked in the tests), and lets seen, unseen and
all be aggregated from one JVM start.

Everything raises :class:`kprefix.metrics.java.JavaUnavailableError` without Java.

Example:
    >>> meteor_jar().endswith("meteor-1.5.jar")
    True
    >>> meteor_score(["the cat sat on the mat"],  # doctest: +REQUIRES_JAVA
    ...              [["the cat sat on the mat"]])
    (1.0, [1.0])
"""

from __future__ import annotations

import subprocess
import tempfile
from typing import List, Sequence, Tuple

from kprefix.metrics import java

METEOR_MEMORY = "-Xmx2G"


def meteor_jar() -> str:
    """Path of ``meteor-1.5.jar`` inside the installed pycocoevalcap package."""
    return str(java.pycocoevalcap_file("meteor", "meteor-1.5.jar"))


def _clean_segment(text: str) -> str:
    # "|||" separates fields in the stdio protocol and newlines end a request.
    return " ".join(text.replace("|||", "").split())


class MeteorScorer:
    """One running ``meteor-1.5.jar -stdio`` process (the jar loads its paraphrase
    tables once, which takes most of its run time).

    Use as a context manager; score segments with :meth:`segment_statistics`
    and aggregate any subset of them with :meth:`evaluate`.
    """

    def __init__(self, language: str = "en"):
        java_executable = java.require_java()
        command = [java_executable, "-jar", METEOR_MEMORY, meteor_jar(), "-", "-", "-stdio",
                   "-l", language, "-norm"]
        self._error_log = tempfile.TemporaryFile()
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._error_log)

    def __enter__(self) -> "MeteorScorer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Stops the Java process."""
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            self._process.kill()
        self._process.wait()
        self._error_log.close()

    def _send(self, line: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write((line + "\n").encode("utf-8"))
        self._process.stdin.flush()

    def _receive(self) -> str:
        assert self._process.stdout is not None
        answer = self._process.stdout.readline()
        if not answer:
            self._error_log.seek(0)
            message = self._error_log.read().decode("utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"METEOR stopped answering: {message}")
        return answer.decode("utf-8").strip()

    def segment_statistics(self, hypothesis: str, references: Sequence[str]) -> str:
        """The jar's sufficient statistics for one segment (an opaque string)."""
        if not references:
            raise ValueError("METEOR: a segment needs at least one reference.")
        fields = ["SCORE", *(_clean_segment(r) for r in references), _clean_segment(hypothesis)]
        self._send(" ||| ".join(fields))
        return self._receive()

    def evaluate(self, statistics: Sequence[str]) -> Tuple[float, List[float]]:
        """(corpus score, segment scores) aggregated over the given segment statistics."""
        if not statistics:
            raise ValueError("METEOR: nothing to evaluate (no segment statistics).")
        self._send(" ||| ".join(["EVAL", *statistics]))
        segment_scores = [float(self._receive()) for _ in statistics]
        return float(self._receive()), segment_scores


def meteor_score(hypotheses: Sequence[str], references: Sequence[Sequence[str]],
                 language: str = "en") -> Tuple[float, List[float]]:
    """Corpus METEOR (``-l <language> -norm``) and per-segment scores, coco-caption style.

    Args:
      hypotheses: one output per segment.
      references: for each segment, one or more references.

    Returns:
      (corpus score, list of segment scores), all in [0, 1].
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"METEOR: {len(hypotheses)} hypotheses but {len(references)} reference "
                         "groups; give one reference group per hypothesis.")
    if not hypotheses:
        raise ValueError("METEOR: nothing to score (no hypotheses were given).")
    with MeteorScorer(language) as scorer:
        statistics = [scorer.segment_statistics(h, group) for h, group in zip(hypotheses, references)]
        return scorer.evaluate(statistics)
