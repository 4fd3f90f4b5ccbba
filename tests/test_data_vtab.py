"""Tests of the VTAB-1k pipelines on mocked TFDS data (offline)."""

import re
import zlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kprefix.data import image_preprocessing as ip
from kprefix.data import vtab

IMAGE_SIZE = 16

# The paper's Table 4: classes and test sizes; 800/200 for train/val.
TABLE_4 = {
    "vtab/cifar100": (100, 10_000),
    "vtab/caltech101": (102, 6_084),
    "vtab/dtd": (47, 1_880),
    "vtab/oxford_flowers102": (102, 6_149),
    "vtab/oxford_iiit_pet": (37, 3_669),
    "vtab/svhn": (10, 26_032),
    "vtab/sun397": (397, 21_750),
    "vtab/patch_camelyon": (2, 32_768),
    "vtab/eurosat": (10, 5_400),
    "vtab/resisc45": (45, 6_300),
    "vtab/diabetic_retinopathy": (5, 42_670),
    "vtab/clevr_count": (8, 15_000),
    "vtab/clevr_distance": (6, 15_000),
    "vtab/dmlab": (6, 22_735),
    "vtab/kitti_distance": (4, 711),
    "vtab/dsprites_location": (16, 73_728),
    "vtab/dsprites_orientation": (16, 73_728),
    "vtab/smallnorb_azimuth": (18, 12_150),
    "vtab/smallnorb_elevation": (9, 12_150),
}

# Official TFDS split sizes (the TFDS catalog), which the mocked datasets have.
TFDS_SPLIT_SIZES = {
    "cifar100": {"train": 50_000, "test": 10_000},
    "caltech101": {"train": 3_060, "test": 6_084},
    "dtd": {"train": 1_880, "validation": 1_880, "test": 1_880},
    "oxford_flowers102": {"train": 1_020, "validation": 1_020, "test": 6_149},
    "oxford_iiit_pet": {"train": 3_680, "test": 3_669},
    "svhn_cropped": {"train": 73_257, "test": 26_032},
    "sun397": {"train": 76_128, "validation": 10_875, "test": 21_750},
    "patch_camelyon": {"train": 262_144, "validation": 32_768, "test": 32_768},
    "eurosat": {"train": 27_000},
    "resisc45": {"train": 31_500},
    "diabetic_retinopathy_detection": {"train": 35_126, "validation": 10_906, "test": 42_670},
    "clevr": {"train": 70_000, "validation": 15_000, "test": 15_000},
    "dmlab": {"train": 65_550, "validation": 22_628, "test": 22_735},
    "kitti": {"train": 6_347, "validation": 423, "test": 711},
    "dsprites": {"train": 737_280},
    "smallnorb": {"train": 24_300, "test": 24_300},
}

# Value ranges that make the mocked annotations look like the real ones.
FAKE_DATA_OPTIONS = {
    "clevr": {"sequence_length": (3, 10), "float_range": (6.5, 12.0)},
    "kitti": {"sequence_length": (0, 6), "float_range": (0.0, 40.0)},
    "dsprites": {"pixel_max": 1},
}


def _salt(*parts):
    return zlib.crc32("/".join(map(str, parts)).encode()) % (2**31)


def _parse_split(split, sizes):
    """'train[:800]+train[45000:45200]' -> [('train', 0, 800), ...]."""
    slices = []
    for part in str(split).split("+"):
        match = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", part)
        name, start, stop = match.groups()
        total = sizes[name]
        start = int(start) if start else 0
        stop = int(stop) if stop else total
        assert 0 <= start < stop <= total, (part, total)
        slices.append((name, start, stop))
    return slices


