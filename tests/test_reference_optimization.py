"""Optimizer, schedule, clipping and padded batches against the PyTorch rules
they transcribe (NumPy references written from the PyTorch documentation)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kprefix.runs import optimizers
from kprefix.data.batching import num_batches, pad_to_full_batch
from kprefix.data.image_tasks import load_image_task
from kprefix.runs.optimizers import ClippedSGD, CoupledSGD

W0 = np.array([[0.5, -1.0], [2.0, 0.25]], "float32")
GRADIENTS = [np.array([[0.1, 0.2], [-0.3, 0.4]], "float32") * (k + 1) for k in range(4)]
RATES = [0.5, 0.3, 0.2, 0.1]  # a changing rate, as under warm-up and cosine


def torch_sgd(w, gradients, rates, momentum, weight_decay):
    """torch.optim.SGD (dampening 0, no Nesterov): d = g + wd*w; buf = mu*buf + d; w -= lr*buf."""
    w, buf = w.astype("float64"), None
    for g, lr in zip(gradients, rates):
        d = g + weight_decay * w
        buf = d if buf is None else momentum * buf + d
        w = w - lr * buf
    return w


def keras_sgd(w, gradients, rates, momentum, weight_decay):
    """Keras SGD: w -= lr*wd*w (decoupled); m = mu*m - lr*g; w += m."""
    w, m = w.astype("float64"), np.zeros_like(w, "float64")
    for g, lr in zip(gradients, rates):
        w = w - lr * weight_decay * w
        m = momentum * m - lr * g
        w = w + m
    return w


class _Rates(keras.optimizers.schedules.LearningRateSchedule):
    def __call__(self, step):
        return tf.gather(tf.constant(RATES), tf.cast(step, tf.int32))


def _run(optimizer, jit):
    w = keras.Variable(W0)
    optimizer.build([w])

    def step(g):
        optimizer.apply([g], [w])

    step = tf.function(step, jit_compile=jit)
    for g in GRADIENTS:
        step(tf.constant(g))
    return np.asarray(w)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_coupled_sgd_is_torch_sgd(jit, weight_decay):
    optimizer = optimizers.make_optimizer("sgd", 1.0, weight_decay, 256, 4, 0,
                                     weight_decay_mode="coupled", schedule=_Rates())
    assert isinstance(optimizer, CoupledSGD)
    expected = torch_sgd(W0, GRADIENTS, RATES, 0.9, weight_decay)
    np.testing.assert_allclose(_run(optimizer, jit), expected, rtol=1e-6, atol=1e-6)
    if weight_decay:  # the two rules really differ here
        assert not np.allclose(expected, keras_sgd(W0, GRADIENTS, RATES, 0.9, weight_decay),
                               rtol=1e-3)


def test_decoupled_sgd_is_keras_sgd():
    optimizer = optimizers.make_optimizer("sgd", 1.0, 0.1, 256, 4, 0, schedule=_Rates())
    expected = keras_sgd(W0, GRADIENTS, RATES, 0.9, 0.1)
    np.testing.assert_allclose(_run(optimizer, jit=False), expected, rtol=1e-6, atol=1e-6)


def test_coupled_sgd_leaves_excluded_variables_undecayed():
    decayed, excluded = keras.Variable(W0), keras.Variable(W0[0])
    optimizer = CoupledSGD(0.5, momentum=0.9, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_list=[excluded])
    zero = np.zeros_like(W0)
    for _ in range(2):
        optimizer.apply([zero, zero[0]], [decayed, excluded])
    np.testing.assert_allclose(np.asarray(excluded), W0[0])
    np.testing.assert_allclose(np.asarray(decayed), torch_sgd(W0, [zero] * 2, [0.5] * 2, 0.9, 0.1),
                               rtol=1e-6)


def test_coupled_is_sgd_only():
    with pytest.raises(ValueError, match="decoupled"):
        optimizers.make_optimizer("adamw", 1e-3, 0.0, 8, 10, 0, weight_decay_mode="coupled")


def torch_clip(gradients, max_norm):
    """torch.nn.utils.clip_grad_norm_: one norm over all gradients."""
    total = math.sqrt(sum(float(np.sum(g.astype("float64") ** 2)) for g in gradients))
    coefficient = max_norm / (total + 1e-6)
    return [g * coefficient for g in gradients] if coefficient < 1 else gradients


@pytest.mark.parametrize("max_norm", [0.5, 100.0])
def test_clip_norm_is_global_over_variables(max_norm):
    gradients = [np.array([3.0, 0.0], "float32"), np.array([[0.0], [4.0]], "float32")]
    weights = [keras.Variable(np.zeros(2, "float32")), keras.Variable(np.zeros((2, 1), "float32"))]
    optimizer = optimizers.make_optimizer("sgd", 256.0, 0.0, 1, 1, 0, clip_norm=max_norm,
                                     schedule=1.0)
    assert isinstance(optimizer, ClippedSGD)
    optimizer.apply(gradients, weights)  # first SGD step: w = -lr * clipped gradient
    for w, g in zip(weights, torch_clip(gradients, max_norm)):
        np.testing.assert_allclose(np.asarray(w), -g, rtol=1e-6)


def test_clip_norm_applies_to_the_summed_gradient_under_mirrored(two_cpus):
    """Two replicas, each half the batch: clipping sees the global gradient."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 1)).astype("float32") * 10
    results = []
    # Reduction through one device: CPU collectives of a second MirroredStrategy
    # in the same test process can collide with an earlier test's.
    mirrored = tf.distribute.MirroredStrategy(
        two_cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(
                1, kernel_initializer="ones")])
            model.compile(optimizer=optimizers.make_optimizer(
                "sgd", 256.0, 0.0, 1, 1, 0, weight_decay_mode="coupled", clip_norm=0.1,
                schedule=1.0), loss="mse")
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), verbose=0)
        results.append([np.asarray(w) for w in model.weights])
    kernel, bias = results[0]
    step = np.concatenate([kernel.ravel() - 1.0, bias.ravel()])
    assert np.linalg.norm(step) == pytest.approx(0.1, rel=1e-4)  # the clipped norm
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def reference_lr(epoch, warmup, total, base):
    """The reference WarmupCosineSchedule.lr_lambda, stepped once per epoch."""
    if epoch < warmup:
        return base * epoch / max(1.0, warmup)
    progress = (epoch - warmup) / max(1, total - warmup)
    return base * max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def test_epoch_schedule_matches_the_reference_scheduler():
    steps_per_epoch = 8  # VTAB-1k: 1000 examples in batches of 128, the last one kept
    schedule = optimizers.make_schedule("sgd", 10.0, 128, steps_per_epoch, 100, 10, "epoch")
    base = 10.0 * 128 / 256
    for epoch in (0, 1, 5, 9, 10, 11, 55, 99):
        for step in (epoch * steps_per_epoch, epoch * steps_per_epoch + steps_per_epoch - 1):
            assert float(schedule(step)) == pytest.approx(reference_lr(epoch, 10, 100, base),
                                                          abs=1e-6)
    # Hand-computed: epoch 0 trains at 0, epoch 5 at half the rate, epoch 55 half-way down.
    assert [round(float(schedule(e * 8)), 4) for e in (0, 5, 10, 55)] == [0.0, 2.5, 5.0, 2.5]
    per_step = optimizers.make_schedule("sgd", 10.0, 128, steps_per_epoch, 100, 80, "step")
    assert float(per_step(4)) == pytest.approx(base * 4 / 80)
    with pytest.raises(ValueError, match="schedule_unit"):
        optimizers.make_schedule("sgd", 1.0, 8, 1, 1, 0, "batch")


