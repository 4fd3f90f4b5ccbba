"""Checkpoints: exact round trip, checksums, fallback, never NaN, a full disk,
nothing unverified overwritten or pruned."""

import hashlib
import io
import json
import os
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import image_classifier
from kprefix.runs.checkpoints import CheckpointError, CheckpointStore, NonFiniteState


def _trained(seed=0, steps=1):
    model = image_classifier("deep_share", seed=seed, dropout=0.1)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        model.train_on_batch(rng.normal(size=(4, 16, 16, 3)).astype("float32"),
                             np.arange(4) % 4)
    return model


def _values(model):
    return [np.asarray(v).copy() for v in model.variables + model.optimizer.variables]


def test_round_trip_restores_weights_optimizer_and_dropout_state(tmp_path):
    source = _trained(steps=2)
    store = CheckpointStore(str(tmp_path))
    store.save(source, step=2)
    target = _trained(steps=0)  # same backbone, untrained prefixes, head and optimizer
    assert store.restore(target) == 2
    for a, b in zip(_values(source), _values(target)):
        np.testing.assert_array_equal(a, b)
    seed_states = [v for v in target.variables if "seed_generator_state" in v.path]
    assert seed_states, "dropout random state must be part of the checkpoint"


def test_frozen_backbone_is_not_stored(tmp_path):
    model = _trained()
    CheckpointStore(str(tmp_path)).save(model, step=1)
    with np.load(tmp_path / "ckpt-1.npz") as archive:
        stored = {key: archive[key].size for key in archive.files}
    assert not any("vit_encoder" in key and "seed_generator" not in key for key in stored)
    trainable = sum(np.asarray(w).size for w in model.trainable_weights)
    # trainable values, one momentum slot each, and a few scalars
    assert 2 * trainable <= sum(stored.values()) < 2 * trainable + 100


def _flip_one_bit(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_newest_is_named_and_the_previous_one_is_used(tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path))
    store.save(model, step=1)
    expected = _values(model)
    model.train_on_batch(np.ones((4, 16, 16, 3), "float32"), np.arange(4))
    store.save(model, step=2)
    _flip_one_bit(tmp_path / "ckpt-2.npz")
    messages = []
    assert store.restore(model, log=messages.append) == 1
    assert "ckpt-2.npz is damaged" in messages[0] and "SHA-256" in messages[0]
    for a, b in zip(expected, _values(model)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "ckpt-2.npz").exists()  # nothing is deleted


def _with_manifest(folder, step, payload):
    """Writes `payload` as checkpoint `step` with a manifest that vouches for it."""
    (folder / f"ckpt-{step}.npz").write_bytes(payload)
    (folder / f"ckpt-{step}.json").write_text(json.dumps({
        "step": step, "file": f"ckpt-{step}.npz", "bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest()}))


def _object_arrays():
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.array([{"a": 1}], dtype=object))
    return buffer.getvalue()


@pytest.mark.parametrize("kind, payload", [
    ("not a zip", b"PK this is no archive"),
    ("object arrays", _object_arrays()),
])
def test_unreadable_checkpoint_of_any_kind_is_damaged_and_the_previous_one_is_used(
        kind, payload, tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path))
    store.save(model, step=1)
    _with_manifest(tmp_path, 2, payload)
    messages = []
    assert CheckpointStore(str(tmp_path)).restore(model, log=messages.append) == 1, kind
    assert "ckpt-2.npz cannot be read" in messages[0] and "left in place" in messages[0]
    assert (tmp_path / "ckpt-2.npz").read_bytes() == payload


def test_pruning_counts_only_good_checkpoints_and_keeps_damaged_ones(tmp_path):
    model = _trained()
    for step in (1, 2, 3):
        CheckpointStore(str(tmp_path), keep=2).save(model, step)
    _flip_one_bit(tmp_path / "ckpt-2.npz")
    damaged = (tmp_path / "ckpt-2.npz").read_bytes()
    store = CheckpointStore(str(tmp_path), keep=2)  # a restarted run
    for step in (4, 5):
        store.save(model, step)
    assert store.steps() == [2, 4, 5]  # 3 was the oldest good one beyond two
    assert (tmp_path / "ckpt-2.npz").read_bytes() == damaged


def test_files_without_a_manifest_are_listed_and_never_overwritten(tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path), keep=1)
    store.save(model, step=1)
    (tmp_path / "ckpt-1.json").unlink()
    (tmp_path / "ckpt-2.npz").write_bytes(b"another run's file")
    (tmp_path / "ckpt-3.npz").write_bytes(b"a file whose manifest is damaged")
    (tmp_path / "ckpt-3.json").write_text("{not json")
    assert store.unverified() == ["ckpt-1.npz", "ckpt-2.npz", "ckpt-3.npz"]
    store.save(model, step=2)
    store.save(model, step=3)
    assert (tmp_path / "ckpt-2.npz.damaged").read_bytes() == b"another run's file"
    assert (tmp_path / "ckpt-3.npz.damaged").read_bytes() == b"a file whose manifest is damaged"
    assert (tmp_path / "ckpt-1.npz").exists()
    assert store.steps() == [3]


