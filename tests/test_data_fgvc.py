"""Tests of the FGVC pipelines on mocked TFDS data (offline)."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kprefix.data import fgvc
from kprefix.data import image_preprocessing as ip

IMAGE_SIZE = 16

# The paper's Table 4 (NABirds has 555 classes; the table's 55 is a typo).
TABLE_4 = {
    "fgvc/cub": (200, 5_394, 600, 5_794),
    "fgvc/nabirds": (555, 21_536, 2_393, 24_633),
    "fgvc/flowers": (102, 1_020, 1_020, 6_149),
    "fgvc/dogs": (120, 10_800, 1_200, 8_580),
    "fgvc/cars": (196, 7_329, 815, 8_041),
}

# Official TFDS split sizes and the feature naming each image file.
TFDS_DATASETS = {
    "caltech_birds2011": ({"train": 5_994, "test": 5_794}, "image/filename"),
    "nabirds": ({"train": 23_929, "test": 24_633}, "image/filename"),
    "oxford_flowers102": ({"train": 1_020, "validation": 1_020, "test": 6_149}, "file_name"),
    "stanford_dogs": ({"train": 12_000, "test": 8_580}, "image/filename"),
    "cars196": ({"train": 8_144, "test": 8_041}, "id"),
}
SPLIT_OFFSETS = {"train": 0, "validation": 1_000_000, "test": 2_000_000}


def fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **_):
    """A prepared-dataset stand-in: small PNGs, labels, file names; honours slicing."""
    del decoders, read_config, shuffle_files
    sizes, filename_feature = TFDS_DATASETS[self.name]
    num_classes = self.info.features["label"].num_classes or 555

    def example(index):
        seed = tf.stack([index, tf.constant(17, tf.int64)])
        shape = tf.random.stateless_uniform([2], seed, 6, 14, tf.int32)
        pixels = tf.random.stateless_uniform(tf.concat([shape, [3]], 0), seed, 0, 256, tf.int32)
        name = tf.strings.join(
            [
                "class_",
                tf.strings.as_string(index % 7),
                "/",
                tf.strings.as_string(index, width=7, fill="0"),
                ".jpg",
            ]
        )
        return {
            "image": tf.io.encode_png(tf.cast(pixels, tf.uint8)),
            "label": index % num_classes,
            filename_feature: name,
        }

    datasets = []
    for part in str(split).split("+"):
        name, start, stop = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", part).groups()
        start, stop = int(start or 0), int(stop or sizes[name])
        offset = SPLIT_OFFSETS[name]
        datasets.append(tf.data.Dataset.range(offset + start, offset + stop).map(example))
    ds = datasets[0]
    for more in datasets[1:]:
        ds = ds.concatenate(more)
    return ds


@pytest.fixture
def mocked_tfds():
    import kprefix.data.nabirds  # noqa: F401  (registers the builder)

    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=fake_as_dataset
    ):
        yield


def _labels(ds):
    return np.concatenate([labels.numpy() for _, labels in ds])


def test_protocol_sizes_and_classes_without_reading_data():
    assert set(fgvc.DATASETS) == set(TABLE_4)
    for name, (classes, train, val, test) in TABLE_4.items():
        assert fgvc.num_classes(name) == classes
        assert fgvc.num_examples(name, "train") == train
        assert fgvc.num_examples(name, "val") == val
        assert fgvc.num_examples(name, "trainval") == train + val
        assert fgvc.num_examples(name, "test") == test


def test_holdout_is_a_fixed_tenth_of_train():
    indices = fgvc.holdout_indices(5_994)
    assert len(indices) == 600 == len(set(indices.tolist()))
    assert indices.min() >= 0 and indices.max() < 5_994
    assert np.all(np.diff(indices) > 0)
    np.testing.assert_array_equal(indices, fgvc.holdout_indices(5_994))
    assert not np.array_equal(indices, fgvc.holdout_indices(5_994, seed=1))
    # Spread over the file order, not a block at either end.
    assert indices.min() < 100 and indices.max() > 5_894


@pytest.mark.parametrize("name", sorted(TABLE_4))
def test_pipeline_on_mock_data(name, mocked_tfds):
    classes, train, val, test = TABLE_4[name]
    val_ds = fgvc.load(name, "val", image_size=IMAGE_SIZE, batch_size=500, data_dir="unused")
    assert val_ds.element_spec[0].shape.as_list() == [None, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert val_ds.element_spec[0].dtype == tf.float32
    assert val_ds.element_spec[1].dtype == tf.int32
    val_labels = _labels(val_ds)
    assert len(val_labels) == val
    assert val_labels.min() >= 0 and val_labels.max() < classes

    train_ds = fgvc.load(
        name, "train", image_size=IMAGE_SIZE, batch_size=64, seed=3, shuffle_buffer_size=64
    )
    assert train_ds.element_spec[0].shape.as_list() == [64, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert int(train_ds.cardinality()) == train // 64
    images, labels = next(iter(train_ds))
    low = (0 - np.array(ip.IMAGENET_MEAN)) / ip.IMAGENET_STD
    high = (1 - np.array(ip.IMAGENET_MEAN)) / ip.IMAGENET_STD
    assert np.all(images.numpy() >= low - 1e-5) and np.all(images.numpy() <= high + 1e-5)
    assert labels.numpy().max() < classes

    test_ds = fgvc.load(name, "test", image_size=IMAGE_SIZE, batch_size=100)
    assert int(test_ds.cardinality()) == -(-test // 100)


def test_train_and_val_partition_the_official_train_split(mocked_tfds):
    def labels(split):
        return _labels(
            fgvc.load("fgvc/cub", split, image_size=8, batch_size=1000, training=False)
        )

    # The fake label of official train example i is i % 200, so label counts
    # add up only if train and val split the 5,994 examples exactly.
    val_labels, train_labels = labels("val"), labels("train")
    counts = np.bincount(train_labels, minlength=200) + np.bincount(val_labels, minlength=200)
    np.testing.assert_array_equal(counts, np.bincount(np.arange(5_994) % 200))
    np.testing.assert_array_equal(val_labels, fgvc.holdout_indices(5_994) % 200)


def test_split_file_with_file_names_and_with_indices(mocked_tfds, tmp_path):
    # Flowers draws train/val from train + validation (1,020 each).
    def fake_index(pool_index):
        return (
            pool_index if pool_index < 1_020 else SPLIT_OFFSETS["validation"] + pool_index - 1_020
        )

    chosen_train, chosen_val = [5, 17, 300, 1_500], [8, 1_019]
    names_file = tmp_path / "names.json"
    names_file.write_text(
        json.dumps(
            {
                # Folders and extensions may differ from the TFDS file names.
                "train": [f"jpg/{fake_index(i):07d}.jpg" for i in chosen_train],
                "val": {f"{fake_index(i):07d}.png": 0 for i in chosen_val},
            }
        )
    )
    indices_file = tmp_path / "indices.json"
    indices_file.write_text(json.dumps({"train": chosen_train, "val": chosen_val}))
    for split_file in (names_file, indices_file):
        kwargs = {"image_size": 8, "batch_size": 10, "training": False}
        kwargs["split_file"] = str(split_file)
        assert fgvc.num_examples("fgvc/flowers", "train", str(split_file)) == 4
        assert _labels(fgvc.load("fgvc/flowers", "train", **kwargs)).tolist() == [
            fake_index(i) % 102 for i in chosen_train
        ]
        assert _labels(fgvc.load("fgvc/flowers", "val", **kwargs)).tolist() == [
            fake_index(i) % 102 for i in chosen_val
        ]
        assert len(_labels(fgvc.load("fgvc/flowers", "trainval", **kwargs))) == 6


def test_vpt_split_folder_through_the_training_pipeline(mocked_tfds, tmp_path):
    """VPT's release: <dataset>/train.json, val.json, test.json, image path -> class."""
    chosen_train, chosen_val = [3, 40, 41, 5_000], [7, 900]
    folder = tmp_path / "CUB_200_2011"
    folder.mkdir()
    for split, chosen in (("train", chosen_train), ("val", chosen_val), ("test", [1])):
        (folder / f"{split}.json").write_text(json.dumps(
            {f"{i % 7:03d}.Some_Bird/{i:07d}.jpg": i % 200 + 1 for i in chosen}))
    assert fgvc.read_split_file(str(folder))["val"] == [f"{i % 7:03d}.Some_Bird/{i:07d}.jpg"
                                                        for i in chosen_val]
    from kprefix.data.image_tasks import load_image_task

    data = load_image_task("fgvc/cub", IMAGE_SIZE, batch_size=3, seed=0,
                                train_split="val", eval_split="train", split_file=str(folder),
                                drop_remainder=False)
    assert data.steps_per_epoch == 1  # 2 examples, kept and padded to 3
    (_, labels, weights), = list(data.make_epoch(tf.constant(0, tf.int64)))
    assert sorted(labels.numpy()[:2].tolist()) == sorted(i % 200 for i in chosen_val)
    np.testing.assert_allclose(weights, [1.5, 1.5, 0.0])
    assert sorted(_labels(data.eval_dataset).tolist()) == sorted(i % 200 for i in chosen_train)
    (folder / "val.json").unlink()
    with pytest.raises(ValueError, match="no val.json"):
        fgvc.read_split_file(str(folder))


