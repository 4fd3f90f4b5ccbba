"""A plain NumPy multi-head attention with prefixes, for reference."""

import numpy as np


def _np(x):
    return np.asarray(x, dtype="float64")


def attention_with_prefix(layer, query, value, mask, prefix_key, prefix_value):
    """softmax([Q K^T, Q P_k^T] / sqrt(d)) [V; P_v], then the output projection.

    `layer` is a Keras MultiHeadAttention whose weights are read; `mask` is
    `None` or `(B, T, S)` with 1 = visible.
    """
    qk, qb = _np(layer.query_dense.kernel), _np(layer.query_dense.bias)
    kk, kb = _np(layer.key_dense.kernel), _np(layer.key_dense.bias)
    vk, vb = _np(layer.value_dense.kernel), _np(layer.value_dense.bias)
    ok, ob = _np(layer.output_dense.kernel), _np(layer.output_dense.bias)
    q = np.einsum("btd,dhk->bthk", _np(query), qk) + qb
    k = np.einsum("bsd,dhk->bshk", _np(value), kk) + kb
    v = np.einsum("bsd,dhk->bshk", _np(value), vk) + vb
    batch = q.shape[0]
    pk = np.broadcast_to(_np(prefix_key), (batch,) + prefix_key.shape)
    pv = np.broadcast_to(_np(prefix_value), (batch,) + prefix_value.shape)
    k = np.concatenate([pk, k], axis=1)
    v = np.concatenate([pv, v], axis=1)
    scores = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    if mask is not None:
        full = np.concatenate(
            [np.ones(mask.shape[:2] + (prefix_key.shape[0],)), _np(mask)], axis=-1
        )
        scores = np.where(full[:, None] > 0, scores, -1e9)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshk->bthk", weights, v)
    return np.einsum("bthk,hkd->btd", out, ok) + ob
