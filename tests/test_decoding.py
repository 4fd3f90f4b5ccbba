"""Beam search and greedy decoding over the cached, prefixed language models."""

import collections
import itertools
import re

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from keras import ops, tree

from helpers import bart_inputs, bart_lm, gpt2_lm, prefix_config
from kprefix.tasks.decoding import beam_search, generate_bart, generate_gpt2
from kprefix.backbones import build_backbone
from kprefix.backbones.layer_classes import mix_into
from kprefix.prefix import PrefixConfig
from kprefix.tasks import PrefixGPT2CausalLM
from kprefix.tasks.gpt2_cache import DecodingCache

PROMPTS = np.array([[7, 3, 9, 0], [5, 0, 0, 0], [4, 11, 0, 0]], "int32")
PROMPT_MASK = PROMPTS > 0


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def gpt2_sum_log_probs(lm, prompts, continuations):
    """Uncached: the log-probability of each continuation after its prompt."""
    rows = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    width = max(len(r) for r in rows)
    ids = np.array([r + [0] * (width - len(r)) for r in rows], "int32")
    logits = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}), "float64")
    log_probs = log_softmax(logits)
    return np.array([sum(log_probs[i, len(p) + j - 1, t] for j, t in enumerate(c))
                     for i, (p, c) in enumerate(zip(prompts, continuations))])


def bart_sum_log_probs(lm, encoder_ids, encoder_mask, start, continuations):
    """Uncached: the log-probability of each decoder continuation after `start`."""
    width = len(start) + max(len(c) for c in continuations)
    ids = np.array([start + list(c) + [0] * (width - len(start) - len(c))
                    for c in continuations], "int32")
    logits = np.asarray(lm({"encoder_token_ids": encoder_ids,
                            "encoder_padding_mask": encoder_mask,
                            "decoder_token_ids": ids,
                            "decoder_padding_mask": np.ones_like(ids)}), "float64")
    log_probs = log_softmax(logits)
    return np.array([sum(log_probs[i, len(start) + j - 1, t] for j, t in enumerate(c))
                     for i, c in enumerate(continuations)])


def hypothesis(tokens, end_token_id):
    """Generated tokens up to and including the end token."""
    tokens = list(np.asarray(tokens))
    return tokens[:tokens.index(end_token_id) + 1] if end_token_id in tokens else tokens


def prompts_of(token_ids, mask):
    return [list(row[m.astype(bool)]) for row, m in zip(token_ids, mask)]


def tiny_vocab_gpt2(vocabulary_size=6):
    """A prefixed GPT-2 with a 6-token vocabulary and peaked next-token laws."""
    keras.utils.set_random_seed(3)
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=vocabulary_size, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=16)
    embeddings = backbone.token_embedding.embeddings
    # Random init gives nearly uniform logits and near ties; spread them out.
    embeddings.assign(np.random.default_rng(3).normal(size=embeddings.shape) * 1.5)
    return PrefixGPT2CausalLM(backbone, prefix_config=prefix_config("deep_share"), seed=0)


def exhaustive_best(lm, prompts, *, vocabulary_size, max_new_tokens, min_new_tokens,
                    length_penalty, end_token_id, banned_token_ids):
    """Every allowed hypothesis scored by uncached forward passes; the best per prompt."""
    allowed = [t for t in range(vocabulary_size)
               if t not in banned_token_ids and t != end_token_id]
    continuations = []
    for length in range(1, max_new_tokens + 1):
        for body in itertools.product(allowed, repeat=length - 1):
            if length - 1 >= min_new_tokens:
                continuations.append(list(body) + [end_token_id])
            if length == max_new_tokens:
                continuations.extend(list(body) + [last] for last in allowed)
    best = []
    for prompt in prompts:
        sums = gpt2_sum_log_probs(lm, [prompt] * len(continuations), continuations)
        scores = sums / np.array([len(c) for c in continuations], float) ** length_penalty
        order = np.argsort(-scores)
        assert scores[order[0]] - scores[order[1]] > 1e-4, "near tie: the comparison is unsafe"
        best.append((continuations[order[0]], scores[order[0]]))
    return best


