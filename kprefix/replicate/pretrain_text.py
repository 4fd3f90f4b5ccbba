"""Pretrains a small GPT-2 on offline text without E2E and saves it as a keras-hub preset.

The corpus (`pretraining_corpus`) is the benchmark text that ships with the
shared data folder (`kprefix.data.nlg.shared_data_dir`) except E2E, the
downstream task: the WebNLG 2017 lexicalisations (every reference sentence of
the train, dev and test files), each after its table of triples, and the XSUM
articles and their summaries. A
text that equals an E2E training, validation or test reference is dropped
(and counted), so no E2E sentence is ever seen in pretraining. A byte-level
BPE vocabulary is learnt from the corpus (the GPT-2 vocabulary cannot be
downloaded offline; `kprefix.replicate.byte_pair_encoding`), every segment is
framed as E2E frames its sources and targets (`" text "`) and followed by
`<|endoftext|>`, so a WebNLG pair reads as a table-to-text example
(`" table " <eos> " text " <eos>`: the model learns to put the table's
names and values into the text after the end token, as E2E asks), the
tokens are joined and cut into fixed-length windows, and
the GPT-2 is trained on next-token prediction with AdamW. 2% of the texts are
held out to measure the loss of the pretrained and of the random weights.

Two presets, each with the tokenizer, are written, both loadable with
`--backbone=<dir>`: the pretrained GPT-2 and the same architecture with its
random initial weights.

Example (needs the shared data folder):

>>> from kprefix.replicate.pretrain_text import TextPretraining, pretrain_text
>>> import tempfile
>>> summary = pretrain_text(tempfile.mkdtemp(), TextPretraining(  # doctest: +REQUIRES_BENCHMARK_DATA
...     steps=2, batch_size=4, sequence_length=32, vocabulary_size=300, num_layers=1,
...     hidden_dim=16, intermediate_dim=32, num_heads=2, log_every=1, max_texts=200,
...     jit_compile=False), log=None)
>>> len(summary["loss_curve"])  # doctest: +REQUIRES_BENCHMARK_DATA
2
"""

import dataclasses
import os
import time

import numpy as np

from kprefix.replicate.pretraining import (finished_summary, save_preset, train_with_loss_curve,
                                           warmup_cosine, write_summary)

PRETRAINED, RANDOM = "gpt2_pretrained", "gpt2_random"
SUMMARY = "text_pretraining.json"
HELD_OUT_FRACTION = 0.02


@dataclasses.dataclass(frozen=True)
class TextPretraining:
    """Corpus, vocabulary, architecture and budget of the GPT-2 pretraining."""

    steps: int = 2000
    batch_size: int = 32
    sequence_length: int = 128
    learning_rate: float = 1e-3
    vocabulary_size: int = 4096
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 128
    intermediate_dim: int = 512
    max_sequence_length: int = 256
    log_every: int = 50
    seed: int = 0
    max_texts: int = 0  # use a seeded random subset of this many corpus texts (0: all)
    jit_compile: bool = True
    data_dir: str = None  # the shared data folder; None: kprefix.data.nlg.shared_data_dir()


def _normalized(text):
    return " ".join(text.split()).lower()


def e2e_references(data_dir=None):
    """Every E2E reference (train, validation, test), whitespace-normalised and lower-cased,
    both as the loader gives them and untokenized (the training references come tokenized)."""
    from kprefix.data import nlg

    references = set()
    for split in ("train", "validation", "test"):
        for example in nlg.load_e2e(split, data_dir, source_format="raw"):
            references.update(_normalized(t) for t in example.targets)
        if split == "train":
            for example in nlg.load_e2e(split, data_dir, source_format="reference"):
                references.update(_normalized(t) for t in example.targets)
    return references