def test_split_file_naming_unknown_examples_fails(mocked_tfds, tmp_path):
    split_file = tmp_path / "split.json"
    split_file.write_text(json.dumps({"train": ["no_such_image.jpg"], "val": [1]}))
    ds = fgvc.load(
        "fgvc/flowers",
        "train",
        image_size=8,
        batch_size=1,
        training=False,
        split_file=str(split_file),
    )
    with pytest.raises(tf.errors.FailedPreconditionError):
        _labels(ds)


def test_same_seed_same_augmented_batches(mocked_tfds):
    def first_batch(seed):
        ds = fgvc.load(
            "fgvc/flowers", "train", image_size=IMAGE_SIZE, batch_size=16, seed=seed
        )
        return [t.numpy() for t in next(iter(ds))]

    first, again, other = first_batch(5), first_batch(5), first_batch(6)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_augmentation_differs_between_epochs(mocked_tfds):
    ds = fgvc.load(
        "fgvc/flowers",
        "train",
        image_size=IMAGE_SIZE,
        batch_size=1020,
        seed=0,
        shuffle_buffer_size=1,  # Same order every epoch: only the augmentation varies.
    )
    first, second = [next(iter(ds))[0].numpy() for _ in range(2)]
    assert not np.array_equal(first, second)


def test_eval_transform_is_resize_then_centre_crop():
    image = tf.cast(tf.reshape(tf.range(30 * 40 * 3) % 256, [30, 40, 3]), tf.uint8)
    out = ip.fgvc_eval_transform(image, image_size=14, resize_size=16)
    resized = ip.resize_shorter_side(image, 16)
    assert resized.shape == (16, 21, 3)  # int(16 * 40 / 30) = 21
    expected = ip.normalize_imagenet(resized[1:15, 4:18])  # round(2/2), round(7/2) = 4
    np.testing.assert_allclose(out.numpy(), expected.numpy(), atol=1e-6)


