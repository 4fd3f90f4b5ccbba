"""The text losses are the reference's normalisations, independent of padding
and of the number of replicas (NumPy references, tiny GPT-2 and BART)."""

from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import bart_lm, gpt2_lm, prefix_config
from kprefix.backbones import build_backbone
from kprefix.data.batching import pad_to_full_batch
from kprefix.tasks import PrefixGPT2CausalLM
from kprefix.tasks.text_features import causal_lm_features
from kprefix.tasks.text_loss import SequenceSumCrossentropy, token_mean_weights
from kprefix.tasks.tokenizers import load_tokenizer

SOURCES = ["name[A] food[Thai]", "name[The Long Name Here] area[city centre]", "name[B]"]
TARGETS = ["A serves Thai food.", "The Long Name Here is in the city centre, near the river.",
           "B."]


def _numpy_token_losses(logits, labels):
    logits = logits.astype("float64")
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(
        -1, keepdims=True)) - logits.max(-1, keepdims=True)
    return -np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]


def _gpt2_batch(length):
    tokenizer = load_tokenizer("gpt2_tiny")
    features = tf.function(lambda s, t: causal_lm_features(tokenizer, s, t, length))  # as in tf.data
    return features(tf.constant(SOURCES), tf.constant(TARGETS))


def _loss_and_gradients(model, batch, loss_fn):
    x, labels, weights = batch
    with tf.GradientTape() as tape:
        loss = loss_fn(labels, model(x), sample_weight=weights)
    return float(loss), tape.gradient(loss, model.trainable_weights)


def test_sequence_sum_is_the_per_example_sum_averaged_over_examples():
    model = gpt2_lm("deep_share")
    x, labels, weights = _gpt2_batch(96)
    loss = float(SequenceSumCrossentropy()(labels, model(x), sample_weight=weights))
    token_losses = _numpy_token_losses(np.asarray(model(x)), np.asarray(labels))
    expected = (token_losses * np.asarray(weights)).sum(axis=1).mean()
    assert loss == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("text_loss", ["sequence_sum", "token_mean"])
def test_the_same_examples_padded_to_two_lengths_give_the_same_loss_and_gradients(text_loss):
    model = gpt2_lm("deep_share")
    short, long = _gpt2_batch(96), _gpt2_batch(120)
    assert int(tf.reduce_sum(short[2])) == int(tf.reduce_sum(long[2]))  # nothing truncated
    if text_loss == "token_mean":
        short, long = token_mean_weights(*short), token_mean_weights(*long)
    loss_short, grads_short = _loss_and_gradients(model, short, SequenceSumCrossentropy())
    loss_long, grads_long = _loss_and_gradients(model, long, SequenceSumCrossentropy())
    assert loss_short == pytest.approx(loss_long, rel=1e-6)
    for a, b in zip(grads_short, grads_long):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_token_mean_is_the_mean_over_the_batch_target_tokens():
    model = bart_lm("deep_share")
    rng = np.random.default_rng(0)
    x = {"encoder_token_ids": rng.integers(1, 64, (3, 8)).astype("int32"),
         "encoder_padding_mask": np.ones((3, 8), bool),
         "decoder_token_ids": rng.integers(1, 64, (3, 6)).astype("int32"),
         "decoder_padding_mask": np.ones((3, 6), bool)}
    labels = rng.integers(1, 64, (3, 6)).astype("int32")
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], "float32")
    _, _, weights = token_mean_weights(x, labels, tf.constant(mask))
    loss = float(SequenceSumCrossentropy()(labels, model(x), sample_weight=weights))
    token_losses = _numpy_token_losses(np.asarray(model(x)), labels)
    assert loss == pytest.approx((token_losses * mask).sum() / mask.sum(), rel=1e-5)


def test_a_padded_partial_batch_keeps_the_mean_over_its_real_examples():
    model = gpt2_lm("deep_share")
    x, labels, weights = _gpt2_batch(96)
    padded = pad_to_full_batch(5)(x, labels, weights)
    loss_fn = SequenceSumCrossentropy()
    real = float(loss_fn(labels, model(x), sample_weight=weights))
    assert float(loss_fn(padded[1], model(padded[0]), sample_weight=padded[2])) == pytest.approx(
        real, rel=1e-6)
    padded_mean = token_mean_weights(*padded)
    real_mean = token_mean_weights(x, labels, weights)
    assert float(loss_fn(padded_mean[1], model(padded_mean[0]),
                         sample_weight=padded_mean[2])) == pytest.approx(
        float(loss_fn(labels, model(x), sample_weight=real_mean[2])), rel=1e-6)


@pytest.mark.parametrize("text_loss", ["sequence_sum", "token_mean"])
def test_one_and_two_replicas_give_the_same_loss_and_update(text_loss):
    """Rows of unequal target lengths split over two replicas: the loss and the
    SGD step equal one replica's on the whole batch."""
    x, labels, weights = _gpt2_batch(96)
    x = {k: tf.concat([v, v[:1]], 0) for k, v in x.items()}  # 4 rows, 2 per replica
    labels, weights = tf.concat([labels, labels[:1]], 0), tf.concat([weights, weights[:1]], 0)
    if text_loss == "token_mean":
        x, labels, weights = token_mean_weights(x, labels, weights)
    data = tf.data.Dataset.from_tensors((x, labels, weights))
    mirrored = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    results = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():  # no dropout: both runs compute the same function
            model = PrefixGPT2CausalLM(build_backbone("gpt2_tiny", dropout=False),
                                       prefix_config=prefix_config("deep_share"), seed=0)
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=SequenceSumCrossentropy(),
                          sampler="greedy")
        loss = model.fit(data, verbose=0).history["loss"][0]  # computed before the update
        results.append((loss, [np.asarray(w) for w in model.trainable_weights]))
    (loss_one, weights_one), (loss_two, weights_two) = results
    assert loss_one == pytest.approx(loss_two, rel=1e-5)
    for a, b in zip(weights_one, weights_two):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_text_flags_pick_the_reference_normalisation_per_task():
    from kprefix.experiments.text_generation import _training_batches
    from kprefix.data.nlg_common import NLGExample

    examples = [NLGExample(source=s, targets=(t,)) for s, t in zip(SOURCES, TARGETS)]
    tokenizer = load_tokenizer("gpt2_tiny")
    totals = {}
    for text_loss in ("auto", "sequence_sum", "token_mean"):
        # No length buckets: they leave the weights as they are (tests/test_length_buckets.py),
        # and measuring the lengths would tokenize the examples once more per setting.
        settings = SimpleNamespace(
            task="table_to_text", dataset="e2e", e2e_source_format="raw",
            webnlg_source_format="raw", batch_size=3, source_length=48, target_length=48,
            seed=0, drop_remainder=True, max_steps_per_epoch=0, text_loss=text_loss,
            length_buckets="none")
        make_epoch, _ = _training_batches(settings, tokenizer, examples)
        _, _, weights = next(iter(make_epoch(tf.constant(0, tf.int64))))
        totals[text_loss] = float(tf.reduce_sum(weights))
    assert totals["auto"] == totals["sequence_sum"] > 3  # GPT-2's reference: sequence sums
    assert totals["token_mean"] == pytest.approx(3.0)  # weights sum to the row count