@pytest.mark.parametrize(
    "length_penalty, early_stopping, min_new_tokens, banned",
    [(0.0, "heuristic", 0, (3,)), (1.0, "exact", 1, (3,)), (-0.5, "exact", 2, ())],
)
def test_wide_beam_search_equals_exhaustive_search(length_penalty, early_stopping,
                                                   min_new_tokens, banned):
    vocabulary_size, max_new_tokens, end_token_id = 6, 3, 1
    lm = tiny_vocab_gpt2(vocabulary_size)
    prompts = np.array([[2, 4, 5], [4, 0, 0]], "int32")
    mask = np.array([[1, 1, 1], [1, 0, 0]], bool)
    # Wide enough to keep every live hypothesis and rank every candidate
    # among the first num_beams: (#continuing tokens)^(steps-1) * #allowed.
    continuing = vocabulary_size - 1 - len(banned)
    num_beams = continuing ** (max_new_tokens - 1) * (continuing + 1)
    settings = dict(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                    length_penalty=length_penalty, end_token_id=end_token_id,
                    banned_token_ids=banned)
    tokens, scores = generate_gpt2(lm, prompts, mask, num_beams=num_beams,
                                   early_stopping=early_stopping, **settings)
    expected = exhaustive_best(lm, prompts_of(prompts, mask), vocabulary_size=vocabulary_size,
                               **settings)
    for row, (best_tokens, best_score) in enumerate(expected):
        assert hypothesis(tokens[row], end_token_id) == best_tokens
        np.testing.assert_allclose(float(scores[row]), best_score, atol=1e-5)


def greedy_reference(lm, prompt, *, max_new_tokens, min_new_tokens, end_token_id, banned):
    sequence = list(prompt)
    for step in range(max_new_tokens):
        ids = np.array([sequence], "int32")
        logits = np.array(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))[0, -1]
        logits[list(banned)] = -np.inf
        if step < min_new_tokens:
            logits[end_token_id] = -np.inf
        sequence.append(int(logits.argmax()))
        if sequence[-1] == end_token_id:
            break
    return sequence[len(prompt):]


def test_greedy_equals_stepwise_argmax_of_the_uncached_model():
    lm = gpt2_lm("deep_share")
    settings = dict(max_new_tokens=8, min_new_tokens=2, banned=(12, 40))
    prompts = prompts_of(PROMPTS, PROMPT_MASK)
    # An end token the model actually picks: the free run's third token.
    end_token_id = greedy_reference(lm, prompts[0], max_new_tokens=3, min_new_tokens=0,
                                    end_token_id=0, banned=settings["banned"])[2]
    tokens, scores = generate_gpt2(
        lm, PROMPTS, PROMPT_MASK, num_beams=1, max_new_tokens=settings["max_new_tokens"],
        min_new_tokens=settings["min_new_tokens"], length_penalty=0.7,
        end_token_id=end_token_id, banned_token_ids=settings["banned"])
    tokens = np.asarray(tokens)
    generated = []
    for row, prompt in enumerate(prompts):
        expected = greedy_reference(lm, prompt, end_token_id=end_token_id, **settings)
        assert hypothesis(tokens[row], end_token_id) == expected
        generated.append(expected)
    assert any(end_token_id in g for g in generated)
    sums = gpt2_sum_log_probs(lm, prompts, generated)
    lengths = np.array([len(g) for g in generated], float)
    np.testing.assert_allclose(np.asarray(scores), sums / lengths ** 0.7, atol=1e-4)


