"""Training updates only prefixes and head; XLA, mirrored and resume work."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import image_classifier
from kprefix.runs import optimizers, train
from kprefix.runs.checkpoints import CheckpointStore
from kprefix.data.image_tasks import load_image_task


def _compile(model, jit_compile=False, learning_rate=0.5):
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def _batch(seed=0, size=8):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(size, 16, 16, 3)).astype("float32"),
            rng.integers(0, 4, size=(size,)).astype("int32"))


def _snapshot(weights):
    return {w.path: np.array(w) for w in weights}


@pytest.mark.parametrize("variant", ["deep_share", "simple_share", "no_share"])
def test_train_step_changes_only_prefix_and_head(variant):
    model = _compile(image_classifier(variant))
    backbone_before = _snapshot(model.backbone.weights)
    trainable_before = _snapshot(model.trainable_weights)
    head = {w.path for w in model.head.weights}
    assert trainable_before and all(
        "prefix" in path or path in head for path in trainable_before
    )
    model.train_on_batch(*_batch())
    for path, value in _snapshot(model.backbone.weights).items():
        np.testing.assert_array_equal(value, backbone_before[path], err_msg=path)
    changed = [p for p, v in _snapshot(model.trainable_weights).items()
               if not np.array_equal(v, trainable_before[p])]
    assert any("prefix" in p for p in changed) and any(p in head for p in changed)


def test_xla_train_step_matches_eager():
    eager = _compile(image_classifier("deep_share"), jit_compile=False)
    xla = _compile(image_classifier("deep_share"), jit_compile=True)
    x, y = _batch()
    for _ in range(2):
        eager.train_on_batch(x, y)
        xla.train_on_batch(x, y)
    for a, b in zip(xla.trainable_weights, eager.trainable_weights):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_mirrored_matches_default_on_the_same_global_batch(two_cpus):
    x, y = _batch(size=8)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat(3).batch(8)
    results = []
    for strategy in (tf.distribute.get_strategy(),
                     tf.distribute.MirroredStrategy(two_cpus)):
        with strategy.scope():
            model = _compile(image_classifier("deep_share"), learning_rate=0.1)
        model.fit(dataset, epochs=1, verbose=0)
        results.append([np.asarray(w) for w in model.trainable_weights])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, atol=1e-5)


def _fit(workdir, epochs, every=0):
    data = load_image_task("digits", image_size=16, batch_size=128, seed=1)
    model = image_classifier("deep_share", seed=1, num_classes=10, dropout=0.1)
    model.compile(
        optimizer=optimizers.make_optimizer("sgd", 0.5, 1e-4, 128, data.steps_per_epoch * 2,
                                       data.steps_per_epoch),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    train.fit(model, data.make_epoch, data.steps_per_epoch, epochs, workdir,
              checkpoint_every_steps=every, verbose=0)
    return model


def test_first_fit_traces_the_step_once_and_reads_without_autotuning(tmp_path):
    """The launcher's compile builds the optimizer's slots up front: created
    inside the first traced step, they would make tf.function trace the step
    again. `fit` reads its stream with tf.data autotuning off (see
    `train.without_autotuning`)."""
    from kprefix.experiments.common import compile_for_training
    from kprefix.runs.config import RunConfig

    data = load_image_task("digits", image_size=16, batch_size=128, seed=1)
    model = image_classifier("deep_share", seed=1, num_classes=10)
    compile_for_training(model, RunConfig(optimizer="sgd", batch_size=128, epochs=1),
                         data.steps_per_epoch, warmup=0)
    traces, autotuned = [], []
    traced_step, keras_fit = model.train_step, model.fit

    def counting_step(batch):
        traces.append(1)
        return traced_step(batch)

    def spying_fit(dataset, **kwargs):
        autotuned.append(dataset.options().autotune.enabled)
        return keras_fit(dataset, **kwargs)

    model.train_step, model.fit = counting_step, spying_fit
    train.fit(model, data.make_epoch, data.steps_per_epoch, 1, str(tmp_path), verbose=0)
    assert len(traces) == 1
    assert autotuned == [False]


def test_resume_continues_exactly(tmp_path):
    """Stopping after an epoch and resuming gives the same bits, dropout included."""
    straight = _fit(str(tmp_path / "straight"), epochs=2)
    _fit(str(tmp_path / "stopped"), epochs=1)
    resumed = _fit(str(tmp_path / "stopped"), epochs=2)
    assert CheckpointStore(str(tmp_path / "stopped" / "checkpoints")).steps() == [11, 22]
    for a, b in zip(resumed.variables + resumed.optimizer.variables,
                    straight.variables + straight.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_mid_epoch_resume_continues_exactly(tmp_path):
    """A checkpoint mid-epoch resumes at the next batch of the same epoch."""
    straight = _fit(str(tmp_path / "straight"), epochs=2)
    _fit(str(tmp_path / "stopped"), epochs=2, every=4)
    store = CheckpointStore(str(tmp_path / "stopped" / "checkpoints"), keep=10)
    assert store.steps()[-3:] == [16, 20, 22]
    for step in (20, 22):  # leave step 16 as the newest: mid-epoch 2 (11 steps per epoch)
        for suffix in ("json", "npz"):
            (tmp_path / "stopped" / "checkpoints" / f"ckpt-{step}.{suffix}").unlink()
    resumed = _fit(str(tmp_path / "stopped"), epochs=2)
    for a, b in zip(resumed.variables + resumed.optimizer.variables,
                    straight.variables + straight.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)


def test_schedules():
    cosine = optimizers.WarmupCosine(1.0, warmup_steps=4, total_steps=12)
    linear = optimizers.WarmupLinear(1.0, warmup_steps=4, total_steps=12)
    assert [round(float(cosine(s)), 4) for s in (0, 2, 4, 8, 12)] == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert [round(float(linear(s)), 4) for s in (2, 4, 8, 12)] == [0.5, 1.0, 0.5, 0.0]
    sgd = optimizers.make_optimizer("sgd", 0.1, 0.0, 512, 10, 0)
    assert float(sgd.learning_rate) == pytest.approx(0.2)  # scaled by 512/256
    with pytest.raises(ValueError, match="--optimizer"):
        optimizers.make_optimizer("lamb", 0.1, 0.0, 8, 10, 1)


def test_mixed_precision_keeps_prefix_variables_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _compile(image_classifier("deep_share"))
        assert model.backbone.compute_dtype == "bfloat16"
        before = _snapshot(model.prefix.weights)
        model.train_on_batch(*_batch())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert {w.dtype for w in model.prefix.weights} == {"float32"}
    assert model(_batch()[0]).dtype == "float32"
    assert any(not np.array_equal(np.array(w), before[w.path]) for w in model.prefix.weights)