def _fake_value(feature, index, path, options, length=None):
    """A deterministic fake value of `feature` for example `index`, built in-graph."""
    seed = tf.stack([index, tf.constant(_salt(*path), tf.int64)])
    if isinstance(feature, tfds.features.FeaturesDict):
        return {
            key: _fake_value(sub, index, path + (key,), options, length)
            for key, sub in feature.items()
        }
    if isinstance(feature, tfds.features.Sequence):
        low, high = options.get("sequence_length", (1, 5))
        count = tf.random.stateless_uniform([], seed, low, high + 1, tf.int32)
        return _fake_value(feature.feature, index, path + ("*",), options, count)
    if isinstance(feature, tfds.features.Image):
        height, width, channels = feature.shape
        size = tf.random.stateless_uniform([2], seed, 8, 40, tf.int32)
        shape = tf.stack(
            [
                size[0] if height is None else min(height, 40),
                size[1] if width is None else min(width, 40),
                channels,
            ]
        )
        pixels = tf.random.stateless_uniform(
            shape, seed, 0, options.get("pixel_max", 255) + 1, tf.int32
        )
        # The pipeline reads images undecoded, as stored by TFDS.
        return tf.io.encode_png(tf.cast(pixels, tf.uint8))
    leading = [] if length is None else [length]
    if isinstance(feature, tfds.features.ClassLabel):
        return tf.random.stateless_uniform(leading, seed, 0, feature.num_classes, tf.int64)
    if isinstance(feature, tfds.features.Text):
        return tf.strings.format("example_{}.png", index)
    low, high = options.get("float_range", (0.0, 1.0))
    shape = leading + list(feature.shape)
    return tf.cast(tf.random.stateless_uniform(shape, seed, low, high), feature.dtype)


def fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **_):
    """Stands in for a prepared TFDS dataset: honours split slicing, in-graph."""
    del read_config, shuffle_files
    features = self.info.features
    if isinstance(decoders, tfds.decode.PartialDecoding):
        features = decoders.extract_features(features)
    options = FAKE_DATA_OPTIONS.get(self.name, {})
    datasets = []
    for name, start, stop in _parse_split(split, TFDS_SPLIT_SIZES[self.name]):
        offset = _salt(self.name, name) * 1_000_000
        datasets.append(
            tf.data.Dataset.range(offset + start, offset + stop).map(
                lambda i: _fake_value(features, i, (), options)
            )
        )
    ds = datasets[0]
    for more in datasets[1:]:
        ds = ds.concatenate(more)
    return ds


@pytest.fixture
def mocked_tfds():
    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=fake_as_dataset
    ):
        yield


def test_all_19_tasks_with_table_4_classes_and_split_sizes():
    assert set(vtab.TASKS) == set(TABLE_4)
    groups = [task.group for task in vtab.TASKS.values()]
    assert (groups.count("natural"), groups.count("specialized"), groups.count("structured")) == (
        7,
        4,
        8,
    )
    for name, (classes, test_size) in TABLE_4.items():
        assert vtab.num_classes(name) == classes, name
        assert vtab.num_examples(name, "train800") == 800, name
        assert vtab.num_examples(name, "val200") == 200, name
        assert vtab.num_examples(name, "train800val200") == 1000, name
        assert vtab.num_examples(name, "test") == test_size, name


def test_val200_is_taken_where_vtab_takes_it():
    assert vtab.TASKS["vtab/cifar100"].tfds_split("val200") == "train[45000:45200]"
    assert vtab.TASKS["vtab/cifar100"].tfds_split("train800val200") == (
        "train[:800]+train[45000:45200]"
    )
    for official_validation in (
        "dtd",
        "oxford_flowers102",
        "dmlab",
        "kitti_distance",
        "diabetic_retinopathy",
        "sun397",
        "patch_camelyon",
    ):
        assert vtab.TASKS[f"vtab/{official_validation}"].tfds_split("val200") == (
            "validation[:200]"
        )
    assert vtab.TASKS["vtab/oxford_iiit_pet"].tfds_split("val200") == "train[2944:3144]"
    assert vtab.TASKS["vtab/clevr_count"].tfds_split("test") == "validation"
    assert vtab.TASKS["vtab/smallnorb_azimuth"].tfds_split("val200") == "test[:200]"
    assert vtab.TASKS["vtab/eurosat"].tfds_split("test") == "train[21600:27000]"
    assert vtab.TASKS["vtab/dsprites_location"].tfds_split("val200") == "train[589824:590024]"