def test_gpt2_beam_scores_match_uncached_scoring_with_prefixes():
    lm = gpt2_lm("deep_share")
    prompts = prompts_of(PROMPTS, PROMPT_MASK)
    end_token_id = greedy_reference(lm, prompts[1], max_new_tokens=2, min_new_tokens=0,
                                    end_token_id=0, banned=())[1]
    tokens, scores = generate_gpt2(lm, PROMPTS, PROMPT_MASK, num_beams=4, max_new_tokens=6,
                                   min_new_tokens=1, length_penalty=0.8,
                                   end_token_id=end_token_id)
    generated = [hypothesis(row, end_token_id) for row in np.asarray(tokens)]
    lengths = np.array([len(g) for g in generated], float)
    sums = gpt2_sum_log_probs(lm, prompts, generated)
    np.testing.assert_allclose(np.asarray(scores), sums / lengths ** 0.8, atol=1e-4)
    # The prefixes matter: the same tokens score differently without them.
    plain = gpt2_sum_log_probs(gpt2_lm(None), prompts, generated)
    assert np.abs(plain - sums).max() > 1e-3


def test_bart_beam_scores_match_uncached_scoring_with_three_prefix_sets():
    lm = bart_lm("deep_share")
    inputs = bart_inputs(batch=3)
    encoder_ids, encoder_mask = inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
    encoder_mask[2, -5:] = 0
    start, end_token_id = [2], 5
    settings = dict(start_token_ids=start, num_beams=3, max_length=8, min_length=3,
                    length_penalty=0.8)
    tokens, scores = generate_bart(lm, encoder_ids, encoder_mask, end_token_id=end_token_id,
                                   **settings)
    generated = [hypothesis(row, end_token_id) for row in np.asarray(tokens)]
    for g in generated:
        assert end_token_id not in g[:settings["min_length"] - len(start)]
    sums = bart_sum_log_probs(lm, encoder_ids, encoder_mask, start, generated)
    lengths = np.array([len(g) for g in generated], float)
    np.testing.assert_allclose(np.asarray(scores), sums / lengths ** 0.8, atol=1e-4)
    plain = bart_sum_log_probs(bart_lm(None), encoder_ids, encoder_mask, start, generated)
    assert np.abs(plain - sums).max() > 1e-3


def test_folded_prefixes_decode_like_unfolded():
    lm = gpt2_lm("deep_share")
    settings = dict(num_beams=3, max_new_tokens=5, end_token_id=7)
    tokens, scores = generate_gpt2(lm, PROMPTS, PROMPT_MASK, **settings)
    folded_tokens, folded_scores = generate_gpt2(lm.fold(), PROMPTS, PROMPT_MASK, **settings)
    np.testing.assert_array_equal(np.asarray(folded_tokens), np.asarray(tokens))
    np.testing.assert_allclose(np.asarray(folded_scores), np.asarray(scores), atol=1e-5)


def test_xla_compiled_decoding_matches_eager():
    gpt2 = gpt2_lm("deep_share").fold()
    gpt2_settings = dict(num_beams=3, max_new_tokens=6, min_new_tokens=1, length_penalty=0.8,
                         end_token_id=7, banned_token_ids=(9,))

    @tf.function(jit_compile=True)
    def decode_gpt2(token_ids, padding_mask):  # the default cache is static under XLA
        return generate_gpt2(gpt2, token_ids, padding_mask, **gpt2_settings)

    eager = generate_gpt2(gpt2, PROMPTS, PROMPT_MASK, **gpt2_settings)
    compiled = decode_gpt2(tf.constant(PROMPTS), tf.constant(PROMPT_MASK))
    np.testing.assert_array_equal(compiled[0].numpy(), np.asarray(eager[0]))
    np.testing.assert_allclose(compiled[1].numpy(), np.asarray(eager[1]), atol=1e-4)

    bart = bart_lm("deep_share")
    inputs = bart_inputs(batch=2)
    bart_settings = dict(start_token_ids=[2], num_beams=2, max_length=7, min_length=3,
                         length_penalty=0.8, end_token_id=5)

    @tf.function(jit_compile=True)
    def decode_bart(encoder_ids, encoder_mask):
        return generate_bart(bart, encoder_ids, encoder_mask, **bart_settings)

    eager = generate_bart(bart, inputs["encoder_token_ids"], inputs["encoder_padding_mask"],
                          **bart_settings)
    compiled = decode_bart(tf.constant(inputs["encoder_token_ids"]),
                           tf.constant(inputs["encoder_padding_mask"]))
    np.testing.assert_array_equal(compiled[0].numpy(), np.asarray(eager[0]))
    np.testing.assert_allclose(compiled[1].numpy(), np.asarray(eager[1]), atol=1e-4)


