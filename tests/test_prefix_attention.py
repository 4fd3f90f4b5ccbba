"""Prefix attention equals a NumPy reference for every attention kind."""

import numpy as np
import pytest

from kprefix.backbones import attention_sites, build_backbone
from kprefix.prefix.attention import concat_prefix, install_prefix, uninstall_prefix
from numpy_attention import attention_with_prefix

RNG = np.random.default_rng(0)


def _prefix(site, length=3):
    shape = (length, site.attention.num_heads, site.attention.key_dim)
    return (RNG.normal(size=shape).astype("float32"), RNG.normal(size=shape).astype("float32"))


def _padding_mask(batch, query_len, key_len, valid):
    mask = np.zeros((batch, query_len, key_len), "int32")
    for b, n in enumerate(valid):
        mask[b, :, :n] = 1
    return mask


CASES = {
    # (backbone, site kind, query length, key length, mask kind)
    "vit_encoder_self": ("vit_tiny", "encoder", 5, 5, None),
    "gpt2_causal_self": ("gpt2_tiny", "decoder", 6, 6, "causal"),
    "bart_encoder_self": ("bart_tiny", "encoder", 6, 6, "padding"),
    "bart_decoder_self": ("bart_tiny", "decoder", 4, 4, "causal"),
    "bart_cross": ("bart_tiny", "cross", 4, 7, "padding"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_prefix_attention_matches_numpy(case):
    backbone_name, kind, query_len, key_len, mask_kind = CASES[case]
    site = next(s for s in attention_sites(build_backbone(backbone_name)) if s.kind == kind)
    width = site.hidden_dim
    query = RNG.normal(size=(2, query_len, width)).astype("float32")
    value = query if query_len == key_len else RNG.normal(size=(2, key_len, width)).astype("float32")
    if mask_kind == "causal":
        mask = np.broadcast_to(np.tril(np.ones((query_len, key_len), "int32")), (2, query_len, key_len))
    elif mask_kind == "padding":
        mask = _padding_mask(2, query_len, key_len, valid=(key_len, key_len - 2))
    else:
        mask = None
    prefix = _prefix(site)
    install_prefix(site.attention, lambda training: prefix)
    try:
        got = site.attention(query, value, attention_mask=mask)
    finally:
        uninstall_prefix(site.attention)
    want = attention_with_prefix(site.attention, query, value, mask, *prefix)
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-4)


def test_concat_prefix_shapes_and_mask():
    key = np.zeros((2, 4, 3, 5), "float32")
    mask = np.zeros((2, 1, 4), "int32")
    prefix = np.ones((6, 3, 5), "float32")
    k, v, m = concat_prefix(key, key, mask, prefix, prefix)
    assert tuple(k.shape) == (2, 10, 3, 5) and tuple(v.shape) == (2, 10, 3, 5)
    np.testing.assert_array_equal(np.asarray(m)[:, :, :6], 1)
    np.testing.assert_array_equal(np.asarray(m)[:, :, 6:], 0)
    assert concat_prefix(key, key, None, prefix, prefix)[2] is None


def test_prefix_on_unbuilt_layer_is_rejected():
    import keras

    with pytest.raises(ValueError, match="not built"):
        install_prefix(keras.layers.MultiHeadAttention(2, 4), lambda training: None)


def test_uninstall_restores_class():
    site = attention_sites(build_backbone("gpt2_tiny"))[0]
    original = type(site.attention)
    install_prefix(site.attention, lambda training: _prefix(site))
    assert type(site.attention) is not original
    uninstall_prefix(site.attention)
    assert type(site.attention) is original