def pretraining_corpus(data_dir=None):
    """`(texts, sources)`: the pretraining texts and, per source, its name, licence,
    number of texts and characters (see the module doc). A text is a string or a
    `(table, text)` pair (WebNLG). Raises `FileNotFoundError` when the shared data
    folder is missing."""
    from kprefix.data import nlg

    excluded = e2e_references(data_dir)
    collections = [
        ("WebNLG 2017 lexicalisations (train, dev, test), each after its table",
         "CC BY-NC-SA 4.0",
         [(e.source, t) for split in ("train", "validation", "test")
          for e in nlg.load_webnlg(split, data_dir) for t in e.targets]),
        ("XSUM articles (validation1000, test321)", "XSUM release licence",
         [e.source for split in ("validation", "test") for e in nlg.load_xsum(split, data_dir)]),
        ("XSUM summaries (validation1000, test321)", "XSUM release licence",
         [t for split in ("validation", "test") for e in nlg.load_xsum(split, data_dir)
          for t in e.targets]),
    ]
    texts, sources, seen = [], [], set()
    for name, licence, collection in collections:
        kept, dropped_e2e = [], 0
        for item in collection:
            text = item[-1] if isinstance(item, tuple) else item
            key = _normalized(text)
            if not key or key in seen:
                continue
            if key in excluded:
                dropped_e2e += 1
                continue
            seen.add(key)
            kept.append((item[0].strip(), text.strip()) if isinstance(item, tuple)
                        else text.strip())
        texts += kept
        sources.append({"name": name, "licence": licence, "texts": len(kept),
                        "characters": sum(map(len, corpus_segments(kept))),
                        "dropped_as_e2e_references": dropped_e2e})
    return texts, sources


def segments(text):
    """The segments of a corpus text: `(text,)` or the `(table, text)` pair itself."""
    return text if isinstance(text, tuple) else (text,)


def corpus_segments(texts):
    """Every segment of the corpus texts, in order (a tokenizer learns from these).

    >>> corpus_segments(["a b", ("table", "text")])
    ['a b', 'table', 'text']
    """
    return [piece for text in texts for piece in segments(text)]


def split_corpus(texts, seed, max_texts=0):
    """`(training, held_out)`: a seeded random `HELD_OUT_FRACTION` of the texts is held
    out; with `max_texts`, of a seeded random subset of that many texts."""
    order = np.random.RandomState(seed).permutation(len(texts))
    if max_texts:
        order = order[:max_texts]
    count = max(1, int(len(order) * HELD_OUT_FRACTION))
    return [texts[i] for i in order[count:]], [texts[i] for i in order[:count]]


def build_gpt2(config, vocabulary_size):
    import keras
    import keras_hub

    keras.utils.set_random_seed(config.seed)
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size, num_layers=config.num_layers,
        num_heads=config.num_heads, hidden_dim=config.hidden_dim,
        intermediate_dim=config.intermediate_dim,
        max_sequence_length=config.max_sequence_length)


def token_windows(tokenizer, texts, sequence_length):
    """The texts' segments (see `segments`) tokenized as E2E frames a source and
    a target (`" text "`, see `kprefix.tasks.text_features`), each followed by
    `<|endoftext|>`, joined and cut into `(windows, sequence_length + 1)` int32
    rows (the tail that does not fill a row is dropped).

    E2E puts a target's first word, with its leading space, right after the
    prompt's end token; bare texts teach that a word without its space follows
    the end token (after an E2E prompt: "The" far likelier than " The").
    """
    import tensorflow as tf

    end = tokenizer.end_token_id
    stream = []
    pieces = corpus_segments(texts)
    for start in range(0, len(pieces), 4096):
        framed = [f" {piece} " for piece in pieces[start:start + 4096]]
        for ids in tokenizer(tf.constant(framed)):
            stream += [*np.asarray(ids).tolist(), end]
    stream = np.asarray(stream, "int32")
    rows = len(stream) // (sequence_length + 1)
    return stream[:rows * (sequence_length + 1)].reshape(rows, sequence_length + 1)