@pytest.mark.parametrize("task", sorted(TABLE_4))
def test_pipeline_on_mock_data(task, mocked_tfds):
    classes, test_size = TABLE_4[task]
    ds = vtab.load(
        task, "train800val200", image_size=IMAGE_SIZE, batch_size=250, seed=0, data_dir="unused"
    )
    assert ds.element_spec[0].shape.as_list() == [250, IMAGE_SIZE, IMAGE_SIZE, 3]
    assert ds.element_spec[0].dtype == tf.float32
    assert ds.element_spec[1].dtype == tf.int32
    images, labels = [], []
    for image_batch, label_batch in ds:
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    assert len(labels) == 1000
    assert labels.min() >= 0 and labels.max() < classes
    # Normalized pixels lie in [(0 - mean) / std, (1 - mean) / std].
    low = (0 - np.array(ip.IMAGENET_MEAN)) / ip.IMAGENET_STD
    high = (1 - np.array(ip.IMAGENET_MEAN)) / ip.IMAGENET_STD
    assert np.all(images >= low - 1e-5) and np.all(images <= high + 1e-5)

    for split, size in (("train800", 800), ("val200", 200), ("test", test_size)):
        batches = vtab.load(task, split, image_size=IMAGE_SIZE, batch_size=100, seed=0)
        assert int(batches.cardinality()) == -(-size // 100), split


def test_first_test_example_is_resized_and_normalized(mocked_tfds):
    ds = vtab.load("vtab/cifar100", "test", image_size=IMAGE_SIZE, batch_size=4)
    image = next(iter(ds))[0][0].numpy()
    # The same fake example, decoded and transformed by hand.
    builder = tfds.builder("cifar100")
    features = tfds.decode.PartialDecoding({"image": True, "label": True}).extract_features(
        builder.info.features
    )
    offset = _salt("cifar100", "test") * 1_000_000
    encoded = _fake_value(features, tf.constant(offset, tf.int64), (), {})["image"]
    raw = tf.io.decode_png(encoded).numpy().astype(np.float32)
    resized = tf.image.resize(raw, [IMAGE_SIZE, IMAGE_SIZE]).numpy() / 255.0
    expected = (resized - np.array(ip.IMAGENET_MEAN)) / np.array(ip.IMAGENET_STD)
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_gray_and_binary_images_become_full_range_rgb(mocked_tfds):
    for task in ("vtab/dsprites_location", "vtab/smallnorb_elevation"):
        images, _ = next(iter(vtab.load(task, "val200", image_size=IMAGE_SIZE, batch_size=8)))
        images = images.numpy()
        assert images.shape == (8, IMAGE_SIZE, IMAGE_SIZE, 3)
        # The three channels carry the same gray value.
        gray = images * np.array(ip.IMAGENET_STD) + np.array(ip.IMAGENET_MEAN)
        np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-5)
        np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-5)
        # dSprites' 0/1 pixels are scaled to 0/255 as in VTAB.
        assert gray.max() > 0.9


