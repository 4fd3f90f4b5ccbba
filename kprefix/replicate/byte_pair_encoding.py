"""Learns a byte-level BPE vocabulary (GPT-2's format) from a corpus, for keras-hub's GPT2Tokenizer.

GPT-2's byte-level BPE (Radford et al. 2019) maps every byte to a printable
symbol (keras-hub's `bytes_to_unicode`, so a space is "Ġ"), splits text into
words with a regular expression, then merges the most frequent adjacent pair
of symbols again and again. This learns such merges from our own texts: the
original GPT-2 vocabulary cannot be downloaded offline. Every byte stays a
token, so any text round-trips.

Example:

>>> from kprefix.replicate.byte_pair_encoding import learn_byte_pair_encoding, gpt2_tokenizer
>>> vocabulary, merges = learn_byte_pair_encoding(["the cat sat on the mat"] * 3, 270)
>>> merges[:2]
['a t', 'h e']
>>> tokenizer = gpt2_tokenizer(vocabulary, merges)
>>> tokenizer.detokenize(tokenizer("the mat"))
'the mat'
"""

import collections
import heapq
import re

END_OF_TEXT = "<|endoftext|>"

# GPT-2's pre-tokenisation (contractions, letters, digits, other symbols, each
# with its leading space) in the `re` module's terms: [^\W\d_] is a letter.
_WORDS = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")


def _byte_symbols():
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    byte_strings, symbols = bytes_to_unicode()  # [b"!", ...], ["!", ...]
    return {byte[0]: symbol for byte, symbol in zip(byte_strings, symbols)}


def learn_byte_pair_encoding(texts, vocabulary_size):
    """`(vocabulary, merges)` of a byte-level BPE learnt from `texts`.

    The vocabulary holds the 256 byte symbols, one token per merge (most
    frequent pair first; ties go to the pair first in sort order) and
    `<|endoftext|>` last; it has `vocabulary_size` entries unless the texts
    run out of pairs that occur at least twice.
    """
    if vocabulary_size < 257:
        raise ValueError(f"vocabulary_size={vocabulary_size}: need at least 257 "
                         "(256 bytes and <|endoftext|>).")
    to_symbol = _byte_symbols()
    word_counts = collections.Counter(
        word for text in texts for word in _WORDS.findall(text))
    words = [[to_symbol[b] for b in word.encode("utf-8")] for word in word_counts]
    counts = list(word_counts.values())
    pair_counts = collections.Counter()
    pair_words = collections.defaultdict(set)
    for index, (symbols, count) in enumerate(zip(words, counts)):
        for pair in zip(symbols, symbols[1:]):
            pair_counts[pair] += count
            pair_words[pair].add(index)
    # A max-heap of (count, pair) with stale entries skipped on the way out.
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)
    vocabulary = {symbol: i for i, symbol in enumerate(to_symbol.values())}
    merges = []
    while len(vocabulary) < vocabulary_size - 1 and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue
        if -negative < 2:
            break
        merged = pair[0] + pair[1]
        merges.append(f"{pair[0]} {pair[1]}")
        vocabulary.setdefault(merged, len(vocabulary))
        changed = set()
        for index in list(pair_words.pop(pair, ())):
            symbols, count = words[index], counts[index]
            for old in zip(symbols, symbols[1:]):
                pair_counts[old] -= count
                changed.add(old)
            joined, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                    joined.append(merged)
                    i += 2
                else:
                    joined.append(symbols[i])
                    i += 1
            words[index] = joined
            for new in zip(joined, joined[1:]):
                pair_counts[new] += count
                pair_words[new].add(index)
                changed.add(new)
        pair_counts.pop(pair, None)
        for other in changed - {pair}:
            if pair_counts[other] > 0:
                heapq.heappush(heap, (-pair_counts[other], other))
            else:
                pair_counts.pop(other, None)
    vocabulary[END_OF_TEXT] = len(vocabulary)
    return vocabulary, merges


def gpt2_tokenizer(vocabulary, merges):
    """keras-hub's `GPT2Tokenizer` over a learnt vocabulary (`<|endoftext|>` its end token)."""
    import keras_hub

    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