def test_unverified_files_are_adopted_only_when_they_load_into_the_model(tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path))
    store.save(model, step=4)
    expected = _values(model)
    (tmp_path / "ckpt-4.json").unlink()
    (tmp_path / "ckpt-6.npz").write_bytes(b"truncated")
    fresh = _trained(steps=0)
    messages = []
    assert store.adopt_unverified(fresh, log=messages.append) == [4]
    assert any("ckpt-6.npz: it cannot be verified" in m for m in messages), messages
    assert store.unverified() == ["ckpt-6.npz"]
    assert store.restore(fresh, log=messages.append) == 4
    for a, b in zip(expected, _values(fresh)):
        np.testing.assert_array_equal(a, b)


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path))
    store.save(model, step=3)
    (tmp_path / "ckpt-3.npz").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="no usable checkpoint.*ckpt-3.npz"):
        store.restore(model, log=lambda _: None)


def test_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    CheckpointStore(str(tmp_path)).save(_trained(), step=1)
    other = image_classifier("no_share")
    other.compile(optimizer="sgd", loss="mse")
    with pytest.raises(CheckpointError, match="different model"):
        CheckpointStore(str(tmp_path)).restore(other)


def test_half_written_checkpoint_without_manifest_is_ignored(tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path))
    store.save(model, step=1)
    (tmp_path / "ckpt-9.npz").write_bytes(b"cut short by a kill")
    assert store.steps() == [1]
    assert store.restore(model) == 1


def test_non_finite_state_is_never_written(tmp_path):
    model = _trained()
    model.trainable_weights[0].assign(np.full(model.trainable_weights[0].shape, np.nan))
    with pytest.raises(NonFiniteState, match="NaN or infinity"):
        CheckpointStore(str(tmp_path)).save(model, step=1)
    assert os.listdir(tmp_path) == []


def test_only_the_newest_are_kept(tmp_path):
    model = _trained()
    store = CheckpointStore(str(tmp_path), keep=2)
    for step in (1, 2, 3):
        store.save(model, step)
    assert store.steps() == [2, 3]


def test_other_workers_write_nothing(tmp_path):
    CheckpointStore(str(tmp_path), writer=False).save(_trained(), step=1)
    assert os.listdir(tmp_path) == []


def test_works_on_tf_in_memory_filesystem():
    model = _trained()
    store = CheckpointStore("ram://test_checkpoints/run")
    store.save(model, step=4)
    assert sorted(tf.io.gfile.listdir("ram://test_checkpoints/run")) == ["ckpt-4.json",
                                                                          "ckpt-4.npz"]
    assert store.restore(_trained(steps=0)) == 4


@pytest.fixture
def small_disk(tmp_path):
    """A 64 KiB tmpfs, so writes fail with ENOSPC as on a full disk."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()})")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=False)


def test_full_disk_is_a_clean_error_and_earlier_checkpoints_survive(small_disk):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    store = CheckpointStore(str(small_disk / "checkpoints"))
    store.save(model, step=1)
    before = sorted(os.listdir(small_disk / "checkpoints"))
    (small_disk / "filler").write_bytes(b"\0" * (64 * 1024 - 8192))
    big = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256)])
    big.compile(optimizer="sgd", loss="mse")
    with pytest.raises(CheckpointError, match=r"No space left.*steps 1\) are intact"):
        CheckpointStore(str(small_disk / "checkpoints")).save(big, step=2)
    assert sorted(os.listdir(small_disk / "checkpoints")) == before
    assert store.restore(model) == 1
