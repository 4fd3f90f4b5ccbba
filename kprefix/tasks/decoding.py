"""Beam search (and greedy decoding) over a cached decoding step.

One loop, `beam_search`, drives any cached model through a
`next_logits(state, tokens, index) -> (logits, state)` step; `generate_gpt2`
(over `kprefix.tasks.gpt2_cache`) and `generate_bart` (over keras-hub's cached
decoder call) decode with `PrefixGPT2CausalLM` and `PrefixBartSeq2SeqLM` (or
the plain keras-hub models). Prefixes are the same for every input, so beams
need nothing special: the KV cache is reordered with the beams (for GPT-2,
only its generated positions: the prompt's are shared by an input's beams),
and by default it grows with the sequence instead of holding the whole length.

Conventions (Hugging Face `BeamSearchScorer`, early_stopping=False/"never"):

- A hypothesis' score is `sum of log-probabilities / length ** length_penalty`,
  where log-probabilities come from the model's unconstrained softmax. With
  `length_normalization="generated"`, `length` counts the generated tokens,
  end token included, prompt (GPT-2) or start tokens (BART) excluded. With
  `"full"` it counts the whole sequence, prompt or start tokens included and
  the end token excluded, as transformers 3.2's `BeamHypotheses.add` does
  (it scores the sequence before the end token is appended); the bound of
  the done test uses the same full length.
- Each step takes the `2 * num_beams` best continuations of all beams. An
  end-token continuation ranked among the first `num_beams` becomes a finished
  hypothesis; the first `num_beams` other continuations are the next beams.
  Each input keeps its `num_beams` best finished hypotheses.
- An input is done when it holds `num_beams` finished hypotheses and none of
  its live beams can beat the worst of them: with
  `early_stopping="heuristic"` (Hugging Face's default) the bound is the best
  candidate's sum over the current length; with `"exact"` (Hugging Face's
  "never") it is the best sum over the longest reachable length when
  `length_penalty > 0`, a true upper bound, so stopping never changes the
  result. With `"first"` (transformers 3.2's `early_stopping=True`) an input
  is done as soon as it holds `num_beams` finished hypotheses. With
  `num_beams=1` (greedy) an input is done once the end token is the argmax.
- When an input reaches its length limit, its live beams are scored as
  finished (without an end token). The answer is the best finished hypothesis.
- Minimum length: the end token is disallowed while fewer than
  `min_new_tokens` tokens have been generated; banned ids are never chosen.
- `force_end_at_max_length`: the last token a hypothesis can take is the end
  token, with log-probability 0, as transformers 3.2's BART forces it
  (`adjust_logits_during_generation` sets every other logit to -inf before
  the softmax), so hypotheses cut by the limit end there and are scored as
  finished.
- `no_repeat_ngram_size=n > 0`: a token that would repeat an n-gram already in
  the sequence (prompt or start tokens included, as transformers 3.2's
  `calc_banned_ngram_tokens` looks at the whole `input_ids`) is never chosen.

GPT-2 prompts of different lengths are left-aligned (right-padded, as
keras-hub's `generate` takes them): decoding starts at the shortest prompt and
each longer prompt's own tokens are forced, unscored, until it ends.

Returned tokens are the generated tokens only, aligned at column 0: the best
hypothesis per input, its end token, then `pad_token_id`.

Example:

>>> import numpy as np
>>> from kprefix.backbones import build_backbone
>>> from kprefix.tasks.decoding import generate_gpt2
>>> from kprefix.prefix import PrefixConfig
>>> from kprefix.tasks import PrefixGPT2CausalLM
>>> lm = PrefixGPT2CausalLM(build_backbone("gpt2_tiny"), prefix_config=PrefixConfig(length=3))
>>> tokens, scores = generate_gpt2(
...     lm, np.array([[5, 6, 7], [8, 9, 0]]), np.array([[1, 1, 1], [1, 1, 0]]),
...     num_beams=3, max_new_tokens=5, min_new_tokens=2, end_token_id=1)
>>> tuple(tokens.shape), tuple(scores.shape)
((2, 5), (2,))
"""

