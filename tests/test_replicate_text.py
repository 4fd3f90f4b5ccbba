"""The language half of the offline replication: BPE, the corpus without E2E, GPT-2 presets."""

import collections
import random

import numpy as np
import pytest

from kprefix.data.nlg import locate_shared_data_dir
from kprefix.replicate.byte_pair_encoding import gpt2_tokenizer, learn_byte_pair_encoding
from kprefix.replicate.text_comparison import fraction_label, schedule, training_subset

DATA, _ = locate_shared_data_dir()
needs_data = pytest.mark.skipif(
    not all((DATA / name).is_dir() for name in ("e2e", "webnlg2017", "xsum")),
    reason=f"shared benchmark data not found at {DATA} (set KPREFIX_SHARED_DATA)")


def _naive_merges(words, count):
    """Textbook BPE (Sennrich et al. 2016): recount every pair after each merge."""
    words = {tuple(word): n for word, n in words.items()}
    merges = []
    for _ in range(count):
        pairs = collections.Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] += n
        if not pairs:
            break
        top = max(pairs.values())
        if top < 2:
            break
        best = min(pair for pair, n in pairs.items() if n == top)
        merges.append(" ".join(best))
        merged = {}
        for word, n in words.items():
            out, i = [], 0
            while i < len(word):
                if word[i:i + 2] == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        words = merged
    return merges


def test_byte_pair_encoding_matches_textbook_merges_and_round_trips():
    rng = random.Random(0)
    syllables = ["ka", "ro", "ten", "mi", "so", "lu", "ba", "é"]
    texts = [" ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4)))
                      for _ in range(12)) for _ in range(60)]
    vocabulary, merges = learn_byte_pair_encoding(texts, 300)
    # The same pre-tokenisation, the byte symbols, then the textbook loop.
    from kprefix.replicate.byte_pair_encoding import _WORDS, _byte_symbols

    symbols = _byte_symbols()
    words = collections.Counter(word for text in texts for word in _WORDS.findall(text))
    words = {tuple(symbols[b] for b in word.encode("utf-8")): n for word, n in words.items()}
    assert merges == _naive_merges(words, len(merges))
    assert len(vocabulary) == 300 and vocabulary["<|endoftext|>"] == 299
    tokenizer = gpt2_tokenizer(vocabulary, merges)
    for text in texts[:5] + ["unseen wörds, 42!"]:
        ids = np.asarray(tokenizer(text))
        assert tokenizer.detokenize(ids) == text
    assert len(np.asarray(tokenizer(texts[0]))) < len(texts[0].encode("utf-8")) / 2
    with pytest.raises(ValueError, match="at least 257"):
        learn_byte_pair_encoding(texts, 100)


def test_pretraining_windows_frame_texts_as_e2e_frames_its_targets():
    # E2E prompts end with the end token and targets are ' text ' then the end
    # token; bare pretraining texts taught that a word without its leading
    # space follows the end token, the opposite of what E2E asks.
    import tensorflow as tf

    from kprefix.replicate.pretrain_text import token_windows
    from kprefix.tasks.text_features import causal_lm_features

    texts = ["The Eagle is a cheap pub.", "Near the river, it serves sushi."]
    tokenizer = gpt2_tokenizer(*learn_byte_pair_encoding(texts * 3, 300))
    end = tokenizer.end_token_id
    features = tf.function(lambda source, target: causal_lm_features(
        tokenizer, source, target, 64, reference_framing=True))
    expected = []
    for text in texts:
        _, labels, weights = features(tf.constant(["name : Eagle"]), tf.constant([text]))
        # The weighted labels are the target and its end token, as generated after the prompt.
        expected += np.asarray(labels)[0][np.asarray(weights)[0] > 0].tolist()
    assert expected.count(end) == 2 and expected[-1] == end
    windows = token_windows(tokenizer, texts * 2, len(expected) - 1)
    assert windows.shape == (2, len(expected))
    assert windows.tolist() == [expected, expected]
    # A (table, text) pair is the whole table-to-text example: the prompt, then the target.
    x, _, _ = features(tf.constant(["name : Eagle"]), tf.constant([texts[0]]))
    present = int(np.asarray(x["padding_mask"])[0].sum())  # the whole example fits
    example = np.asarray(x["token_ids"])[0][:present].tolist()
    assert example[-1] == end and example.count(end) == 2
    windows = token_windows(tokenizer, [("name : Eagle", texts[0])] * 2, len(example) - 1)
    assert windows.tolist() == [example, example]