def placed_gpt2_lm(variant, placement):
    config = None if variant is None else PrefixConfig(variant, placement, length=3, mlp_hidden=8)
    return PrefixGPT2CausalLM(build_backbone("gpt2_tiny"), prefix_config=config, seed=0)


@pytest.mark.parametrize("variant, placement", [("deep_share", "deep"),
                                                ("no_share", "shallow"), (None, None)])
def test_a_growing_cache_decodes_as_the_full_length_one(variant, placement):
    """Growing the cache 1 slot at a time (each step past the prompt pads it) changes nothing."""
    lm = placed_gpt2_lm(variant, placement)
    settings = dict(num_beams=3, max_new_tokens=6, min_new_tokens=2, end_token_id=7,
                    no_repeat_ngram_size=2)
    static = generate_gpt2(lm, PROMPTS, PROMPT_MASK, cache_chunk=0, **settings)

    @tf.function
    def grown(token_ids, padding_mask):
        return generate_gpt2(lm, token_ids, padding_mask, cache_chunk=1, **settings)

    tokens, scores = grown(tf.constant(PROMPTS), tf.constant(PROMPT_MASK))
    np.testing.assert_array_equal(tokens.numpy(), np.asarray(static[0]))
    np.testing.assert_allclose(scores.numpy(), np.asarray(static[1]), atol=1e-5)

    bart = bart_lm("deep_share")
    inputs = bart_inputs(batch=2)
    bart_settings = dict(start_token_ids=[2], num_beams=2, max_length=7, min_length=5,
                         end_token_id=5)
    args = (bart, inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
    static = generate_bart(*args, cache_chunk=0, **bart_settings)
    tokens, scores = generate_bart(*args, cache_chunk=2, **bart_settings)
    np.testing.assert_array_equal(np.asarray(tokens), np.asarray(static[0]))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(static[1]), atol=1e-5)


@pytest.mark.parametrize("placement", ["deep", "shallow"])
def test_cache_steps_give_the_uncached_logits(placement):
    """Every step of `DecodingCache` after a prefill equals the full forward pass."""
    lm = placed_gpt2_lm("deep_share", placement)
    ids = np.array([[7, 3, 9, 4, 12, 6], [5, 8, 1, 2, 10, 11]], "int32")
    full = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    cache = DecodingCache(lm)
    context, caches = cache.prefill(ids[:, :3], first=2, capacity=2)  # grown by hand below
    for index in range(2, ids.shape[1]):
        if index >= 4:
            caches = tuple(tuple(np.pad(x, [(0, 0), (0, 0), (0, 1), (0, 0)]) for x in pair)
                           for pair in caches)
        logits, caches = cache.step(context, caches, ids[:, index:index + 1], index)
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, index], atol=1e-5)