import numpy as np
import tensorflow as tf
from keras import ops, tree
from tensorflow.python.ops import control_flow_util

from kprefix.runs.config import EARLY_STOPPING, LENGTH_NORMALIZATION
from kprefix.tasks.gpt2_cache import DecodingCache



def repeat_for_beams(x, num_beams):
    """`(B, ...) -> (B * num_beams, ...)`, each row repeated `num_beams` times."""
    return ops.repeat(x, num_beams, axis=0)


def beam_search(
    next_logits,
    state,
    prompt_tokens,
    prompt_lengths,
    *,
    num_beams,
    max_new_tokens,
    min_new_tokens=0,
    length_penalty=1.0,
    end_token_id,
    banned_token_ids=(),
    pad_token_id=0,
    early_stopping="heuristic",
    length_normalization="generated",
    no_repeat_ngram_size=0,
    force_end_at_max_length=False,
    state_growth=None,
    reorder_in_step=False,
):
    """Beam search over a cached step function; see the module doc for the rules.

    Args:
        next_logits: `(state, tokens, index) -> (logits, state)`. `tokens` is
            the `(B * num_beams, L)` buffer of every beam (positions before
            `index` are final); `logits` `(B * num_beams, vocab)` predict
            position `index`. Every tensor in `state` has a leading
            `B * num_beams` axis and is reordered with the beams.
        state: the step's initial state for the `B` inputs (leading axis `B`),
            e.g. a KV cache filled with the prompts; repeated for the beams.
        prompt_tokens: `(B, L)` int buffer, each prompt left-aligned. `L`
            must be static and at least `max(prompt_lengths) + max_new_tokens`.
        prompt_lengths: `(B,)` number of prompt tokens of each input, >= 1.
        num_beams: beams per input; 1 is greedy decoding.
        max_new_tokens: tokens generated at most per input (end token included).
        min_new_tokens: tokens generated before the end token may be chosen.
        length_penalty: exponent of the length normalization.
        end_token_id: the token that finishes a hypothesis.
        banned_token_ids: ids that are never generated.
        pad_token_id: fills the returned tokens after the end.
        early_stopping: `"heuristic"`, `"exact"` or `"first"` (see the module doc).
        length_normalization: `"generated"` or `"full"` (see the module doc).
        no_repeat_ngram_size: ban repeated n-grams of this size (0: off).
        force_end_at_max_length: the last allowed token is the end token (see
            the module doc).
        state_growth: `None`, or `(axis, chunk, reserved)` when every tensor
            in `state` is a cache along `axis` that needs `reserved + index`
            slots for the step at `index`: it is padded by `chunk` slots
            whenever it is full, so each step reads and copies a cache about
            as long as the sequence so far instead of the whole buffer. Its
            length then varies inside the loop, which XLA cannot compile.
        reorder_in_step: if true, the state is not reordered here:
            `next_logits(state, tokens, index, beam_rows)` gets the
            `(B * num_beams,)` rows of `state` that its beams continue and
            reorders the state itself, so that it can write its new cache
            slot into the reordered copy in place instead of copying the
            cache twice per step.

    Returns:
        `(tokens, scores)`: `(B, max_new_tokens)` int32 generated tokens of the
        best hypothesis and its `(B,)` float32 length-normalized score.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> table = np.log(np.array([[.1, .6, .3], [.5, .2, .3], [.2, .2, .6]], "float32"))
    >>> step = lambda state, tokens, index: (
    ...     ops.take(table, tokens[:, index - 1], axis=0), state)
    >>> tokens, scores = beam_search(step, (), np.array([[2, 0, 0]]), np.array([1]),
    ...     num_beams=2, max_new_tokens=2, end_token_id=0, length_penalty=0.0)
    >>> ops.convert_to_numpy(tokens).tolist()
    [[2, 2]]
    """
    _check_settings(num_beams, max_new_tokens, min_new_tokens, length_penalty, end_token_id,
                    banned_token_ids, pad_token_id, early_stopping, length_normalization,
                    no_repeat_ngram_size)
    beams = int(num_beams)
    # The length a hypothesis is normalized by counts from here: 0 (whole
    # sequence) or the prompt's end (generated tokens only).
    count_from = 0 if length_normalization == "full" else None
    prompt_tokens = ops.cast(ops.convert_to_tensor(prompt_tokens), "int32")
    prompt_lengths = ops.cast(ops.convert_to_tensor(prompt_lengths), "int32")
    length = prompt_tokens.shape[1]
    if length is None:
        raise ValueError("prompt_tokens needs a static length (the decoding buffer size).")
    _check_lengths(prompt_lengths, length, max_new_tokens)
    batch = ops.shape(prompt_tokens)[0]
    length_penalty = float(length_penalty)
    positions = ops.arange(length, dtype="int32")
    tokens = ops.where(positions[None] < prompt_lengths[:, None], prompt_tokens, pad_token_id)
    tokens = ops.repeat(tokens[:, None], beams, axis=1)  # (B, beams, L)
    # Only the first beam is live at the start, so the first step does not
    # pick the same continuation once per (identical) beam.
    beam_scores = ops.where(ops.arange(beams)[None] == 0, 0.0, float("-inf"))
    beam_scores = ops.broadcast_to(ops.cast(beam_scores, "float32"), (batch, beams))
    pool_scores = ops.full((batch, beams), float("-inf"), dtype="float32")
    pool_tokens = tokens
    done = ops.zeros((batch,), dtype="bool")
    row_end = prompt_lengths + max_new_tokens
    state = tree.map_structure(lambda x: repeat_for_beams(x, beams), state)
    banned = tuple(int(t) for t in banned_token_ids)

    count_from = prompt_lengths if count_from is None else ops.zeros_like(prompt_lengths)
    # A finished hypothesis ending at buffer position `index` is scored over
    # `index + 1 - count_from` tokens with its end token ("generated") or over
    # the `index` tokens before it ("full", as transformers 3.2).
    end_counted = 0 if length_normalization == "full" else 1

    def normalize(sums, generated_length):
        return sums / ops.power(ops.cast(generated_length, "float32"), length_penalty)

    def cond(index, tokens, beam_scores, pool_scores, pool_tokens, done, state, beam_rows):
        return ops.logical_and(index < length, ops.logical_not(ops.all(done)))

    def body(index, tokens, beam_scores, pool_scores, pool_tokens, done, state, beam_rows):
        if state_growth is not None:
            axis, chunk, reserved = state_growth
            state = tree.map_structure(lambda x: _grow(x, reserved + index, axis, chunk), state)
        flat_tokens = ops.reshape(tokens, (batch * beams, length))
        if reorder_in_step:
            logits, state = next_logits(state, flat_tokens, index, beam_rows)
        else:
            logits, state = next_logits(state, flat_tokens, index)
        vocab = ops.shape(logits)[-1]
        log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
        log_probs = ops.reshape(log_probs, (batch, beams, vocab))
        generated = index - prompt_lengths  # tokens generated before this one
        vocab_ids = ops.arange(vocab, dtype="int32")
        is_end = vocab_ids == end_token_id
        disallowed = ops.logical_and(is_end[None], (generated < min_new_tokens)[:, None])
        if banned:
            is_banned = ops.any(vocab_ids[:, None] == ops.array(banned, "int32")[None], axis=1)
            disallowed = ops.logical_or(disallowed, is_banned[None])
        log_probs = ops.where(disallowed[:, None, :], float("-inf"), log_probs)
        if no_repeat_ngram_size:
            repeats = _repeated_ngram_mask(ops.reshape(tokens, (batch * beams, length)), index,
                                           int(no_repeat_ngram_size), vocab)
            log_probs = ops.where(ops.reshape(repeats, (batch, beams, vocab)), float("-inf"),
                                  log_probs)
        if force_end_at_max_length:
            last = (index + 1 >= row_end)[:, None, None]
            forced = ops.where(is_end, 0.0, float("-inf"))[None, None, :]
            log_probs = ops.where(last, forced, log_probs)
        candidates = ops.reshape(beam_scores[:, :, None] + log_probs, (batch, beams * vocab))
        top_scores, top_ids = ops.top_k(candidates, 2 * beams)
        top_ids = ops.cast(top_ids, "int32")
        top_beams, top_tokens = top_ids // vocab, top_ids % vocab
        top_is_end = top_tokens == end_token_id
        rank = ops.arange(2 * beams, dtype="int32")[None]

        active = (index >= prompt_lengths) & (index < row_end) & ops.logical_not(done)
        at_index = positions == index

        # Finished hypotheses: end tokens ranked among the first `beams`.
        finishing = top_is_end & (rank < beams) & active[:, None]
        finished_length = index + end_counted - count_from
        finished_scores = ops.where(finishing, normalize(top_scores, finished_length[:, None]),
                                    float("-inf"))[:, :beams]
        finished_tokens = ops.where(at_index, end_token_id,
                                    _gather_beams(tokens, top_beams[:, :beams]))
        pool_scores, pool_tokens = _keep_best(pool_scores, pool_tokens,
                                              finished_scores, finished_tokens, beams)

        # Next beams: the first `beams` candidates that are not end tokens.
        order = ops.where(top_is_end, rank + 2 * beams, rank)
        chosen = ops.argsort(order, axis=-1)[:, :beams]
        next_beams = ops.take_along_axis(top_beams, chosen, axis=1)
        next_tokens = ops.take_along_axis(top_tokens, chosen, axis=1)
        next_scores = ops.take_along_axis(top_scores, chosen, axis=1)
        # Inputs still in their prompt, or done, keep their beams and buffers.
        keep = ops.logical_not(active)[:, None]
        next_beams = ops.where(keep, ops.arange(beams, dtype="int32")[None], next_beams)
        next_tokens = ops.where(keep, _column(tokens, index), next_tokens)
        next_scores = ops.where(keep, beam_scores, next_scores)
        tokens = ops.where(at_index, next_tokens[:, :, None], _gather_beams(tokens, next_beams))
        beam_rows = ops.reshape(
            ops.arange(batch, dtype="int32")[:, None] * beams + next_beams, (-1,))
        if beams > 1 and not reorder_in_step:  # a single beam always continues itself
            state = tree.map_structure(lambda x: ops.take(x, beam_rows, axis=0), state)

        pool_full = ops.all(pool_scores > float("-inf"), axis=1)
        if beams == 1 or early_stopping == "first":
            converged = pool_full
        else:
            best_sum = ops.max(top_scores, axis=1)
            if early_stopping == "exact" and length_penalty > 0:
                attainable = normalize(best_sum, row_end - count_from)
            else:
                attainable = normalize(best_sum, finished_length)
            converged = pool_full & (ops.min(pool_scores, axis=1) >= attainable)
        newly_done = active & converged
        out_of_length = active & ops.logical_not(newly_done) & (index + 1 >= row_end)
        running_scores = ops.where(out_of_length[:, None],
                                   normalize(next_scores, (index + 1 - count_from)[:, None]),
                                   float("-inf"))
        pool_scores, pool_tokens = _keep_best(pool_scores, pool_tokens,
                                              running_scores, tokens, beams)
        done = done | newly_done | out_of_length
        return index + 1, tokens, next_scores, pool_scores, pool_tokens, done, state, beam_rows

    beam_rows = ops.arange(batch * beams, dtype="int32")
    loop_vars = (ops.min(prompt_lengths), tokens, beam_scores, pool_scores, pool_tokens, done,
                 state, beam_rows)
    shapes = tree.map_structure(lambda x: tf.TensorShape(x.shape), loop_vars)
    if state_growth is not None:
        axis = state_growth[0]
        shapes = shapes[:-2] + (tree.map_structure(
            lambda x: tf.TensorShape(x.shape[:axis] + (None,) + x.shape[axis + 1:]), state),
            shapes[-1])
    _, _, _, pool_scores, pool_tokens, _, _, _ = tf.while_loop(
        cond, body, loop_vars, shape_invariants=shapes, maximum_iterations=length)

    best = ops.cast(ops.argmax(pool_scores, axis=1), "int32")
    scores = ops.take_along_axis(pool_scores, best[:, None], axis=1)[:, 0]
    best_tokens = _gather_beams(pool_tokens, best[:, None])[:, 0]
    new_positions = prompt_lengths[:, None] + ops.arange(max_new_tokens, dtype="int32")[None]
    new_tokens = ops.take_along_axis(best_tokens, ops.minimum(new_positions, length - 1), axis=1)
    ends = ops.cast(new_tokens == end_token_id, "int32")
    after_end = (ops.cumsum(ends, axis=1) - ends) > 0
    new_tokens = ops.where(after_end, pad_token_id, new_tokens)
    return new_tokens, scores


