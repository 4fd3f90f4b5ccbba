"""VTAB-1k: the 19 tasks, their splits and input pipelines (VPT protocol).

Every task reads a TFDS dataset and defines four splits:

* ``train800``: the first 800 examples of the official train split;
* ``val200``: 200 held-out examples, taken exactly where the VTAB task
  definitions take them (first 200 of the official validation split where
  the protocol uses it; otherwise the 200 after the train cut, e.g.
  cifar100 ``train[45000:45200]``; smallnorb uses ``test[:200]``);
* ``train800val200``: the union of the two, for the final training run;
* ``test``: the protocol's full test split (e.g. clevr uses TFDS
  ``validation``, dsprites the last 10% of ``train``).

Labels of the derived Structured tasks follow the VTAB definitions (clevr
object count minus 3, binned distances, dsprites positions/orientations
grouped into 16 classes, ...). Images are resized straight to
``image_size`` x ``image_size`` with bilinear interpolation and normalized
with the ImageNet mean and std; gray images become RGB. Nothing is
augmented (as in VPT); training pipelines are only shuffled.

Example:

>>> from kprefix.data import vtab
>>> vtab.num_classes("vtab/clevr_count"), vtab.num_examples("vtab/dsprites_location", "test")
(8, 73728)
>>> vtab.TASKS["vtab/cifar100"].tfds_split("val200")
'train[45000:45200]'

and, with the dataset prepared in ``data_dir``::

    ds = vtab.load("vtab/cifar100", "train800", batch_size=128, seed=0,
                        data_dir="gs://my-bucket/tfds")
    images, labels = next(iter(ds))  # float32 [128, 224, 224, 3], int32 [128]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf

from kprefix.data import image_preprocessing as ip

SPLITS = ("train800", "val200", "train800val200", "test")
TRAIN_SIZE = 800
VAL_SIZE = 200

Slice = tuple[str, int, int]  # (TFDS split, start, stop)


@dataclasses.dataclass(frozen=True)
class VtabTask:
    """One VTAB-1k task.

    Attributes:
      name: "vtab/<task>".
      group: "natural", "specialized" or "structured".
      source: the TFDS dataset and the sizes of its official splits.
      num_classes: number of classes of the task's label.
      slices: for each protocol split, the (TFDS split, start, stop) slices.
      label_features: TFDS features (besides "image") that the label needs,
        in `tfds.decode.PartialDecoding` form.
      label_fn: decoded example dict -> integer label.
      image_fn: optional fix-up of the decoded uint8 RGB image.
    """

    name: str
    group: str
    source: ip.TfdsSource
    num_classes: int
    slices: Mapping[str, tuple[Slice, ...]]
    label_features: Mapping[str, Any]
    label_fn: Callable[[Mapping[str, tf.Tensor]], tf.Tensor]
    image_fn: Callable[[tf.Tensor], tf.Tensor] | None = None

    @property
    def tfds_name(self) -> str:
        return self.source.tfds_name

    def num_examples(self, split: str) -> int:
        """Number of examples of a protocol split, from the split definition."""
        return sum(stop - start for _, start, stop in self._slices(split))

    def tfds_split(self, split: str) -> str:
        """The TFDS split string of a protocol split."""
        return ip.split_string(self._slices(split), self.source.split_sizes)

    def _slices(self, split: str) -> tuple[Slice, ...]:
        if split not in self.slices:
            raise ValueError(f"Unknown split {split!r} for {self.name}; expected one of {SPLITS}.")
        return self.slices[split]


# ---------------------------------------------------------------------------
# Split definitions.
# ---------------------------------------------------------------------------


def _protocol_slices(val_split: str, val_start: int, test: Slice) -> dict[str, tuple[Slice, ...]]:
    train800 = (("train", 0, TRAIN_SIZE),)
    val200 = ((val_split, val_start, val_start + VAL_SIZE),)
    return {
        "train800": train800,
        "val200": val200,
        "train800val200": train800 + val200,
        "test": (test,),
    }


def _percent(count: int, percent: int) -> int:
    # Integer arithmetic exactly as the VTAB task definitions.
    return percent * count // 100


def _train_cut_slices(sizes: Mapping[str, int], train_percent: int):
    """val200 after a train_percent cut of train; test = official test."""
    cut = _percent(sizes["train"], train_percent)
    return _protocol_slices("train", cut, ("test", 0, sizes["test"]))


def _validation_slices(sizes: Mapping[str, int]):
    """val200 = first 200 of the official validation split; test = official test."""
    return _protocol_slices("validation", 0, ("test", 0, sizes["test"]))


def _train_only_slices(sizes: Mapping[str, int], train_percent: int, val_percent: int):
    """Datasets with a single split: train | val | test cut by percentages."""
    total = sizes["train"]
    train_count = _percent(total, train_percent)
    test_start = train_count + _percent(total, val_percent)
    return _protocol_slices("train", train_count, ("train", test_start, total))


# ---------------------------------------------------------------------------
# Labels.
# ---------------------------------------------------------------------------


def _label(example):
    return example["label"]


def _bin_index(value: tf.Tensor, edges) -> tf.Tensor:
    """Index i of the bin (edges[i], edges[i+1]] holding `value`."""
    edges = tf.constant(edges, tf.float32)
    position = tf.searchsorted(edges, tf.reshape(tf.cast(value, tf.float32), [1]), side="left")
    return position[0] - 1


def clevr_count_label(example):
    """Number of objects minus 3 (scenes hold 3 to 10 objects): 8 classes."""
    return tf.size(example["objects"]["size"]) - 3


# Depth bins of the closest object; chosen by VTAB for balanced classes.
CLEVR_DISTANCE_EDGES = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)


def clevr_distance_label(example):
    """Binned depth of the closest object: 6 classes."""
    depth = tf.reduce_min(example["objects"]["pixel_coords"][:, 2])
    return _bin_index(depth, CLEVR_DISTANCE_EDGES)


# Distance bins (metres) of the closest vehicle; beyond 999 means no vehicle.
KITTI_DISTANCE_EDGES = (-100.0, 8.0, 20.0, 999.0)
KITTI_VEHICLE_TYPES = 3  # TFDS kitti types 0, 1, 2: Car, Van, Truck.
_NO_VEHICLE_DISTANCE = 1000.0


def kitti_distance_label(example):
    """Closest vehicle within 8 m, 20 m, farther, or no vehicle: 4 classes."""
    objects = example["objects"]
    is_vehicle = objects["type"] < KITTI_VEHICLE_TYPES
    depths = tf.boolean_mask(objects["location"][:, 2], is_vehicle)
    depths = tf.concat([depths, [_NO_VEHICLE_DISTANCE]], axis=0)
    return _bin_index(tf.reduce_min(depths), KITTI_DISTANCE_EDGES)


def grouped_label(feature: str, original_classes: int, num_classes: int):
    """Groups `original_classes` consecutive values into `num_classes` bins."""
    width = original_classes / num_classes

    def label_fn(example):
        value = tf.cast(example[feature], tf.float32)
        return tf.cast(tf.math.floor(value / width), tf.int32)

    return label_fn


def feature_label(feature: str):
    """Uses a TFDS class-label feature as the label."""
    return lambda example: example[feature]


def _binary_to_uint8(image):
    # dSprites pixels are 0/1; VTAB scales them to 0/255.
    return image * 255


# ---------------------------------------------------------------------------
# The 19 tasks.
# ---------------------------------------------------------------------------

# Official TFDS split sizes of the dataset versions the protocol uses.
_SIZES = {
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
    "clevr": {"train": 70_000, "validation": 15_000},
    "dmlab": {"train": 65_550, "validation": 22_628, "test": 22_735},
    "kitti": {"train": 6_347, "validation": 423, "test": 711},
    "dsprites": {"train": 737_280},
    "smallnorb": {"train": 24_300, "test": 24_300},
}

_LABEL_ONLY = {"label": True}


def _task(
    short_name: str,
    group: str,
    tfds_name: str,
    num_classes: int,
    slices,
    *,
    label_features=_LABEL_ONLY,
    label_fn=_label,
    image_fn=None,
    manual_download: bool = False,
) -> VtabTask:
    name = f"vtab/{short_name}"
    dataset = tfds_name.split(":")[0].split("/")[0]
    sizes = _SIZES[dataset]
    used = {split for split_slices in slices.values() for split, _, _ in split_slices}
    source = ip.TfdsSource(
        task=name,
        tfds_name=tfds_name,
        split_sizes={split: sizes[split] for split in sorted(used)},
        manual_download=manual_download,
    )
    return VtabTask(
        name=name,
        group=group,
        source=source,
        num_classes=num_classes,
        slices=slices,
        label_features=label_features,
        label_fn=label_fn,
        image_fn=image_fn,
    )


def _build_tasks() -> dict[str, VtabTask]:
    s = _SIZES
    clevr_slices = _protocol_slices(
        "train", _percent(s["clevr"]["train"], 90), ("validation", 0, s["clevr"]["validation"])
    )
    smallnorb_test = s["smallnorb"]["test"]
    smallnorb_slices = _protocol_slices(
        "test", 0, ("test", _percent(smallnorb_test, 50), smallnorb_test)
    )
    dsprites_slices = _train_only_slices(s["dsprites"], 80, 10)
    tasks = [
        # Natural.
        _task("cifar100", "natural", "cifar100:3.*.*", 100, _train_cut_slices(s["cifar100"], 90)),
        _task(
            "caltech101", "natural", "caltech101:3.*.*", 102, _train_cut_slices(s["caltech101"], 90)
        ),
        _task("dtd", "natural", "dtd:3.*.*", 47, _validation_slices(s["dtd"])),
        _task(
            "oxford_flowers102",
            "natural",
            "oxford_flowers102:2.*.*",
            102,
            _validation_slices(s["oxford_flowers102"]),
        ),
        # VTAB pinned 3.x, which current TFDS no longer builds; 4.x has the same
        # images, labels and split sizes.
        _task(
            "oxford_iiit_pet",
            "natural",
            "oxford_iiit_pet:4.*.*",
            37,
            _train_cut_slices(s["oxford_iiit_pet"], 80),
        ),
        _task(
            "svhn", "natural", "svhn_cropped:3.*.*", 10, _train_cut_slices(s["svhn_cropped"], 90)
        ),
        _task("sun397", "natural", "sun397/tfds:4.*.*", 397, _validation_slices(s["sun397"])),
        # Specialized.
        _task(
            "patch_camelyon",
            "specialized",
            "patch_camelyon:2.*.*",
            2,
            _validation_slices(s["patch_camelyon"]),
        ),
        _task(
            "eurosat",
            "specialized",
            "eurosat/rgb:2.*.*",
            10,
            _train_only_slices(s["eurosat"], 60, 20),
        ),
        _task(
            "resisc45",
            "specialized",
            "resisc45:3.*.*",
            45,
            _train_only_slices(s["resisc45"], 60, 20),
            manual_download=True,
        ),
        _task(
            "diabetic_retinopathy",
            "specialized",
            "diabetic_retinopathy_detection/btgraham-300:3.*.*",
            5,
            _validation_slices(s["diabetic_retinopathy_detection"]),
            manual_download=True,
        ),
        # Structured.
        _task(
            "clevr_count",
            "structured",
            "clevr:3.*.*",
            8,
            clevr_slices,
            label_features={"objects": {"size": True}},
            label_fn=clevr_count_label,
        ),
        _task(
            "clevr_distance",
            "structured",
            "clevr:3.*.*",
            6,
            clevr_slices,
            label_features={"objects": {"pixel_coords": True}},
            label_fn=clevr_distance_label,
        ),
        _task("dmlab", "structured", "dmlab:2.0.1", 6, _validation_slices(s["dmlab"])),
        _task(
            "kitti_distance",
            "structured",
            "kitti:3.2.0",
            4,
            _validation_slices(s["kitti"]),
            label_features={"objects": {"type": True, "location": True}},
            label_fn=kitti_distance_label,
        ),
        _task(
            "dsprites_location",
            "structured",
            "dsprites:2.*.*",
            16,
            dsprites_slices,
            label_features={"label_x_position": True},
            label_fn=grouped_label("label_x_position", 32, 16),
            image_fn=_binary_to_uint8,
        ),
        _task(
            "dsprites_orientation",
            "structured",
            "dsprites:2.*.*",
            16,
            dsprites_slices,
            label_features={"label_orientation": True},
            label_fn=grouped_label("label_orientation", 40, 16),
            image_fn=_binary_to_uint8,
        ),
        _task(
            "smallnorb_azimuth",
            "structured",
            "smallnorb:2.*.*",
            18,
            smallnorb_slices,
            label_features={"label_azimuth": True},
            label_fn=feature_label("label_azimuth"),
        ),
        _task(
            "smallnorb_elevation",
            "structured",
            "smallnorb:2.*.*",
            9,
            smallnorb_slices,
            label_features={"label_elevation": True},
            label_fn=feature_label("label_elevation"),
        ),
    ]
    return {task.name: task for task in tasks}


TASKS: dict[str, VtabTask] = _build_tasks()


def lookup(task: str) -> VtabTask:
    """Looks a task up by "vtab/<name>" or "<name>"."""
    name = task if task.startswith("vtab/") else f"vtab/{task}"
    if name not in TASKS:
        raise ValueError(f"Unknown VTAB task {task!r}; known: {sorted(TASKS)}.")
    return TASKS[name]


def num_classes(task: str) -> int:
    """Number of classes of a task (no data is read)."""
    return lookup(task).num_classes


def num_examples(task: str, split: str) -> int:
    """Number of examples in a protocol split (no data is read)."""
    return lookup(task).num_examples(split)


def prepare(task: str, data_dir: str | None = None, manual_dir: str | None = None) -> None:
    """Downloads and prepares the task's TFDS dataset in `data_dir` (once).

    Manual-download datasets (resisc45, diabetic retinopathy) read their
    files from `manual_dir`.
    """
    ip.prepare_tfds(lookup(task).source, data_dir=data_dir, manual_dir=manual_dir)


def bytes_per_example(image_size: int) -> int:
    """Memory of one prepared example (float32 image) in the cache."""
    return image_size * image_size * 3 * 4


def load(
    task: str,
    split: str,
    *,
    image_size: int = 224,
    batch_size: int = 128,
    seed: int | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    training: bool | None = None,
    cache: bool | None = None,
    cache_budget_bytes: int = ip.DEFAULT_CACHE_BUDGET_BYTES,
    shuffle_buffer_size: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batched (image float32 [B,H,W,3], label int32 [B]) for a VTAB-1k split.

    Args:
      task: e.g. "vtab/cifar100" (see `TASKS`).
      split: "train800", "val200", "train800val200" or "test".
      image_size: side of the square images.
      batch_size: examples per batch.
      seed: shuffle seed; the same seed gives the same batches.
      data_dir: TFDS data directory (local or gs://) holding the prepared data.
      manual_dir: where manual downloads live; used in the error message of a
        missing dataset (see `prepare`).
      training: shuffle; defaults to True for train800 and train800val200.
      cache: keep prepared images in memory; by default when the split fits
        `cache_budget_bytes` (train800val200 at 224 does, test sets do not).
      shuffle_buffer_size: defaults to the whole split (up to 10,000).
      drop_remainder: defaults to `training`.

    Raises:
      DatasetNotPreparedError: with the command that prepares the dataset.
    """
    spec = lookup(task)
    count = spec.num_examples(split)
    if training is None:
        training = split in ("train800", "train800val200")
    if cache is None:
        cache = ip.fits_in_cache(count, bytes_per_example(image_size), cache_budget_bytes)

    features = {"image": True, **spec.label_features}
    examples = ip.read_tfds_split(
        spec.source,
        spec.tfds_split(split),
        features=features,
        data_dir=data_dir,
        manual_dir=manual_dir,
    )
    examples = examples.apply(tf.data.experimental.assert_cardinality(count))

    def prepare_example(example):
        image = ip.decode_rgb(example["image"])
        if spec.image_fn is not None:
            image = spec.image_fn(image)
        return ip.resize_and_normalize(image, image_size), spec.label_fn(example)

    return ip.batch_pipeline(
        examples,
        prepare=prepare_example,
        batch_size=batch_size,
        training=training,
        seed=seed,
        cache=cache,
        shuffle_buffer_size=shuffle_buffer_size,
        drop_remainder=drop_remainder,
    )