def test_beams_share_the_prompt_context_and_step_with_plain_products():
    """Only the steps' positions are per row (what beam search copies and
    reorders); each projection of a step is one 2-D product."""
    lm = placed_gpt2_lm("deep_share", "deep")
    cache = DecodingCache(lm)
    context, caches = cache.prefill(np.array([[7, 3, 9], [5, 8, 1]], "int32"), first=2, capacity=4)
    assert all(t.shape[0] == 2 and t.shape[2] == 3 + 3 for pair in context[1] for t in pair)
    assert all(t.shape[2] == 4 for pair in caches for t in pair)

    rows = tf.TensorSpec([6, 1], tf.int32)  # 2 inputs x 3 beams
    step = tf.function(lambda tokens: cache.step(
        context, tree.map_structure(lambda t: ops.repeat(t, 3, axis=0), caches), tokens, 3))
    graph = step.get_concrete_function(rows).graph
    projections = [op for op in graph.get_operations()
                   if re.search(r"(query|key|value|attention_output)(_\d+)?/", op.name)
                   and op.type in ("MatMul", "BatchMatMulV2", "Einsum")]
    assert len(projections) == 4 * lm.backbone.num_layers
    assert {op.type for op in projections} == {"MatMul"}


def test_a_beam_step_copies_each_cache_once():
    """Each step reorders a layer's keys and values with the beams (one copy)
    and writes its slot into that copy in place: no second copy of the cache."""
    lm = placed_gpt2_lm("deep_share", "deep")

    @tf.function
    def decode(token_ids, padding_mask):
        return generate_gpt2(lm, token_ids, padding_mask, num_beams=3, max_new_tokens=4,
                             end_token_id=7)

    graph = decode.get_concrete_function(tf.constant(PROMPTS), tf.constant(PROMPT_MASK)).graph
    [body] = [f for f in graph.as_graph_def().library.function
              if f.signature.name.startswith("while_body")]
    ops_in_body = collections.Counter(node.op for node in body.node_def)
    assert ops_in_body["InplaceUpdate"] == 2 * lm.backbone.num_layers
    assert not ops_in_body.keys() & {"XlaDynamicUpdateSlice", "TensorScatterUpdate"}


def test_blocks_the_cache_cannot_recompute_are_refused():
    class Changed:
        def call(self, *args, **kwargs):
            return super().call(*args, **kwargs)

    lm = gpt2_lm(None)
    mix_into(lm.backbone.transformer_layers[1], Changed, "Changed{}")
    with pytest.raises(ValueError, match="ChangedTransformerDecoder.*generate"):
        generate_gpt2(lm, PROMPTS, PROMPT_MASK, num_beams=1, max_new_tokens=2, end_token_id=7)


def test_minimum_length_and_banned_ids_are_respected():
    lm = gpt2_lm("deep_share")
    prompts = prompts_of(PROMPTS, PROMPT_MASK)
    # The end token is the model's first choice after prompt 0: unconstrained,
    # that input stops at once.
    end_token_id = greedy_reference(lm, prompts[0], max_new_tokens=1, min_new_tokens=0,
                                    end_token_id=0, banned=())[0]
    free, _ = generate_gpt2(lm, PROMPTS, PROMPT_MASK, num_beams=3, max_new_tokens=6,
                            end_token_id=end_token_id, length_penalty=0.0)
    free = np.asarray(free)
    assert hypothesis(free[0], end_token_id) == [end_token_id]
    banned = tuple(sorted({int(t) for t in free[1:].ravel()} - {0, end_token_id}))[:4]
    assert banned
    tokens, _ = generate_gpt2(lm, PROMPTS, PROMPT_MASK, num_beams=3, max_new_tokens=6,
                              min_new_tokens=4, end_token_id=end_token_id, length_penalty=0.0,
                              banned_token_ids=banned)
    tokens = np.asarray(tokens)
    assert not np.isin(tokens, banned).any()
    assert not (tokens[:, :4] == end_token_id).any()


def bigram_step(probabilities):
    """A cached-step stand-in: the next-token law depends on the last token only."""
    logits = np.log(np.asarray(probabilities, "float32"))

    def next_logits(state, tokens, index):
        return keras.ops.take(logits, tokens[:, index - 1], axis=0), state

    return next_logits