def generate_gpt2(
    lm,
    token_ids,
    padding_mask,
    *,
    num_beams=5,
    max_new_tokens=100,
    min_new_tokens=0,
    length_penalty=1.0,
    end_token_id,
    banned_token_ids=(),
    pad_token_id=0,
    early_stopping="heuristic",
    length_normalization="generated",
    no_repeat_ngram_size=0,
    cache_chunk=None,
):
    """Beam search with a keras-hub `GPT2CausalLM` (prefixed or not).

    The paper's table-to-text setting is `num_beams=5, max_new_tokens=100`,
    with newline ids in `banned_token_ids` and a minimum length.

    Args:
        lm: a `PrefixGPT2CausalLM` (folded or not) or `GPT2CausalLM`.
        token_ids: `(B, P)` prompts, left-aligned (padding on the right).
        padding_mask: `(B, P)`, true on prompt tokens; each prompt non-empty.
        cache_chunk: the steps' KV cache (`kprefix.tasks.gpt2_cache`) starts
            with room for this many positions and grows by as many when full
            (`state_growth` of `beam_search`); 0 allocates the whole length at
            once, as XLA needs. `None`: 0 when traced for XLA
            (`jit_compile`, TPUs), else 16.
        Others: as in `beam_search`.

    Returns:
        `(tokens, scores)`: `(B, max_new_tokens)` generated tokens and `(B,)`
        length-normalized scores.

    Example:

    >>> import numpy as np
    >>> from kprefix.backbones import build_backbone
    >>> from kprefix.tasks import PrefixGPT2CausalLM
    >>> lm = PrefixGPT2CausalLM(build_backbone("gpt2_tiny"))
    >>> tokens, _ = generate_gpt2(lm, np.array([[4, 5]]), np.array([[1, 1]]),
    ...                           num_beams=1, max_new_tokens=3, end_token_id=1)
    >>> tuple(tokens.shape)
    (1, 3)
    """
    _check_settings(num_beams, max_new_tokens, min_new_tokens, length_penalty, end_token_id,
                    banned_token_ids, pad_token_id, early_stopping, length_normalization,
                    no_repeat_ngram_size)
    token_ids = ops.cast(ops.convert_to_tensor(token_ids), "int32")
    prompt_lengths = ops.sum(ops.cast(ops.convert_to_tensor(padding_mask), "int32"), axis=1)
    _check_left_aligned(padding_mask)
    length = token_ids.shape[1] + max_new_tokens
    offset = getattr(lm.backbone.position_embedding, "_offset", 0)
    limit = lm.backbone.max_sequence_length - offset
    if length > limit:
        raise ValueError(f"Prompt width {token_ids.shape[1]} + max_new_tokens {max_new_tokens} "
                         f"exceeds the model's max_sequence_length {limit + offset}"
                         + (f" less the position offset {offset}." if offset else "."))
    buffer = ops.pad(token_ids, [[0, 0], [0, max_new_tokens]], constant_values=pad_token_id)
    cache_chunk = _cache_chunk(cache_chunk)
    cache = DecodingCache(lm)
    # Steps start at the shortest prompt's last token; the positions before it
    # are the context every beam shares.
    first = ops.min(prompt_lengths) - 1
    context, caches = cache.prefill(token_ids, first, cache_chunk or length)

    def next_logits(caches, tokens, index, beam_rows):
        last = ops.slice(tokens, [0, index - 1], [ops.shape(tokens)[0], 1])
        logits, caches = cache.step(context, caches, last, index - 1, beam_rows)
        return logits[:, 0], caches

    growth = (cache.AXIS, cache_chunk, -first) if cache_chunk else None
    return beam_search(next_logits, caches, buffer, prompt_lengths, num_beams=num_beams,
                       max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                       length_penalty=length_penalty, end_token_id=end_token_id,
                       banned_token_ids=banned_token_ids, pad_token_id=pad_token_id,
                       early_stopping=early_stopping, length_normalization=length_normalization,
                       no_repeat_ngram_size=no_repeat_ngram_size, state_growth=growth,
                       reorder_in_step=True)