def _first(value):
    """The loss of what `train_on_batch`/`test_on_batch` return (a number or [loss, ...])."""
    return float(np.ravel(value)[0])


def mean_loss(model, windows, batch_size=64):
    """Mean next-token loss of a compiled causal LM over token windows (see `token_windows`)."""
    losses = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        x = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1], bool)}
        losses.append(_first(model.test_on_batch(x, batch[:, 1:], return_dict=False)) * len(batch))
    return sum(losses) / len(windows)


def pretrain_text(output_dir, config, log=print):
    """Writes `<output_dir>/gpt2_pretrained`, `<output_dir>/gpt2_random` and
    `<output_dir>/text_pretraining.json` (corpus, loss curve, held-out losses,
    timing); returns that summary. Skips the work if the summary exists.
    `log` gets a progress line every `config.log_every` steps (None: silent)."""
    import keras
    import keras_hub

    from kprefix.replicate.byte_pair_encoding import gpt2_tokenizer, learn_byte_pair_encoding

    summary_path = os.path.join(output_dir, SUMMARY)
    finished = finished_summary(summary_path)
    if finished is not None:
        return finished
    if config.sequence_length > config.max_sequence_length:
        raise ValueError(f"sequence_length={config.sequence_length} exceeds "
                         f"max_sequence_length={config.max_sequence_length}.")
    start = time.time()
    texts, sources = pretraining_corpus(config.data_dir)
    training, held_out = split_corpus(texts, config.seed, config.max_texts)
    vocabulary, merges = learn_byte_pair_encoding(
        corpus_segments(training), config.vocabulary_size)
    tokenizer = gpt2_tokenizer(vocabulary, merges)
    windows = token_windows(tokenizer, training, config.sequence_length)
    held_out_windows = token_windows(tokenizer, held_out, config.sequence_length)
    if len(windows) == 0 or len(held_out_windows) == 0:
        raise ValueError(f"The corpus fills no window of {config.sequence_length + 1} tokens.")
    corpus_seconds = time.time() - start

    backbone = build_gpt2(config, len(vocabulary))
    save_preset(os.path.join(output_dir, RANDOM), backbone, tokenizer)
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    model.compile(optimizer=keras.optimizers.AdamW(
                      warmup_cosine(config.steps, config.learning_rate), weight_decay=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=config.jit_compile)
    random_held_out_loss = mean_loss(model, held_out_windows)

    rng = np.random.RandomState(config.seed)

    def next_batch():
        batch = windows[rng.randint(0, len(windows), config.batch_size)]
        x = {"token_ids": batch[:, :-1], "padding_mask": np.ones_like(batch[:, :-1], bool)}
        return x, batch[:, 1:]

    curve, train_seconds = train_with_loss_curve(model, next_batch, config.steps,
                                                 config.log_every, log, "text")
    held_out_loss = mean_loss(model, held_out_windows)
    save_preset(os.path.join(output_dir, PRETRAINED), backbone, tokenizer)
    tokens = int(windows.size)
    summary = {
        # Where the data folder is on this machine is no setting of the result.
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "data_dir"},
        "corpus": {
            "sources": sources,
            "texts": len(texts),
            "training_texts": len(training),
            "held_out_texts": len(held_out),
            "training_tokens": tokens,
            "held_out_tokens": int(held_out_windows.size),
            "vocabulary_size": len(vocabulary),
            "tokens_seen_in_training": config.steps * config.batch_size * config.sequence_length,
            "epochs_over_corpus": round(config.steps * config.batch_size / len(windows), 2),
            "excludes": "E2E (every text equal to an E2E reference is dropped)",
        },
        "loss_curve": curve,
        "held_out_loss": held_out_loss,
        "held_out_loss_random_weights": random_held_out_loss,
        "corpus_seconds": round(corpus_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round(config.steps / train_seconds, 2),
        "presets": {"pretrained": PRETRAINED, "random": RANDOM},
    }
    return write_summary(summary_path, summary)
