"""Logits only at target positions: the full logits' loss, gradients and step."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import gpt2_lm
from kprefix.tasks.target_logits import target_batch
from kprefix.tasks.text_loss import SequenceSumCrossentropy


def _batch(batch=3, length=9, seed=0):
    rng = np.random.default_rng(seed)
    lengths = np.array([9, 6, 4])[:batch]
    sources = np.array([3, 2, 1])[:batch]
    positions = np.arange(length)[None]
    x = {"token_ids": rng.integers(1, 64, (batch, length)).astype("int32"),
         "padding_mask": (positions < lengths[:, None]).astype("int32")}
    weights = ((positions >= sources[:, None]) & (positions < lengths[:, None]))
    return x, rng.integers(1, 64, (batch, length)).astype("int32"), weights.astype("float32")


def test_target_logits_give_the_full_logits_loss_and_gradients():
    model = gpt2_lm()
    x, labels, weights = _batch()
    loss_fn = SequenceSumCrossentropy()
    with tf.GradientTape() as tape:
        full = loss_fn(labels, model(x), sample_weight=weights)
    full_gradients = tape.gradient(full, model.trainable_weights)
    positions, target_labels, target_weights = target_batch(labels, weights)
    model._target_positions = positions
    with tf.GradientTape() as tape:
        logits = model(x)
        part = loss_fn(target_labels, logits, sample_weight=target_weights)
    model._target_positions = None
    assert tuple(logits.shape[:2]) == (1, int(weights.sum()) + 1)  # and one of weight 0
    np.testing.assert_allclose(float(part), float(full), rtol=1e-5)
    for a, b in zip(tape.gradient(part, model.trainable_weights), full_gradients):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("padding_only", [False, True])
def test_a_training_step_matches_the_full_logits_step(padding_only):
    results = []
    for gathers in (True, False):
        model = gpt2_lm()
        model.gathers_target_logits = gathers
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=SequenceSumCrossentropy(),
                      weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()],
                      jit_compile=False)
        x, labels, weights = _batch()
        if padding_only:  # no target token: loss 0, accuracy 0, not NaN
            weights = np.zeros_like(weights)
        logs = model.train_on_batch(x, labels, sample_weight=weights, return_dict=True)
        results.append((logs, [np.asarray(w) for w in model.trainable_weights]))
    (gathered_logs, gathered_weights), (full_logs, full_weights) = results
    assert gathered_logs.keys() == full_logs.keys()
    for key in full_logs:
        np.testing.assert_allclose(gathered_logs[key], full_logs[key], rtol=1e-5, err_msg=key)
    for a, b in zip(gathered_weights, full_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