def generate_bart(
    lm,
    encoder_token_ids,
    encoder_padding_mask,
    *,
    start_token_ids,
    num_beams=6,
    max_length=62,
    min_length=11,
    length_penalty=0.8,
    end_token_id,
    banned_token_ids=(),
    pad_token_id=0,
    early_stopping="heuristic",
    length_normalization="generated",
    no_repeat_ngram_size=0,
    force_end_at_max_length=False,
    cache_chunk=None,
):
    """Beam search with a keras-hub `BartSeq2SeqLM` (prefixed or not).

    Defaults are the paper's XSUM setting. As in Hugging Face, `max_length`
    and `min_length` count decoder tokens including `start_token_ids`: the
    end token may be chosen once the decoder holds `min_length` tokens.

    Args:
        lm: a `PrefixBartSeq2SeqLM` (folded or not) or `BartSeq2SeqLM`.
        encoder_token_ids: `(B, S)` source tokens.
        encoder_padding_mask: `(B, S)`, true on source tokens.
        start_token_ids: the decoder's first tokens, the same for every input.
        cache_chunk: as in `generate_gpt2`, for the decoder's self-attention cache.
        Others: as in `beam_search`.

    Returns:
        `(tokens, scores)`: `(B, max_length - len(start_token_ids))` generated
        tokens and `(B,)` length-normalized scores.

    Example:

    >>> import numpy as np
    >>> from kprefix.backbones import build_backbone
    >>> from kprefix.tasks import PrefixBartSeq2SeqLM
    >>> lm = PrefixBartSeq2SeqLM(build_backbone("bart_tiny"))
    >>> tokens, _ = generate_bart(lm, np.array([[4, 5, 6]]), np.array([[1, 1, 1]]),
    ...     start_token_ids=[2], num_beams=2, max_length=6, min_length=2, end_token_id=2)
    >>> tuple(tokens.shape)
    (1, 5)
    """
    start = [int(t) for t in start_token_ids]
    if not start:
        raise ValueError("start_token_ids must hold at least one token.")
    if not isinstance(max_length, int) or max_length <= len(start):
        raise ValueError(f"max_length must be an int above len(start_token_ids)={len(start)}, "
                         f"got {max_length!r}.")
    if not isinstance(min_length, int) or min_length < 0:
        raise ValueError(f"min_length must be an int >= 0, got {min_length!r}.")
    max_new_tokens = max_length - len(start)
    min_new_tokens = min(max(min_length - len(start), 0), max_new_tokens)
    _check_settings(num_beams, max_new_tokens, min_new_tokens, length_penalty, end_token_id,
                    banned_token_ids, pad_token_id, early_stopping, length_normalization,
                    no_repeat_ngram_size)
    limit = lm.backbone.max_sequence_length
    if max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the model's max_sequence_length "
                         f"{limit}.")
    encoder_token_ids = ops.cast(ops.convert_to_tensor(encoder_token_ids), "int32")
    encoder_padding_mask = ops.cast(ops.convert_to_tensor(encoder_padding_mask), "bool")
    batch = ops.shape(encoder_token_ids)[0]
    start_tokens = ops.broadcast_to(ops.array(start, "int32")[None], (batch, len(start)))
    buffer = ops.pad(start_tokens, [[0, 0], [0, max_new_tokens]], constant_values=pad_token_id)

    encoder_hidden = lm.call_encoder(encoder_token_ids, encoder_padding_mask)
    self_cache, cross_cache = lm._initialize_cache(encoder_token_ids, buffer)
    cache_chunk = _cache_chunk(cache_chunk)
    if cache_chunk:  # (B, layers, 2, length, heads, dim): start with the first slots
        self_cache = self_cache[:, :, :, :min(max_length, len(start) + cache_chunk)]
    _, _, self_cache, cross_cache = lm.call_decoder_with_cache(
        encoder_hidden_states=encoder_hidden,
        encoder_padding_mask=encoder_padding_mask,
        decoder_token_ids=start_tokens,
        self_attention_cache=self_cache,
        self_attention_cache_update_index=0,
        cross_attention_cache=cross_cache,
        cross_attention_cache_update_index=0,
    )
    # Per-input constants: the same for every beam of an input, never reordered.
    encoder_hidden, encoder_padding_mask, cross_cache = (
        repeat_for_beams(x, num_beams) for x in (encoder_hidden, encoder_padding_mask,
                                                 cross_cache))

    def next_logits(self_cache, tokens, index):
        last = ops.slice(tokens, [0, index - 1], [ops.shape(tokens)[0], 1])
        logits, _, self_cache, _ = lm.call_decoder_with_cache(
            encoder_hidden_states=encoder_hidden,
            encoder_padding_mask=encoder_padding_mask,
            decoder_token_ids=last,
            self_attention_cache=self_cache,
            self_attention_cache_update_index=index - 1,
            cross_attention_cache=cross_cache,
            cross_attention_cache_update_index=None,
        )
        return logits[:, 0], self_cache

    prompt_lengths = ops.full((batch,), len(start), dtype="int32")
    return beam_search(next_logits, self_cache, buffer, prompt_lengths, num_beams=num_beams,
                       max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
                       length_penalty=length_penalty, end_token_id=end_token_id,
                       banned_token_ids=banned_token_ids, pad_token_id=pad_token_id,
                       early_stopping=early_stopping, length_normalization=length_normalization,
                       no_repeat_ngram_size=no_repeat_ngram_size,
                       force_end_at_max_length=force_end_at_max_length,
                       state_growth=(3, cache_chunk, 0) if cache_chunk else None)


