"""The PTB tokenisation that coco-caption applies before METEOR, ROUGE_L and CIDEr.

coco-caption (pycocoevalcap) runs Stanford CoreNLP 3.4.1's ``PTBTokenizer``
with ``-preserveLines -lowerCase`` over every caption, then drops punctuation
tokens. :func:`coco_tokenize` does exactly that through the jar shipped in
pycocoevalcap. Without Java it falls back to :func:`python_ptb_tokenize`, a
regular-expression imitation of the same lexer (currency normalisation ``£`` ->
``#``, clitic splitting ``isn't`` -> ``is n't``, brackets -> ``-lrb-``, quotes ->
```` `` ''``, abbreviation-aware sentence periods). It reproduces the jar's
output on every E2E test reference and TGen output (checked in the tests), so
ROUGE_L and CIDEr stay exact there without Java; on other text it may differ
in rare constructions.

Example:
    >>> python_ptb_tokenize("It's £20-25 (cheap).")
    "it 's # 20-25 -lrb- cheap -rrb- ."
    >>> coco_tokenize(["It's £20-25 (cheap)."], use_java=False)
    ["it 's # 20-25 -lrb- cheap -rrb-"]
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import List, Sequence

from kprefix.metrics import java

# Tokens coco-caption removes after tokenising (its own list, compared after
# lower-casing, so "-lrb-" survives although "-LRB-" is listed).
COCO_PUNCTUATION = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?",
                              "!", ",", ":", "-", "--", "...", ";"])

_ABBREVIATIONS = """
mr mrs ms dr prof st jr sr vs etc inc ltd co corp mt ft gen col sgt capt lt rev jan feb mar apr
jun jul aug sep sept oct nov dec approx dept est fig
""".split()

_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
_CURRENCY = {"£": "#", "€": "$", "¥": "$", "$": "$", "¢": "cents"}
_CLITIC = re.compile(r"(?i)^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SPECIAL_SPLITS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                   "wanna": ("wan", "na")}

_TOKEN = re.compile(r"""
    (?P<abbreviation>(?<![^\W_])(?i:ABBREVIATIONS)\.)
  | (?P<url>https?://\S+|www\.\S+)
  | (?P<email>[\w.+-]+@[\w-]+(?:\.[\w-]+)+)
  | (?P<acronym>(?:[^\W\d_]\.){2,})
  | (?P<word>[^\W_]+(?:(?:[-'’&]|(?<=\d)[.,:/](?=\d))[^\W_]+)*(?:\.(?=,))?)
  | (?P<signed_number>(?<![^\W_])[-+]\d+(?:[.,]\d+)*)
  | (?P<ellipsis>\.\.\.+)
  | (?P<dash>--+|[—–―])
  | (?P<quote>``|''|["“”‘’'`])
  | (?P<repeat>[!?]+)
  | (?P<other>\S)
""".replace("ABBREVIATIONS", "|".join(_ABBREVIATIONS)), re.VERBOSE)


def _split_word(word: str) -> List[str]:
    lowered = word.lower()
    if lowered in _SPECIAL_SPLITS:
        pieces, start, out = _SPECIAL_SPLITS[lowered], 0, []
        for piece in pieces:
            out.append(word[start:start + len(piece)])
            start += len(piece)
        return out
    word = word.replace("’", "'")
    match = _CLITIC.match(word)
    if match:
        return [match.group(1), match.group(2)]
    return [word]


def python_ptb_tokenize(text: str) -> str:
    """Pure-Python imitation of ``PTBTokenizer -preserveLines -lowerCase`` for one line."""
    tokens: List[str] = []
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        # Straight quotes open at the start of the line, after a space or an opening bracket.
        opens = (match.start() == 0 or text[match.start() - 1].isspace()
                 or text[match.start() - 1] in "([{")
        if kind == "word":
            tokens.extend(_split_word(token))
        elif kind == "ellipsis":
            tokens.append("...")
        elif kind == "dash":
            tokens.append("--")
        elif kind == "quote":
            if token in ('"', "“", "”", "``", "''"):
                tokens.append("``" if token in ("“", "``") or (token == '"' and opens) else "''")
            else:
                tokens.append("`" if token in ("‘", "`") or (token == "'" and opens) else "'")
        elif kind == "other" and token in _BRACKETS:
            tokens.append(_BRACKETS[token])
        elif kind == "other" and token in _CURRENCY:
            tokens.append(_CURRENCY[token])
        else:
            tokens.append(token)
    return " ".join(token.lower() for token in tokens)


def _java_ptb_tokenize(lines: Sequence[str]) -> List[str]:
    jar = java.pycocoevalcap_file("tokenizer", "stanford-corenlp-3.4.1.jar")
    with tempfile.TemporaryDirectory(prefix="kprefix-ptb-") as workdir:
        path = os.path.join(workdir, "captions.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines))
        output = java.run_java(["-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
                                "-preserveLines", "-lowerCase", path])
    tokenized = output.split("\n")
    if len(tokenized) == len(lines) + 1 and tokenized[-1] == "":
        tokenized.pop()
    if len(tokenized) != len(lines):
        # A caption holding another line separator would shift every later line.
        raise RuntimeError(f"PTBTokenizer returned {len(tokenized)} lines for {len(lines)} "
                           "captions; remove line breaks from the captions")
    return tokenized


def coco_tokenize(texts: Sequence[str], use_java: bool = True) -> List[str]:
    """Tokenises like coco-caption: PTB tokens, lower-cased, punctuation removed.

    Args:
      texts: captions (line breaks inside one caption become spaces, as coco does for "\\n").
      use_java: run the Stanford jar (exact); False uses :func:`python_ptb_tokenize`.
    """
    lines = [text.replace("\r", " ").replace("\n", " ") for text in texts]
    if not lines:
        return []
    tokenized = _java_ptb_tokenize(lines) if use_java else [python_ptb_tokenize(l) for l in lines]
    return [" ".join(token for token in line.rstrip().split(" ") if token not in COCO_PUNCTUATION)
            for line in tokenized]