def test_e2e_fractions_schedule_about_the_same_number_of_steps():
    references = [3] * 4000 + [10] * 862
    inputs, pairs = training_subset(0.01, references)
    assert (inputs, pairs) == (49, 147)
    assert training_subset(1.0, references) == (4862, 4000 * 3 + 8620)
    assert schedule(147, 16, 200) == {"epochs": 22, "max_steps_per_epoch": 0}  # 9 steps/epoch
    assert schedule(20620, 16, 200) == {"epochs": 1, "max_steps_per_epoch": 200}
    assert [fraction_label(f) for f in (0.01, 0.05, 0.2, 1.0, 0.005)] == [
        "train1pct", "train5pct", "train20pct", "train100pct", "train0.5pct"]
    with pytest.raises(ValueError, match="no batch"):
        schedule(10, 16, 200)


@needs_data
def test_pretraining_corpus_holds_no_e2e_reference():
    from kprefix.data import nlg
    from kprefix.replicate.pretrain_text import pretraining_corpus, segments

    texts, sources = pretraining_corpus(str(DATA))
    webnlg = {" ".join(t.split()).lower() for split in ("train", "validation", "test")
              for e in nlg.load_webnlg(split, str(DATA)) for t in e.targets}
    assert sources[0]["texts"] == len(webnlg) and sources[1]["texts"] > 1300
    assert sum(s["texts"] for s in sources) == len(texts) > 25000
    # WebNLG texts come after their table of triples, as table-to-text frames them.
    assert all(isinstance(t, tuple) and " : " in t[0] for t in texts[:sources[0]["texts"]])
    normalized = {" ".join(segments(t)[-1].split()).lower() for t in texts}
    e2e = [t for split in ("train", "validation", "test")
           for e in nlg.load_e2e(split, str(DATA), source_format="raw") for t in e.targets]
    assert len(e2e) > 40000
    assert not normalized & {" ".join(t.split()).lower() for t in e2e}
    # Not even inside a longer text (a sample; the whole check would take minutes).
    joined = "\n".join(normalized)
    for reference in random.Random(0).sample(e2e, 200):
        assert " ".join(reference.split()).lower() not in joined


@needs_data
def test_gpt2_presets_reload_with_their_tokenizer_and_the_same_outputs(tmp_path):
    import keras
    import keras_hub

    from kprefix.backbones import build_backbone
    from kprefix.replicate.pretrain_text import (PRETRAINED, RANDOM, TextPretraining,
                                                 mean_loss, pretraining_corpus, pretrain_text,
                                                 split_corpus, token_windows)
    from kprefix.tasks.tokenizers import load_tokenizer

    config = TextPretraining(steps=3, batch_size=4, sequence_length=32, vocabulary_size=300,
                             num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32,
                             max_sequence_length=64, log_every=1, max_texts=2000,
                             jit_compile=False, data_dir=str(DATA))
    summary = pretrain_text(str(tmp_path), config, log=None)
    assert [p["step"] for p in summary["loss_curve"]] == [1, 2, 3]
    assert summary["corpus"]["vocabulary_size"] == 300
    _, held_out = split_corpus(pretraining_corpus(str(DATA))[0], config.seed, 2000)
    losses = {}
    for name in (PRETRAINED, RANDOM):
        folder = str(tmp_path / name)
        backbone = build_backbone(folder)  # the --backbone=<dir> path
        tokenizer = load_tokenizer(folder)
        assert backbone.vocabulary_size == tokenizer.vocabulary_size() == 300
        model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        losses[name] = mean_loss(model, token_windows(tokenizer, held_out, config.sequence_length))
    # The reloaded weights and tokenizer give the losses measured before saving.
    assert losses[PRETRAINED] == pytest.approx(summary["held_out_loss"], rel=1e-5)
    assert losses[RANDOM] == pytest.approx(summary["held_out_loss_random_weights"], rel=1e-5)
    assert losses[PRETRAINED] < losses[RANDOM]
    # A finished pretraining is not redone.
    assert pretrain_text(str(tmp_path), config, log=None) == summary