def _cache_chunk(cache_chunk):
    """`cache_chunk`, or for `None` 16, and 0 where XLA compiles (shapes must be static)."""
    if cache_chunk is not None:
        if not isinstance(cache_chunk, int) or cache_chunk < 0:
            raise ValueError(f"cache_chunk must be an int >= 0, got {cache_chunk!r}.")
        return cache_chunk
    graph = tf.compat.v1.get_default_graph()
    return 0 if control_flow_util.GraphOrParentsInXlaContext(graph) else 16


def _grow(cache, needed, axis, chunk):
    """`cache` padded by `chunk` zero slots on `axis` if it holds fewer than `needed`."""
    padding = [[0, 0]] * len(cache.shape)
    padding[axis] = [0, chunk]
    return tf.cond(tf.shape(cache)[axis] < needed, lambda: tf.pad(cache, padding),
                   lambda: cache)


def _gather_beams(tokens, beam_ids):
    """`tokens[b, beam_ids[b, j]]` for `(B, beams, L)` tokens, `(B, n)` ids."""
    return ops.take_along_axis(tokens, beam_ids[:, :, None], axis=1)


def _column(tokens, index):
    """`tokens[:, :, index]` for a tensor `index`."""
    return ops.squeeze(ops.slice(tokens, [0, 0, index], [ops.shape(tokens)[0],
                                                          ops.shape(tokens)[1], 1]), axis=2)


