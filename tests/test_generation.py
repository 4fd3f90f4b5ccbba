"""Cached decoding with prefixes equals the uncached forward pass."""

import numpy as np
import pytest

from helpers import VARIANTS, bart_inputs, bart_lm, gpt2_inputs, gpt2_lm


@pytest.mark.parametrize("variant", ["deep_share", "simple_share"])
def test_gpt2_cached_logits_match_forward(variant):
    lm = gpt2_lm(variant, share_across_layers=True)
    inputs = gpt2_inputs()
    full = np.asarray(lm(inputs))
    token_ids = inputs["token_ids"]
    backbone = lm.backbone
    head_dim = backbone.hidden_dim // backbone.num_heads
    cache = np.zeros(token_ids.shape[:1] + (backbone.num_layers, 2, token_ids.shape[1],
                                             backbone.num_heads, head_dim), "float32")
    for index in range(token_ids.shape[1]):
        logits, _, cache = lm.call_with_cache(token_ids[:, index:index + 1], cache, index)
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, index], atol=1e-5)


def test_bart_cached_decoder_logits_match_forward():
    lm = bart_lm("deep_share")
    inputs = bart_inputs()
    full = np.asarray(lm(inputs))
    encoder_hidden = lm.call_encoder(inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
    decoder_ids = inputs["decoder_token_ids"]
    self_cache, cross_cache = lm._initialize_cache(inputs["encoder_token_ids"], decoder_ids)
    for index in range(decoder_ids.shape[1]):
        logits, _, self_cache, cross_cache = lm.call_decoder_with_cache(
            encoder_hidden_states=encoder_hidden,
            encoder_padding_mask=inputs["encoder_padding_mask"],
            decoder_token_ids=decoder_ids[:, index:index + 1],
            self_attention_cache=self_cache,
            self_attention_cache_update_index=index,
            cross_attention_cache=cross_cache,
            cross_attention_cache_update_index=0 if index == 0 else None,
        )
        np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, index], atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_generation_follows_the_prefixed_model(variant):
    lm = gpt2_lm(variant)
    lm.compile(sampler="greedy")
    prompt = {"token_ids": np.array([[3, 9, 4, 0, 0, 0, 0, 0]], "int32"),
              "padding_mask": np.array([[1, 1, 1, 0, 0, 0, 0, 0]], bool)}
    generated = lm.generate(prompt, stop_token_ids=None)["token_ids"]
    # Greedy: each new token is the argmax of the uncached model on its prefix.
    logits = np.asarray(lm({"token_ids": generated, "padding_mask": np.ones_like(generated)}))
    np.testing.assert_array_equal(generated[0, 3:], logits[0, 2:-1].argmax(-1))


def test_bart_generates_with_beams_and_prefixes():
    lm = bart_lm("deep_share")
    lm.compile(sampler="beam")
    inputs = bart_inputs(batch=2)
    out = lm.generate(
        {"encoder_token_ids": inputs["encoder_token_ids"],
         "encoder_padding_mask": inputs["encoder_padding_mask"],
         "decoder_token_ids": np.array([[2, 0, 0, 0, 0], [2, 0, 0, 0, 0]], "int32"),
         "decoder_padding_mask": np.array([[1, 0, 0, 0, 0]] * 2, bool)},
        stop_token_ids=None,
    )
    assert out["decoder_token_ids"].shape == (2, 5)
