"""Length-bucketed text batches: the same rows as fixed padding with padding
cut, the same loss and gradients, few shapes, an exact resume."""

import concurrent.futures
import functools
import signal
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from helpers import bart_lm, gpt2_lm
from kprefix.data.length_buckets import bucket_ids, epoch_batches, parse_length_buckets
from kprefix.data.nlg_common import NLGExample
from kprefix.experiments.text_generation import _training_batches
from kprefix.tasks.text_loss import SequenceSumCrossentropy
from kprefix.tasks.tokenizers import load_tokenizer

WORDS = "the river food pub near city centre serves cheap Thai coffee shop family".split()


def _examples(count=23, seed=0):
    rng = np.random.default_rng(seed)
    return [NLGExample(source=" ".join(rng.choice(WORDS, rng.integers(1, 9))),
                       targets=(" ".join(rng.choice(WORDS, rng.integers(1, 12))) + ".",))
            for _ in range(count)]


def _settings(task, buckets, **overrides):
    values = dict(task=task, dataset="e2e" if task == "table_to_text" else "xsum",
                  e2e_source_format="raw", webnlg_source_format="raw", batch_size=4,
                  source_length=48, target_length=48, seed=3, drop_remainder=False,
                  max_steps_per_epoch=0, text_loss="auto", length_buckets=buckets)
    return SimpleNamespace(**{**values, **overrides})


@functools.lru_cache(maxsize=None)  # tokenizer graphs take seconds to trace
def _epoch(task, buckets, epoch=0, **overrides):
    backbone = "gpt2_tiny" if task == "table_to_text" else "bart_tiny"
    make_epoch, steps = _training_batches(_settings(task, buckets, **overrides),
                                          load_tokenizer(backbone), _examples(), log=lambda _: None)
    batches = list(make_epoch(tf.constant(epoch, tf.int64)))
    assert len(batches) == steps
    return batches


def _padded_back(batch, fixed):
    """A cropped batch padded again to the shapes of the fixed-padding batch `fixed`."""
    def pad(tensor, like):
        # `like`'s last column is padding: end/pad token ids, mask 0, weight 0.
        filler = tf.fill([tensor.shape[0], like.shape[1] - tensor.shape[1]], like[0, -1])
        return tf.concat([tensor, tf.cast(filler, tensor.dtype)], axis=1)
    x, labels, weights = batch
    fixed_x, fixed_labels, fixed_weights = fixed
    x = {name: pad(value, fixed_x[name]) for name, value in x.items()}
    return x, pad(labels, fixed_labels), pad(weights, fixed_weights)


def _rows(batches):
    """Every row of the batches as a hashable tuple of its arrays."""
    rows = []
    for x, labels, weights in batches:
        arrays = [np.asarray(x[name]) for name in sorted(x)] + [np.asarray(labels),
                                                                  np.asarray(weights)]
        rows += [tuple(a[i].tobytes() for a in arrays) for i in range(arrays[0].shape[0])]
    return sorted(rows)


@pytest.mark.parametrize("task", ["table_to_text", "summarization"])
def test_buckets_are_the_fixed_rows_with_only_padding_cut(task):
    # Whole batches only (a kept partial batch weights its rows by its size) and
    # per-row weights (token_mean's depend on the batch's other rows).
    settings = dict(drop_remainder=True, text_loss="sequence_sum")
    fixed = _epoch(task, "none", **settings)
    bucketed = _epoch(task, "auto", **settings)
    shapes = {tuple(b[1].shape) for b in bucketed}
    assert len(shapes) > 1, "the examples should fall into several buckets"
    # Padding back to the full length gives exactly the fixed-padding rows.
    assert _rows(_padded_back(b, fixed[0]) for b in bucketed) == _rows(fixed)