def _repeated_ngram_mask(tokens, index, size, vocab):
    """`(rows, vocab)` true where a token at position `index` would repeat an n-gram.

    An n-gram counts when it lies wholly before `index`; the candidate repeats
    it when the `size - 1` tokens before `index` equal its first `size - 1`.
    """
    rows, length = ops.shape(tokens)[0], tokens.shape[1]
    starts = length - size + 1
    if starts < 1:
        return ops.zeros((rows, vocab), "bool")
    context = ops.slice(tokens, [0, ops.maximum(index - size + 1, 0)], [rows, size - 1])
    match = ops.ones((rows, starts), "bool")
    for k in range(size - 1):
        window = ops.slice(tokens, [0, k], [rows, starts])
        match = match & (window == context[:, k:k + 1])
    start_ids = ops.arange(starts, dtype="int32")
    match = match & (start_ids[None] + size - 1 < index) & (index + 1 >= size)
    follower = ops.slice(tokens, [0, size - 1], [rows, starts])
    row_ids = ops.broadcast_to(ops.arange(rows, dtype="int32")[:, None], (rows, starts))
    indices = ops.stack([ops.reshape(row_ids, (-1,)), ops.reshape(follower, (-1,))], axis=1)
    counts = ops.scatter(indices, ops.reshape(ops.cast(match, "int32"), (-1,)), (rows, vocab))
    return counts > 0