def test_padded_last_batch_loss_and_gradient_are_the_mean_over_real_examples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4)).astype("float32")
    y = np.array([0, 2, 1, 2, 0], "int32")
    batch_size = 8
    padded_x, padded_y, weight = pad_to_full_batch(batch_size)(tf.constant(x), tf.constant(y))
    assert padded_x.shape == (8, 4)
    np.testing.assert_allclose(weight, [8 / 5] * 5 + [0.0] * 3, rtol=1e-6)

    dense = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(seed=0))
    dense.build((None, 4))
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        padded_loss = loss_fn(padded_y, dense(padded_x), sample_weight=weight)
    padded_grads = tape.gradient(padded_loss, dense.trainable_weights)
    with tf.GradientTape() as tape:
        real_loss = loss_fn(y, dense(x))  # the reference: mean over the 5 examples
    real_grads = tape.gradient(real_loss, dense.trainable_weights)

    logits = x @ np.asarray(dense.kernel) + np.asarray(dense.bias)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    numpy_mean = -log_probs[np.arange(5), y].mean()
    assert float(padded_loss) == pytest.approx(numpy_mean, rel=1e-5)
    assert float(real_loss) == pytest.approx(numpy_mean, rel=1e-5)
    for a, b in zip(padded_grads, real_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_padding_scales_existing_token_weights():
    tokens = tf.constant([[1.0, 1.0, 0.0]] * 3)
    x = {"ids": tf.ones((3, 3), tf.int32)}
    padded_x, padded_y, weight = pad_to_full_batch(4)(x, tf.ones((3, 3), tf.int32), tokens)
    assert padded_x["ids"].shape == (4, 3) and padded_y.shape == (4, 3)
    np.testing.assert_allclose(weight, [[4 / 3, 4 / 3, 0]] * 3 + [[0, 0, 0]], rtol=1e-6)


def test_keeping_the_remainder_counts_ceil_batches():
    assert num_batches(1000, 128, drop_remainder=False) == 8  # VTAB-1k, as the reference
    assert num_batches(1000, 128, drop_remainder=True) == 7
    data = load_image_task("digits", image_size=8, batch_size=64, seed=0,
                                drop_remainder=False)
    batches = list(data.make_epoch(tf.constant(0, tf.int64)))
    assert len(batches) == data.steps_per_epoch == math.ceil(1438 / 64)
    assert {tuple(b[0].shape) for b in batches} == {(64, 8, 8, 3)}  # one shape for XLA
    last_weights = batches[-1][2].numpy()
    real = 1438 - 22 * 64
    np.testing.assert_allclose(last_weights[:real], 64 / real)
    assert not last_weights[real:].any()
    assert all(np.all(b[2].numpy() == 1.0) for b in batches[:-1])


def test_nlg_flagfiles_set_the_reference_training_settings(monkeypatch):
    import os

    from kprefix.sweep import read_flag_args

    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("e2e", "webnlg", "xsum", "e2e_no_share", "xsum_simple_share"):
        values = read_flag_args([f"--flagfile=configs/nlg/{name}.cfg"])
        assert (values["clip_norm"], values["warmup_steps"]) == (1.0, 0), name
        assert values["prefix_mlp_init"] == "torch_linear", name
        # GPT-2 in eval mode (use_dropout=no); BART in train mode with its dropout.
        expected = name.startswith("xsum")
        assert values["backbone_dropout"] == expected, name
        # GPT-2: summed per sequence (objective_mode=1); BART: CrossEntropyLoss's token mean.
        assert values["text_loss"] == ("token_mean" if expected else "sequence_sum"), name
        assert values["adam_epsilon"] == 1e-8 and values["drop_remainder"] is False, name


def test_text_batches_keep_the_remainder_with_zero_weight_rows():
    from types import SimpleNamespace

    from kprefix.data.nlg_common import NLGExample
    from kprefix.experiments.text_generation import _training_batches
    from kprefix.tasks.tokenizers import load_tokenizer

    examples = [NLGExample(source=f"name[A{i}]", targets=(f"A{i} is here.",)) for i in range(5)]
    settings = SimpleNamespace(task="table_to_text", dataset="e2e", e2e_source_format="raw",
                               webnlg_source_format="raw",
                               batch_size=2, source_length=8, target_length=8, seed=0,
                               drop_remainder=False, max_steps_per_epoch=0, text_loss="auto",
                               length_buckets="none")
    make_epoch, steps = _training_batches(settings, load_tokenizer("gpt2_tiny"), examples)
    batches = list(make_epoch(tf.constant(0, tf.int64)))
    assert steps == len(batches) == 3
    (x, labels, weights), (_, _, full_weights) = batches[-1], batches[0]
    assert x["token_ids"].shape == labels.shape == weights.shape == (2, 16)
    real_row, padded_row = weights.numpy()
    np.testing.assert_allclose(real_row[real_row > 0], 2.0)  # target tokens of the one real row
    assert not padded_row.any() and not x["padding_mask"].numpy()[1].any()
    assert set(np.unique(full_weights.numpy())) <= {0.0, 1.0}
    settings.max_steps_per_epoch = 2  # an epoch cut short: the first batches of its order
    make_epoch, capped_steps = _training_batches(settings, load_tokenizer("gpt2_tiny"), examples)
    capped = list(make_epoch(tf.constant(0, tf.int64)))
    assert capped_steps == len(capped) == 2
    np.testing.assert_array_equal(capped[1][0]["token_ids"], batches[1][0]["token_ids"])