@pytest.mark.parametrize("task", ["table_to_text", "summarization"])
def test_bucketed_and_fixed_padding_give_the_same_loss_and_gradients(task):
    model = gpt2_lm() if task == "table_to_text" else bart_lm()
    loss_fn = SequenceSumCrossentropy()
    settings = dict(drop_remainder=True, text_loss="sequence_sum")
    bucketed = _epoch(task, "auto", **settings)
    template = _epoch(task, "none", **settings)[0]
    for batch in sorted(bucketed, key=lambda b: b[1].shape[1])[:2]:
        padded = _padded_back(batch, template)
        assert batch[1].shape[1] < padded[1].shape[1]
        results = []
        for x, labels, weights in (batch, padded):
            with tf.GradientTape() as tape:
                loss = loss_fn(labels, model(x), sample_weight=weights)
            results.append((float(loss), tape.gradient(loss, model.trainable_weights)))
        (short_loss, short_grads), (long_loss, long_grads) = results
        assert short_loss == pytest.approx(long_loss, rel=1e-6, abs=1e-6)
        for a, b in zip(short_grads, long_grads):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batch_shapes_are_at_most_the_buckets_over_epochs():
    make_epoch, _ = _training_batches(_settings("table_to_text", "48,72", drop_remainder=True),
                                      load_tokenizer("gpt2_tiny"), _examples(), log=lambda _: None)
    epochs = tf.data.Dataset.range(3).flat_map(make_epoch)  # as kprefix.runs.train streams them
    shapes = {tuple(x["token_ids"].shape) for x, _, _ in epochs}
    assert 1 < len(shapes) <= 3 and {rows for rows, _ in shapes} == {4}
    assert {length for _, length in shapes} <= {48, 72, 96}


def test_epoch_batches_cover_each_example_once_in_a_seeded_order():
    ids = bucket_ids([np.arange(50) % 17], [parse_length_buckets("4,8", None, 16)])

    def plan(seed, epoch):
        return [list(i) for i, _ in epoch_batches(ids, 6, seed, epoch, False).as_numpy_iterator()]

    first = plan(0, 0)
    assert sorted(np.concatenate(first).tolist()) == list(range(50))
    assert plan(0, 0) == first and plan(0, 1) != first and plan(1, 0) != first
    for indices, bucket in epoch_batches(ids, 6, 0, 0, False).as_numpy_iterator():
        assert bucket == ids[indices].max()
    assert len(plan(0, 0)) == 9 and len(plan(0, 0)[-1]) in (2, 6)


def test_bad_bucket_lengths_are_usage_errors():
    with pytest.raises(ValueError, match="length_buckets"):
        parse_length_buckets("16,x", [3], 64)
    with pytest.raises(ValueError, match="length_buckets"):
        parse_length_buckets("16,128", [3], 64)


@pytest.mark.large
def test_text_run_with_buckets_killed_and_restarted_is_bit_identical(tmp_path):
    from kprefix.data import nlg
    from kprefix.data.batching import num_batches
    from test_run_faults import DATA, final_state, kill_and_resume, launch
    if not (DATA / "webnlg2017").is_dir():
        pytest.skip(f"WebNLG files not found under {DATA}")
    # WebNLG pairs span 79-128 tiny-tokenizer tokens: all three buckets occur.
    flags = ["--task=table_to_text", "--backbone=gpt2_tiny", "--dataset=webnlg",
             f"--text_data_dir={DATA}", "--max_train_examples=5", "--batch_size=3",
             "--epochs=2", "--nodrop_remainder", "--length_buckets=96,112",
             "--optimizer=adamw", "--learning_rate=1e-3", "--prefix_length=3",
             "--source_length=96", "--target_length=32", "--num_beams=1",
             "--max_new_tokens=2", "--min_new_tokens=1", "--max_eval_examples=1",
             "--checkpoint_every_steps=1",
             "--noexport"]
    # The uninterrupted run goes on beside the killed one: its final step is
    # known beforehand (2 epochs of the 5 inputs' pairs, the last batch kept).
    pairs = list(nlg.training_pairs(nlg.load_task("webnlg", "train", DATA)[:5]))
    final_step = 2 * num_batches(len(pairs), 3, drop_remainder=False)
    step = int(np.random.default_rng().integers(1, final_step - 3))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        uninterrupted = pool.submit(launch, *flags, f"--workdir={tmp_path / 'straight'}")
        process, _, rerun = kill_and_resume(flags, str(tmp_path / "killed"), step)
        straight = uninterrupted.result()
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "Length buckets: 96, 112, 128 tokens." in straight.stdout
    expected, straight_step = final_state(str(tmp_path / "straight"))
    assert straight_step == final_step
    assert process.returncode == -signal.SIGKILL, f"run ended before the kill at step {step}"
    resumed, resumed_step = final_state(str(tmp_path / "killed"))
    assert resumed_step == final_step
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key], err_msg=f"{key} (kill {step})")