def _keep_best(pool_scores, pool_tokens, new_scores, new_tokens, size):
    """The `size` best of a pool and new hypotheses (earlier entries win ties)."""
    scores = ops.concatenate([pool_scores, new_scores], axis=1)
    tokens = ops.concatenate([pool_tokens, new_tokens], axis=1)
    best_scores, best = ops.top_k(scores, size)
    return best_scores, _gather_beams(tokens, ops.cast(best, "int32"))


def _check_settings(num_beams, max_new_tokens, min_new_tokens, length_penalty, end_token_id,
                    banned_token_ids, pad_token_id, early_stopping,
                    length_normalization="generated", no_repeat_ngram_size=0):
    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    if not is_int(num_beams) or num_beams < 1:
        raise ValueError(f"num_beams must be an int >= 1, got {num_beams!r}.")
    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}.")
    if not is_int(min_new_tokens) or not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens must be an int in [0, max_new_tokens={max_new_tokens}], "
                         f"got {min_new_tokens!r}.")
    if not isinstance(length_penalty, (int, float, np.floating)) or not np.isfinite(
            length_penalty):
        raise ValueError(f"length_penalty must be a finite number, got {length_penalty!r}.")
    if not is_int(end_token_id) or end_token_id < 0:
        raise ValueError(f"end_token_id must be a token id (int >= 0), got {end_token_id!r}.")
    if not is_int(pad_token_id) or pad_token_id < 0:
        raise ValueError(f"pad_token_id must be a token id (int >= 0), got {pad_token_id!r}.")
    banned = list(banned_token_ids)
    if not all(is_int(t) and t >= 0 for t in banned):
        raise ValueError(f"banned_token_ids must be token ids, got {banned_token_ids!r}.")
    if end_token_id in banned:
        raise ValueError(f"end_token_id {end_token_id} is also banned; no hypothesis could end.")
    if early_stopping not in EARLY_STOPPING:
        raise ValueError(f"early_stopping must be one of {EARLY_STOPPING}, got {early_stopping!r}.")
    if length_normalization not in LENGTH_NORMALIZATION:
        raise ValueError(f"length_normalization must be one of {LENGTH_NORMALIZATION}, "
                         f"got {length_normalization!r}.")
    if not is_int(no_repeat_ngram_size) or no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be an int >= 0, got {no_repeat_ngram_size!r}.")


def _concrete(x):
    """`x` as a numpy array when its value is known here, else `None`."""
    try:
        return ops.convert_to_numpy(x)
    except Exception:  # a symbolic tensor inside a traced function
        return None


def _check_lengths(prompt_lengths, length, max_new_tokens):
    lengths = _concrete(prompt_lengths)
    if lengths is None:
        return
    if lengths.size and lengths.min() < 1:
        raise ValueError("Every prompt needs at least one token (GPT-2: e.g. a start token).")
    if lengths.size and lengths.max() + max_new_tokens > length:
        raise ValueError(f"The buffer length {length} is shorter than the longest prompt "
                         f"({lengths.max()}) plus max_new_tokens ({max_new_tokens}).")


def _check_left_aligned(padding_mask):
    mask = _concrete(padding_mask)
    if mask is None:
        return
    mask = mask.astype(bool)
    if mask.ndim != 2 or (mask[:, 1:] & ~mask[:, :-1]).any():
        raise ValueError("padding_mask must be (batch, length) with each prompt left-aligned "
                         "(true then false): pad prompts on the right.")
