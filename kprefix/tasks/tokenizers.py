"""Tokenizers for the language backbones.

A backbone loaded from a keras-hub preset, a hub handle (`hf://...`,
`kaggle://...`) or a local folder brings its own tokenizer, read from the same
handle (a Hugging Face GPT-2 or BART checkpoint: `vocab.json` and
`merges.txt`, through keras-hub's converters). The
built-in tiny configs use a small byte-level BPE made here: every byte is a
token (so any text round-trips) plus a few merges, in the same keras-hub
tokenizer classes, so that tests and offline runs exercise the real
tokenization path, in-graph export included.

Example:

>>> from kprefix.tasks.tokenizers import load_tokenizer
>>> tokenizer = load_tokenizer("gpt2_tiny")
>>> tokenizer.detokenize(tokenizer("name[The Eagle]"))
'name[The Eagle]'
"""

import keras_hub

from kprefix.backbones import BUILT_IN

# A few frequent English pairs; merged tokens must be in the vocabulary.
_MERGES = ["Ġ t", "h e", "i n", "e r", "o n", "a n", "Ġ a", "Ġ s"]


def _byte_symbols():
    from keras_hub.src.tokenizers.byte_pair_tokenizer import bytes_to_unicode

    return list(bytes_to_unicode()[1]) + [m.replace(" ", "") for m in _MERGES]


def byte_level_gpt2_tokenizer():
    vocabulary = {symbol: i for i, symbol in enumerate(_byte_symbols())}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=_MERGES)


def byte_level_bart_tokenizer():
    vocabulary = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in _byte_symbols():
        vocabulary[symbol] = len(vocabulary)
    vocabulary["<mask>"] = len(vocabulary)
    return keras_hub.models.BartTokenizer(vocabulary=vocabulary, merges=_MERGES)


def load_tokenizer(backbone_name):
    """The tokenizer that goes with `--backbone=backbone_name`."""
    if backbone_name in BUILT_IN:
        cls = BUILT_IN[backbone_name][0]
        if cls is keras_hub.models.GPT2Backbone:
            return byte_level_gpt2_tokenizer()
        if cls is keras_hub.models.BartBackbone:
            return byte_level_bart_tokenizer()
        raise ValueError(f"--backbone={backbone_name!r} is not a language model.")
    from kprefix.backbones import check_supported

    cls = check_supported(backbone_name)
    if not issubclass(cls, (keras_hub.models.GPT2Backbone, keras_hub.models.BartBackbone)):
        raise ValueError(f"--backbone={backbone_name!r} is a {cls.__name__}, not a language "
                         "model: it has no tokenizer.")
    return keras_hub.tokenizers.Tokenizer.from_preset(backbone_name)


def prefix_init_token_ids(tokenizer, text):
    """The token ids of `text` with a leading space, what `--prefix_init=word` starts from.

    Li & Liang tokenize the init word with `add_prefix_space=True`, so
    "summarize" is read as " summarize".
    """
    import numpy as np

    if not text or not text.strip():
        raise ValueError("--prefix_init_text is empty; give a word such as 'summarize'.")
    return tuple(int(i) for i in np.asarray(tokenizer(" " + text.lstrip(" "))))