def test_length_penalty_changes_the_ranking():
    # From the start token 2: end (id 0) at once with 0.55, or 3 -> 4 -> end,
    # a longer hypothesis with a lower sum but a higher per-token average.
    table = np.full((5, 5), 1e-4)
    table[2, [0, 3]] = 0.55, 0.44
    table[3, 4] = 0.9
    table[4, 0] = 0.9
    table /= table.sum(1, keepdims=True)
    step = bigram_step(table)
    prompt, lengths = np.array([[2, 0, 0, 0]]), np.array([1])
    settings = dict(num_beams=2, max_new_tokens=3, end_token_id=0, early_stopping="exact")
    short, short_score = beam_search(step, (), prompt, lengths, length_penalty=0.0, **settings)
    long, long_score = beam_search(step, (), prompt, lengths, length_penalty=1.0, **settings)
    assert np.asarray(short).tolist() == [[0, 0, 0]]
    assert np.asarray(long).tolist() == [[3, 4, 0]]
    log_table = np.log(table)
    np.testing.assert_allclose(float(short_score[0]), log_table[2, 0], rtol=1e-5)
    np.testing.assert_allclose(float(long_score[0]),
                               (log_table[2, 3] + log_table[3, 4] + log_table[4, 0]) / 3,
                               rtol=1e-5)


def test_beams_with_identical_inputs_agree_across_the_batch():
    lm = gpt2_lm("no_share")
    prompts = np.array([[6, 8, 0], [6, 8, 10], [6, 8, 0]], "int32")
    tokens, scores = generate_gpt2(lm, prompts, prompts > 0, num_beams=3, max_new_tokens=5,
                                   end_token_id=7)
    tokens, scores = np.asarray(tokens), np.asarray(scores)
    np.testing.assert_array_equal(tokens[0], tokens[2])
    np.testing.assert_allclose(scores[0], scores[2], atol=1e-6)
    alone, alone_score = generate_gpt2(lm, prompts[:1, :2], np.ones((1, 2), bool), num_beams=3,
                                       max_new_tokens=5, end_token_id=7)
    np.testing.assert_array_equal(np.asarray(alone)[0], tokens[0])
    np.testing.assert_allclose(np.asarray(alone_score)[0], scores[0], atol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (dict(num_beams=0), "num_beams"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(min_new_tokens=7), "min_new_tokens"),
    (dict(banned_token_ids=(7,)), "also banned"),
    (dict(early_stopping="never"), "early_stopping"),
])
def test_bad_settings_get_clear_errors(bad, message):
    lm = gpt2_lm(None)
    settings = {**dict(num_beams=2, max_new_tokens=5, end_token_id=7), **bad}
    with pytest.raises(ValueError, match=message):
        generate_gpt2(lm, PROMPTS, PROMPT_MASK, **settings)


def test_decoding_past_the_position_table_is_rejected():
    lm = gpt2_lm(None)
    with pytest.raises(ValueError, match="max_sequence_length"):
        generate_gpt2(lm, PROMPTS, PROMPT_MASK, num_beams=2, end_token_id=7,
                      max_new_tokens=lm.backbone.max_sequence_length)


def test_right_aligned_prompts_are_rejected():
    with pytest.raises(ValueError, match="left-aligned"):
        generate_gpt2(gpt2_lm(None), np.array([[0, 5, 6]]), np.array([[0, 1, 1]]),
                      num_beams=2, max_new_tokens=3, end_token_id=7)


def repeats_an_ngram(sequence, start, size):
    """True when a token at or after `start` completes an n-gram seen earlier in `sequence`."""
    for position in range(max(start, size - 1), len(sequence)):
        gram = tuple(sequence[position - size + 1:position + 1])
        earlier = {tuple(sequence[i:i + size]) for i in range(position - size + 1)}
        if gram in earlier:
            return True
    return False