def test_same_seed_same_batches_other_seed_other_order(mocked_tfds):
    def first_batch(seed):
        ds = vtab.load("vtab/dtd", "train800", image_size=IMAGE_SIZE, batch_size=32, seed=seed)
        return [t.numpy() for t in next(iter(ds))]

    first, again, other = first_batch(7), first_batch(7), first_batch(8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_evaluation_pipeline_keeps_order_and_every_example(mocked_tfds):
    ds = vtab.load("vtab/kitti_distance", "test", image_size=IMAGE_SIZE, batch_size=100)
    labels = np.concatenate([labels.numpy() for _, labels in ds])
    again = np.concatenate([labels.numpy() for _, labels in ds])
    assert len(labels) == 711
    np.testing.assert_array_equal(labels, again)


def test_clevr_labels():
    def example(depths):
        depths = tf.constant(depths, tf.float32)
        coords = tf.stack([tf.zeros_like(depths), tf.zeros_like(depths), depths], axis=1)
        return {"objects": {"size": tf.zeros_like(depths, tf.int64), "pixel_coords": coords}}

    assert int(vtab.clevr_count_label(example([9.0] * 3))) == 0
    assert int(vtab.clevr_count_label(example([9.0] * 10))) == 7
    # Closest object depth binned by 0 < 8 < 8.5 < 9 < 9.5 < 10 < 100.
    assert int(vtab.clevr_distance_label(example([12.0, 7.9]))) == 0
    assert int(vtab.clevr_distance_label(example([8.0]))) == 0
    assert int(vtab.clevr_distance_label(example([8.2, 11.0]))) == 1
    assert int(vtab.clevr_distance_label(example([9.7]))) == 4
    assert int(vtab.clevr_distance_label(example([10.5, 30.0]))) == 5


def test_kitti_closest_vehicle_distance_labels():
    def example(types, depths):
        depths = tf.constant(depths, tf.float32)
        location = tf.stack([tf.zeros_like(depths), tf.zeros_like(depths), depths], axis=1)
        return {"objects": {"type": tf.constant(types, tf.int64), "location": location}}

    car, van, truck, pedestrian = 0, 1, 2, 3
    assert int(vtab.kitti_distance_label(example([car], [5.0]))) == 0
    assert int(vtab.kitti_distance_label(example([pedestrian, van], [2.0, 15.0]))) == 1
    assert int(vtab.kitti_distance_label(example([truck, car], [45.0, 30.0]))) == 2
    assert int(vtab.kitti_distance_label(example([pedestrian], [3.0]))) == 3
    assert int(vtab.kitti_distance_label(example([], []))) == 3


def test_dsprites_labels_group_into_16_classes():
    location = vtab.TASKS["vtab/dsprites_location"].label_fn
    orientation = vtab.TASKS["vtab/dsprites_orientation"].label_fn
    x_positions = tf.range(32, dtype=tf.int64)
    assert location({"label_x_position": x_positions}).numpy().tolist() == [
        i // 2 for i in range(32)
    ]
    orientations = orientation({"label_orientation": tf.range(40, dtype=tf.int64)}).numpy()
    assert orientations.min() == 0 and orientations.max() == 15
    assert np.bincount(orientations).tolist() == [3, 2] * 8  # 40 values in 16 bins of 2.5.


def test_missing_dataset_names_it_and_gives_the_command(tmp_path):
    with pytest.raises(ip.DatasetNotPreparedError) as error:
        vtab.load("vtab/cifar100", "train800", data_dir=str(tmp_path))
    message = str(error.value)
    assert "vtab/cifar100" in message
    assert f"tfds build cifar100:3.0.2 --data_dir={tmp_path}" in message
    assert f'vtab.prepare("vtab/cifar100", data_dir="{tmp_path}")' in message


def test_missing_manual_dataset_explains_the_manual_download(tmp_path):
    with pytest.raises(ip.DatasetNotPreparedError) as error:
        vtab.load(
            "vtab/resisc45", "test", data_dir=str(tmp_path), manual_dir=str(tmp_path / "manual")
        )
    message = str(error.value)
    assert f"--manual_dir={tmp_path / 'manual'}" in message
    assert "resisc45" in message and "OneDrive" in message


def test_unknown_task_and_split_are_rejected():
    with pytest.raises(ValueError, match="Unknown VTAB task"):
        vtab.lookup("vtab/imagenet")
    with pytest.raises(ValueError, match="Unknown split"):
        vtab.num_examples("vtab/cifar100", "train")


def test_short_names_are_accepted():
    assert vtab.lookup("clevr_count") is vtab.TASKS["vtab/clevr_count"]