def test_random_crop_and_flip_stay_inside_the_image():
    image = tf.reshape(tf.range(20 * 30, dtype=tf.float32), [20, 30, 1])
    seen_flips = set()
    for seed in range(20):
        crop = ip.random_crop_and_flip(image, 10, tf.constant([seed, 0])).numpy()[..., 0]
        rows = crop[:, 0] // 30
        row_start = int(crop.min() // 30)
        np.testing.assert_array_equal(rows, np.arange(row_start, row_start + 10))
        step = crop[0, 1] - crop[0, 0]
        assert abs(step) == 1
        seen_flips.add(step < 0)
    assert seen_flips == {True, False}


def test_missing_dataset_names_it_and_gives_the_command(tmp_path):
    with pytest.raises(ip.DatasetNotPreparedError) as error:
        fgvc.load("fgvc/dogs", "test", data_dir=str(tmp_path))
    message = str(error.value)
    assert "fgvc/dogs" in message
    assert f"tfds build stanford_dogs:0.2.0 --data_dir={tmp_path}" in message


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="Unknown FGVC dataset"):
        fgvc.lookup("fgvc/aircraft")
    with pytest.raises(ValueError, match="Unknown split"):
        fgvc.num_examples("fgvc/cub", "val200")


def test_vpt_splits_shipped_with_the_package_have_vpts_sizes():
    for name, (_, train, val, test) in TABLE_4.items():
        lists = fgvc.vpt_split(name)
        assert {split: len(ids) for split, ids in lists.items()} == {
            "train": train, "val": val, "test": test}
        assert all(len(set(ids)) == len(ids) for ids in lists.values())
        assert not set(lists["train"]) & set(lists["val"])
        assert not set(lists["test"]) & (set(lists["train"]) | set(lists["val"]))
        if fgvc.lookup(name).vpt_split_matches_tfds:
            for split, size in (("train", train), ("val", val), ("trainval", train + val)):
                assert fgvc.num_examples(name, split, fgvc.VPT_SPLIT) == size
    assert fgvc.vpt_split("fgvc/cub")["val"][:1] == ("Acadian_Flycatcher_0017_795598",)


def test_vpt_split_selects_tfds_examples_by_file_name():
    flowers = fgvc.lookup("fgvc/flowers")
    vpt = fgvc.vpt_split("fgvc/flowers")
    pool, selected = fgvc._select(flowers, "val", fgvc.VPT_SPLIT, fgvc.HOLDOUT_SEED)
    assert pool == "train+validation"

    def picked(stem):
        return bool(selected(0, {"file_name": tf.constant(f"{stem}.jpg")}))

    assert picked(vpt["val"][0]) and not picked(vpt["train"][0]) and not picked(vpt["test"][0])


def test_cars_vpt_split_is_refused_and_the_hold_out_stays_an_option():
    # VPT numbers Cars images in the combined car_ims archive; TFDS cars196 does not.
    with pytest.raises(ValueError, match="car_ims"):
        fgvc.num_examples("fgvc/cars", "val", fgvc.VPT_SPLIT)
    assert fgvc.num_examples("fgvc/cars", "val", fgvc.HOLDOUT_SPLIT) == 815
    assert fgvc.num_examples("fgvc/cub", "val", fgvc.HOLDOUT_SPLIT) == 600