@pytest.mark.parametrize("length_penalty, no_repeat_ngram_size", [(1.0, 0), (0.7, 2)])
def test_full_length_normalization_equals_exhaustive_search_as_transformers_3_2(
        length_penalty, no_repeat_ngram_size):
    # transformers 3.2 (generation_utils.py, BeamHypotheses.add) divides a
    # finished hypothesis' sum by len(input_ids) before the end token is
    # appended: prompt + generated tokens, end excluded; one cut at the length
    # limit by all its tokens. Repeated n-grams count the prompt too.
    vocabulary_size, max_new_tokens, end_token_id = 6, 3, 1
    lm = tiny_vocab_gpt2(vocabulary_size)
    prompts = [[2, 4, 5], [4]]
    mask = np.array([[1, 1, 1], [1, 0, 0]], bool)
    continuing = vocabulary_size - 1
    num_beams = continuing ** (max_new_tokens - 1) * (continuing + 1)
    tokens, scores = generate_gpt2(
        lm, np.array([[2, 4, 5], [4, 0, 0]], "int32"), mask, num_beams=num_beams,
        max_new_tokens=max_new_tokens, length_penalty=length_penalty,
        end_token_id=end_token_id, early_stopping="exact", length_normalization="full",
        no_repeat_ngram_size=no_repeat_ngram_size)
    others = [t for t in range(vocabulary_size) if t != end_token_id]
    for row, prompt in enumerate(prompts):
        candidates = []
        for length in range(1, max_new_tokens + 1):
            for body in itertools.product(others, repeat=length - 1):
                candidates.append(list(body) + [end_token_id])
                if length == max_new_tokens:
                    candidates.extend(list(body) + [last] for last in others)
        if no_repeat_ngram_size:
            candidates = [c for c in candidates
                          if not repeats_an_ngram(prompt + c, len(prompt), no_repeat_ngram_size)]
        sums = gpt2_sum_log_probs(lm, [prompt] * len(candidates), candidates)
        full = np.array([len(prompt) + len(c) - (c[-1] == end_token_id) for c in candidates],
                        float)
        expected = sums / full ** length_penalty
        best = int(np.argmax(expected))
        assert np.sort(expected)[-1] - np.sort(expected)[-2] > 1e-4, "near tie"
        assert hypothesis(tokens[row], end_token_id) == candidates[best]
        np.testing.assert_allclose(float(scores[row]), expected[best], atol=1e-5)
        if no_repeat_ngram_size:
            assert not repeats_an_ngram(prompt + candidates[best], len(prompt),
                                        no_repeat_ngram_size)


def test_repeated_ngram_ban_by_hand():
    from kprefix.tasks.decoding import _repeated_ngram_mask

    # Row 0: "3 4 5 3 |" -> the next token after "3" may not be 4 (3 4 seen).
    # Row 1: "3 4 3 4 |" with trigrams: "3 4" seen followed by 3 -> 3 banned.
    tokens = np.array([[3, 4, 5, 3, 0, 0], [3, 4, 3, 4, 0, 0]], "int32")
    bigram = np.asarray(_repeated_ngram_mask(tokens, 4, 2, 7))
    assert [list(np.flatnonzero(r)) for r in bigram] == [[4], [3]]
    trigram = np.asarray(_repeated_ngram_mask(tokens, 4, 3, 7))
    assert [list(np.flatnonzero(r)) for r in trigram] == [[], [3]]
    # Nothing is banned before a whole n-gram fits.
    assert not np.asarray(_repeated_ngram_mask(tokens, 1, 3, 7)).any()


def test_position_offset_uses_position_rows_from_the_prefix_length():
    lm = gpt2_lm("deep_share", position_offset="P")
    backbone, length = lm.backbone, lm.prefix_config.length
    ids = np.array([[5, 9, 2, 7]], "int32")
    logits = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids)}))
    # By hand: token rows plus position rows P..P+T-1 of the table, then the
    # (prefixed) blocks, the final norm and the tied output.
    table = np.asarray(backbone.position_embedding.position_embeddings)
    x = np.asarray(backbone.token_embedding(ids)) + table[length:length + ids.shape[1]][None]
    for layer in backbone.transformer_layers:
        x = layer(x)  # keras-hub's decoder block applies the causal mask itself
    x = np.asarray(backbone.layer_norm(x))
    expected = x @ np.asarray(backbone.token_embedding.embeddings).T
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    unshifted = np.asarray(gpt2_lm("deep_share")({"token_ids": ids,
                                                  "padding_mask": np.ones_like(ids)}))
    assert np.abs(unshifted - logits).max() > 1e-3


