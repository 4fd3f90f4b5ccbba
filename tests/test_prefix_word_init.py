"""No-share GPT-2 prefixes started from the backbone's own keys and values (Li & Liang's init_shallow)."""

import numpy as np
import pytest

from kprefix.backbones import build_backbone
from kprefix.prefix import PrefixConfig
from kprefix.tasks import PrefixGPT2CausalLM
from kprefix.tasks.tokenizers import load_tokenizer


def layer_norm(x, layer):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return ((x - mean) / np.sqrt(variance + layer.epsilon) * np.asarray(layer.gamma)
            + np.asarray(layer.beta))


def projected(h, dense):
    """An EinsumDense (hidden -> heads x head_dim) with bias, in NumPy."""
    return np.einsum("th,hnd->tnd", h, np.asarray(dense.kernel)) + np.asarray(dense.bias)


def reference_key_values(backbone, ids):
    """Each block's keys/values for `ids` at positions 0.., from its LayerNorm and projections."""
    x = (np.asarray(backbone.token_embedding.embeddings)[ids]
         + np.asarray(backbone.position_embedding.position_embeddings)[:len(ids)])
    pairs = []
    for layer in backbone.transformer_layers:
        h = layer_norm(x, layer._self_attention_layer_norm)
        attention = layer._self_attention_layer
        pairs.append((projected(h, attention.key_dense), projected(h, attention.value_dense)))
        x = np.asarray(layer(x[None]))[0]
    return pairs


def test_word_initialised_prefix_equals_the_backbones_own_keys_and_values():
    tokenizer = load_tokenizer("gpt2_tiny")
    # Li & Liang tokenize the word with a leading space (add_prefix_space=True).
    ids = [int(i) for i in np.asarray(tokenizer(" summarize"))]
    backbone = build_backbone("gpt2_tiny")
    expected = reference_key_values(backbone, ids)
    config = PrefixConfig("no_share", length=len(ids), initializer="word", init_token_ids=ids)
    lm = PrefixGPT2CausalLM(backbone, prefix_config=config, seed=0)
    values = lm.prefix.prefix_values()
    assert len(values) == len(expected) == backbone.num_layers
    for (key, value), (want_key, want_value) in zip(values.values(), expected):
        assert key.shape == (len(ids), backbone.num_heads, backbone.hidden_dim // backbone.num_heads)
        np.testing.assert_allclose(key, want_key, atol=1e-5)
        np.testing.assert_allclose(value, want_value, atol=1e-5)
    # Causal attention: a text's first tokens get the same keys/values as that
    # text's prefix alone, while another text starts elsewhere.
    shorter = PrefixGPT2CausalLM(build_backbone("gpt2_tiny"), seed=0, prefix_config=PrefixConfig(
        "no_share", length=2, initializer="word", init_token_ids=ids[:2]))
    np.testing.assert_allclose(shorter.prefix.prefix_values()["decoder_1"][0],
                               values["decoder_1"][0][:2], atol=1e-5)
    other = PrefixGPT2CausalLM(build_backbone("gpt2_tiny"), seed=0, prefix_config=PrefixConfig(
        "no_share", length=len(ids), initializer="word", init_token_ids=ids[::-1]))
    assert np.abs(other.prefix.prefix_values()["decoder_1"][0] - values["decoder_1"][0]
                  ).max() > 1e-3


@pytest.mark.parametrize("overrides, message", [
    (dict(variant="deep_share"), "no_share variant only"),
    (dict(init_token_ids=()), "needs init_token_ids"),
    (dict(length=4), "number of init tokens"),
])
def test_word_initializer_misuse_gets_clear_errors(overrides, message):
    settings = dict(variant="no_share", length=3, initializer="word", init_token_ids=(5, 6, 7))
    with pytest.raises(ValueError, match=message):
        PrefixConfig(**{**settings, **overrides})
