"""Tests of the NABirds TFDS builder on a generated folder in the official layout."""

import dataclasses
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kprefix.data import fgvc, nabirds
from kprefix.data import image_preprocessing as ip

# A small taxonomy: 0 -> {1, 2}; 1 -> {99, 295, 1000}; 2 -> {817}.
# Leaves by class id: 99, 295, 817, 1000 (a string sort would put 1000 first).
CLASSES = {
    0: "Birds",
    1: "Waterfowl",
    2: "Hawks",
    99: "Mallard",
    295: "Canada Goose",
    817: "Red-tailed Hawk (Adult)",
    1000: "Snow Goose",
}
HIERARCHY = {1: 0, 2: 0, 99: 1, 295: 1, 1000: 1, 817: 2}
LEAF_LABELS = {99: 0, 295: 1, 817: 2, 1000: 3}

# (image id, class id, is training image, height, width, channels)
IMAGES = [
    ("0a1b-0001", 99, 1, 30, 40, 3),
    ("0a1b-0002", 99, 0, 24, 24, 3),
    ("0a1b-0003", 295, 1, 40, 30, 3),
    ("0a1b-0004", 295, 1, 20, 36, 1),  # A gray JPEG.
    ("0a1b-0005", 817, 1, 32, 32, 3),
    ("0a1b-0006", 817, 0, 28, 44, 3),
    ("0a1b-0007", 1000, 1, 36, 24, 3),
    ("0a1b-0008", 1000, 0, 30, 30, 3),
    ("0a1b-0009", 99, 1, 26, 38, 3),
]
NUM_TRAIN = sum(is_train for _, _, is_train, *_ in IMAGES)
NUM_TEST = len(IMAGES) - NUM_TRAIN


def write_nabirds_folder(root):
    """Writes tiny JPEGs and the official metadata files under `root`."""
    (root / "images").mkdir(parents=True)
    lines = {name: [] for name in nabirds.METADATA_FILES}
    for image_id, class_id, is_train, height, width, channels in IMAGES:
        folder = f"{class_id:04d}"
        (root / "images" / folder).mkdir(exist_ok=True)
        path = f"{folder}/{image_id.replace('-', '')}.jpg"
        pixels = np.random.RandomState(len(lines["images.txt"])).randint(
            0, 256, (height, width, channels), np.uint8
        )
        (root / "images" / path).write_bytes(tf.io.encode_jpeg(pixels).numpy())
        lines["images.txt"].append(f"{image_id} {path}")
        lines["image_class_labels.txt"].append(f"{image_id} {class_id}")
        lines["train_test_split.txt"].append(f"{image_id} {is_train}")
    lines["classes.txt"] = [f"{class_id} {name}" for class_id, name in CLASSES.items()]
    lines["hierarchy.txt"] = [f"{child} {parent}" for child, parent in HIERARCHY.items()]
    for name, content in lines.items():
        (root / name).write_text("\n".join(content) + "\n")


def build(data_dir, manual_dir):
    builder = tfds.builder("nabirds", data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return builder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, builder) with NABirds built from an extracted folder."""
    manual_dir = tmp_path_factory.mktemp("manual")
    write_nabirds_folder(manual_dir / "nabirds")
    data_dir = tmp_path_factory.mktemp("tfds")
    return data_dir, build(data_dir, manual_dir)


def test_builds_from_the_official_folder_layout(prepared):
    _, builder = prepared
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    assert builder.info.splits["test"].num_examples == NUM_TEST
    assert builder.info.features["label"].names == [
        "Mallard",
        "Canada Goose",
        "Red-tailed Hawk (Adult)",
        "Snow Goose",
    ]
    examples = list(builder.as_dataset(split="train+test").as_numpy_iterator())
    by_id = {example["image/id"].decode(): example for example in examples}
    assert len(by_id) == len(IMAGES)
    for image_id, class_id, _, height, width, _ in IMAGES:
        example = by_id[image_id]
        assert example["label"] == LEAF_LABELS[class_id]
        assert example["image"].shape == (height, width, 3)
        assert example["image/filename"].decode() == (
            f"{class_id:04d}/{image_id.replace('-', '')}.jpg"
        )


def test_builds_from_the_archive(tmp_path):
    write_nabirds_folder(tmp_path / "extracted" / "nabirds")
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    with tarfile.open(manual_dir / "nabirds.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "extracted" / "nabirds", arcname="nabirds")
    builder = build(tmp_path / "tfds", manual_dir)
    assert builder.info.splits["train"].num_examples == NUM_TRAIN
    labels = sorted(int(ex["label"]) for ex in builder.as_dataset(split="test"))
    assert labels == sorted(LEAF_LABELS[c] for _, c, is_train, *_ in IMAGES if not is_train)


def test_missing_metadata_file_is_reported(tmp_path):
    write_nabirds_folder(tmp_path / "manual")
    (tmp_path / "manual" / "hierarchy.txt").unlink()
    with pytest.raises(FileNotFoundError, match="hierarchy.txt"):
        build(tmp_path / "tfds", tmp_path / "manual")


def test_loads_through_the_fgvc_pipeline(prepared, monkeypatch):
    data_dir, _ = prepared
    # The protocol's sizes are those of the full dataset; this one is tiny.
    spec = fgvc.DATASETS["fgvc/nabirds"]
    tiny = dataclasses.replace(
        spec,
        source=dataclasses.replace(spec.source, split_sizes={"train": NUM_TRAIN, "test": NUM_TEST}),
    )
    monkeypatch.setitem(fgvc.DATASETS, "fgvc/nabirds", tiny)
    assert fgvc.num_examples("fgvc/nabirds", "val") == 1

    train = fgvc.load(
        "fgvc/nabirds",
        "train",
        image_size=16,
        batch_size=NUM_TRAIN - 1,
        seed=0,
        data_dir=str(data_dir),
    )
    images, labels = next(iter(train))
    assert images.shape == (NUM_TRAIN - 1, 16, 16, 3) and images.dtype == tf.float32
    assert set(labels.numpy().tolist()) <= set(LEAF_LABELS.values())

    test = fgvc.load(
        "fgvc/nabirds", "test", image_size=16, batch_size=2, data_dir=str(data_dir)
    )
    test_labels = np.concatenate([labels.numpy() for _, labels in test])
    assert sorted(test_labels.tolist()) == sorted(
        LEAF_LABELS[c] for _, c, is_train, *_ in IMAGES if not is_train
    )


def test_a_prepared_dataset_of_other_size_is_rejected(prepared):
    data_dir, _ = prepared
    with pytest.raises(ValueError, match="expects 23929"):
        fgvc.load("fgvc/nabirds", "test", data_dir=str(data_dir))


def test_missing_nabirds_gives_the_build_command_and_download_instructions(tmp_path):
    with pytest.raises(ip.DatasetNotPreparedError) as error:
        fgvc.load(
            "fgvc/nabirds", "train", data_dir=str(tmp_path), manual_dir=str(tmp_path / "dl")
        )
    message = str(error.value)
    assert (
        f"tfds build nabirds:1.0.0 --data_dir={tmp_path} --imports=kprefix.data.nabirds "
        f"--manual_dir={tmp_path / 'dl'}"
    ) in message
    assert "https://dl.allaboutbirds.org/nabirds" in message