def test_cached_decoding_with_position_offset_equals_uncached_scoring():
    lm = gpt2_lm("no_share", position_offset="P")
    prompts = prompts_of(PROMPTS, PROMPT_MASK)
    tokens, scores = generate_gpt2(lm, PROMPTS, PROMPT_MASK, num_beams=3, max_new_tokens=5,
                                   length_penalty=1.0, end_token_id=7)
    generated = [hypothesis(row, 7) for row in np.asarray(tokens)]
    lengths = np.array([len(g) for g in generated], float)
    np.testing.assert_allclose(np.asarray(scores),
                               gpt2_sum_log_probs(lm, prompts, generated) / lengths, atol=1e-4)
    folded_tokens, _ = generate_gpt2(lm.fold(), PROMPTS, PROMPT_MASK, num_beams=3,
                                     max_new_tokens=5, length_penalty=1.0, end_token_id=7)
    np.testing.assert_array_equal(np.asarray(folded_tokens), np.asarray(tokens))


def test_bart_full_length_normalization_counts_the_start_token():
    # transformers 3.2 scores an encoder-decoder hypothesis over its decoder
    # input_ids: the start token(s) and the generated tokens, the end excluded.
    lm = bart_lm("deep_share")
    inputs = bart_inputs(batch=2)
    start, end_token_id = [2], 5
    tokens, scores = generate_bart(
        lm, inputs["encoder_token_ids"], inputs["encoder_padding_mask"], start_token_ids=start,
        num_beams=3, max_length=8, min_length=2, length_penalty=0.8, end_token_id=end_token_id,
        length_normalization="full", no_repeat_ngram_size=2, early_stopping="first")
    generated = [hypothesis(row, end_token_id) for row in np.asarray(tokens)]
    full = np.array([len(start) + len(g) - (g[-1] == end_token_id) for g in generated], float)
    sums = bart_sum_log_probs(lm, inputs["encoder_token_ids"], inputs["encoder_padding_mask"],
                              start, generated)
    np.testing.assert_allclose(np.asarray(scores), sums / full ** 0.8, atol=1e-4)
    for g in generated:
        assert not repeats_an_ngram(start + g, len(start), 2)


def test_bart_forced_end_at_the_length_limit_scores_it_as_transformers_3_2():
    # adjust_logits_during_generation (transformers 3.2 modeling_bart.py) leaves
    # only the end token at the last step: its log-probability is 0 there.
    lm = bart_lm("deep_share")
    inputs = bart_inputs(batch=2)
    start, end_token_id, max_length = [2], 5, 4
    tokens, scores = generate_bart(
        lm, inputs["encoder_token_ids"], inputs["encoder_padding_mask"], start_token_ids=start,
        num_beams=2, max_length=max_length, min_length=0, length_penalty=1.0,
        end_token_id=end_token_id, length_normalization="full", force_end_at_max_length=True)
    generated = [hypothesis(row, end_token_id) for row in np.asarray(tokens)]
    assert all(g[-1] == end_token_id for g in generated)
    at_limit = [len(g) == max_length - len(start) for g in generated]
    assert any(at_limit)  # the random tiny model rarely ends early
    scored = [g[:-1] if limited else g for g, limited in zip(generated, at_limit)]
    sums = bart_sum_log_probs(lm, inputs["encoder_token_ids"], inputs["encoder_padding_mask"],
                              start, scored)
    full = np.array([len(start) + len(g) - 1 for g in generated], float)
    np.testing.assert_allclose(np.asarray(scores), sums / full, atol=1e-4)
