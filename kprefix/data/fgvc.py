"""FGVC: the five fine-grained datasets, their splits and input pipelines.

CUB-200-2011, NABirds, Oxford Flowers, Stanford Dogs and Stanford Cars,
read through TFDS (NABirds through the builder in `kprefix.data.nabirds`).
Splits, as in the VPT protocol:

* ``train`` / ``val``: the official train split minus / only a deterministic
  10% hold-out (ceil of a tenth, chosen by a fixed-seed permutation of the
  split's file order), or the examples a user-given split file names; Oxford
  Flowers uses its official validation split instead;
* ``trainval``: the official train split (Flowers: train + validation);
* ``test``: the official test split.

Training images are resized (shorter side 256), randomly cropped to 224 and
flipped horizontally; evaluation images are resized to 256 and centre
cropped to 224; both are normalized with the ImageNet mean and std.

Example:

>>> from kprefix.data import fgvc
>>> fgvc.num_classes("fgvc/cub"), fgvc.num_examples("fgvc/cub", "val")
(200, 600)

and, with the dataset prepared in ``data_dir``::

    ds = fgvc.load("fgvc/cub", "train", batch_size=64, seed=0,
                        data_dir="gs://my-bucket/tfds")
    images, labels = next(iter(ds))  # float32 [64, 224, 224, 3], int32 [64]

By default the flagfiles use VPT's own splits, shipped with kprefix
(``split_file="vpt"``; see `vpt_split`). A split file is VPT's released
split folder (`train.json`, `val.json`, `test.json`, each mapping an image
path to its class), or one JSON file with
"train" and "val" entries, each a list of example file names or of indices
into the official train split, or a mapping like VPT's. File names are
matched on the name without folder and extension::

    {"train": ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg", ...],
     "val": [...]}

Without a split file (or with ``split_file="holdout"``), `val` is a
fixed-seed 10% hold-out: its size equals VPT's, its members do not.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import importlib.resources
import json
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from kprefix.data import image_preprocessing as ip

SPLITS = ("train", "val", "trainval", "test")
HOLDOUT_SEED = 0
# `split_file` values that name a built-in split instead of a path.
VPT_SPLIT = "vpt"
HOLDOUT_SPLIT = "holdout"


@dataclasses.dataclass(frozen=True)
class FgvcDataset:
    """One FGVC dataset.

    Attributes:
      name: "fgvc/<dataset>".
      source: the TFDS dataset and the sizes of its official splits.
      num_classes: number of classes.
      filename_feature: the TFDS feature naming each example's image file,
        used to match split files.
      official_validation: the dataset has its own validation split (Flowers)
        and needs no hold-out.
    """

    name: str
    source: ip.TfdsSource
    num_classes: int
    filename_feature: str
    official_validation: bool = False

    @property
    def pool_splits(self) -> tuple[str, ...]:
        """The official splits that train and val are drawn from."""
        return ("train", "validation") if self.official_validation else ("train",)

    @property
    def pool_size(self) -> int:
        return sum(self.source.split_sizes[split] for split in self.pool_splits)

    def num_examples(self, split: str, split_file: str | None = None) -> int:
        """Number of examples of a split (reads only the split file, if any)."""
        split_file = self.resolve_split_file(split_file)
        if split == "test":
            return self.source.split_sizes["test"]
        if split == "trainval":
            if split_file is None:
                return self.pool_size
            return sum(len(ids) for ids in self.split_lists(split_file).values())
        if split not in ("train", "val"):
            raise ValueError(f"Unknown split {split!r} for {self.name}; expected one of {SPLITS}.")
        if split_file is not None:
            return len(self.split_lists(split_file)[split])
        if self.official_validation:
            return self.source.split_sizes["train" if split == "train" else "validation"]
        held_out = holdout_size(self.source.split_sizes["train"])
        return held_out if split == "val" else self.source.split_sizes["train"] - held_out

    def resolve_split_file(self, split_file: str | None) -> str | None:
        """None for the hold-out, else `VPT_SPLIT` or a path.

        Raises ValueError where VPT's split cannot name this dataset's TFDS
        examples (Stanford Cars: VPT numbers the images of the combined
        `car_ims` archive, TFDS `cars196` those of `cars_train`, and no
        released file links the two numberings).
        """
        if split_file in (None, "", HOLDOUT_SPLIT):
            return None
        if split_file == VPT_SPLIT and not self.vpt_split_matches_tfds:
            raise ValueError(
                f"VPT's split of {self.name} names images by their number in the combined "
                "car_ims archive, which TFDS cars196 does not record; use "
                f"--split_file={HOLDOUT_SPLIT} or a split file naming cars_train images.")
        return split_file

    def split_lists(self, split_file: str) -> dict[str, Sequence[Identifier]]:
        """{"train": [...], "val": [...]} of `VPT_SPLIT` or a split file's path."""
        if split_file == VPT_SPLIT:
            lists = vpt_split(self.name)
            return {"train": lists["train"], "val": lists["val"]}
        return read_split_file(split_file)

    @property
    def vpt_split_matches_tfds(self) -> bool:
        """VPT's image names are this dataset's TFDS file names (all but Cars)."""
        return self.name != "fgvc/cars"


@functools.lru_cache(maxsize=None)
def vpt_split(name: str) -> dict[str, tuple[str, ...]]:
    """VPT's train/val/test split of an FGVC dataset, as image-file stems.

    Converted from VPT's release as the authors' repository carries it
    (GitHub Minhchuyentoancbn/ReparamPrefix, commit 86c3ed6,
    `CV/local_datasets/json/<dataset>/{train,val,test}.json`, image path ->
    class): each path without folder and extension, sorted; the classes are
    the dataset's own. Stanford Cars' stems are numbers in the combined
    `car_ims` archive.

    >>> sizes = {s: len(ids) for s, ids in vpt_split("fgvc/cub").items()}
    >>> sizes
    {'train': 5394, 'val': 600, 'test': 5794}
    """
    short = lookup(name).name.split("/", 1)[1]
    data = importlib.resources.files("kprefix.data") / "fgvc_splits" / f"{short}.tsv.gz"
    lists = {"train": [], "val": [], "test": []}
    for line in gzip.decompress(data.read_bytes()).decode().splitlines():
        split, stem = line.split("\t")
        lists[split].append(stem)
    return {split: tuple(stems) for split, stems in lists.items()}


def _dataset(
    short_name: str,
    tfds_name: str,
    num_classes: int,
    split_sizes: dict[str, int],
    filename_feature: str,
    *,
    official_validation: bool = False,
    manual_download: bool = False,
    builder_module: str | None = None,
) -> FgvcDataset:
    name = f"fgvc/{short_name}"
    source = ip.TfdsSource(
        task=name,
        tfds_name=tfds_name,
        split_sizes=split_sizes,
        manual_download=manual_download,
        builder_module=builder_module,
    )
    return FgvcDataset(name, source, num_classes, filename_feature, official_validation)


DATASETS: dict[str, FgvcDataset] = {
    dataset.name: dataset
    for dataset in (
        _dataset(
            "cub",
            "caltech_birds2011:0.2.*",
            200,
            {"train": 5_994, "test": 5_794},
            "image/filename",
        ),
        _dataset(
            "nabirds",
            "nabirds:1.*.*",
            555,
            {"train": 23_929, "test": 24_633},
            "image/filename",
            manual_download=True,
            builder_module="kprefix.data.nabirds",
        ),
        _dataset(
            "flowers",
            "oxford_flowers102:2.*.*",
            102,
            {"train": 1_020, "validation": 1_020, "test": 6_149},
            "file_name",
            official_validation=True,
        ),
        _dataset(
            "dogs",
            "stanford_dogs:0.2.*",
            120,
            {"train": 12_000, "test": 8_580},
            "image/filename",
        ),
        _dataset("cars", "cars196:2.*.*", 196, {"train": 8_144, "test": 8_041}, "id"),
    )
}


def lookup(name: str) -> FgvcDataset:
    """Looks a dataset up by "fgvc/<name>" or "<name>"."""
    full = name if name.startswith("fgvc/") else f"fgvc/{name}"
    if full not in DATASETS:
        raise ValueError(f"Unknown FGVC dataset {name!r}; known: {sorted(DATASETS)}.")
    return DATASETS[full]


def num_classes(name: str) -> int:
    """Number of classes (no data is read)."""
    return lookup(name).num_classes


def num_examples(name: str, split: str, split_file: str | None = None) -> int:
    """Number of examples of a split (no data is read)."""
    return lookup(name).num_examples(split, split_file)


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None) -> None:
    """Downloads and prepares the dataset's TFDS data in `data_dir` (once).

    NABirds reads the official archive or folder from `manual_dir`.
    """
    ip.prepare_tfds(lookup(name).source, data_dir=data_dir, manual_dir=manual_dir)


# ---------------------------------------------------------------------------
# Hold-out and split files.
# ---------------------------------------------------------------------------


def holdout_size(train_size: int) -> int:
    """A tenth of the train split, rounded up (CUB: 600 of 5,994).

    >>> holdout_size(5994), holdout_size(12000), holdout_size(8144)
    (600, 1200, 815)
    """
    return -(-train_size // 10)


def holdout_indices(train_size: int, seed: int = HOLDOUT_SEED) -> np.ndarray:
    """Sorted indices (in the split's file order) of the validation hold-out.

    Uses NumPy's legacy `RandomState`, whose stream never changes across
    versions, so the hold-out is the same everywhere.

    >>> holdout_indices(20).tolist()
    [1, 18]
    """
    permutation = np.random.RandomState(seed).permutation(train_size)
    return np.sort(permutation[: holdout_size(train_size)])


Identifier = int | str


def read_split_file(path: str) -> dict[str, list[Identifier]]:
    """Reads a split (local or gs://) into {"train": [...], "val": [...]}.

    `path` is either VPT's released split folder, holding `train.json` and
    `val.json` (each a mapping from image path to class, as VPT's
    `JSONDataset` reads them), or one JSON file with "train" and "val"
    entries (lists of file names or indices, or mappings like VPT's).
    """
    if tf.io.gfile.isdir(path):
        content = {}
        for split in ("train", "val"):
            file = f"{path.rstrip('/')}/{split}.json"
            if not tf.io.gfile.exists(file):
                raise ValueError(f"Split folder {path} has no {split}.json; VPT's split folders "
                                 "hold train.json, val.json and test.json.")
            with tf.io.gfile.GFile(file, "r") as f:
                content[split] = json.load(f)
    else:
        with tf.io.gfile.GFile(path, "r") as f:
            content = json.load(f)
    splits = {}
    for split in ("train", "val"):
        if split not in content:
            raise ValueError(f"Split file {path} has no {split!r} entry.")
        entries = content[split]
        splits[split] = list(entries.keys()) if isinstance(entries, dict) else list(entries)
    return splits


def _stem(name: str) -> str:
    """'cars_train/00001.jpg' -> '00001'."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def _stem_tensor(names: tf.Tensor) -> tf.Tensor:
    base = tf.strings.regex_replace(names, r"^.*[/\\]", "")
    return tf.strings.regex_replace(base, r"\.[^.]*$", "")


# ---------------------------------------------------------------------------
# Pipelines.
# ---------------------------------------------------------------------------


def _select(
    dataset: FgvcDataset,
    split: str,
    split_file: str | None,
    holdout_seed: int,
):
    """TFDS split string and optional selection predicate for a split."""
    pool = "+".join(dataset.pool_splits)
    split_file = dataset.resolve_split_file(split_file)
    if split == "test":
        return "test", None
    if split_file is not None:
        lists = dataset.split_lists(split_file)
        wanted = lists["train"] + lists["val"] if split == "trainval" else lists[split]
        return pool, _selector(dataset, wanted)
    if split == "trainval":
        return pool, None
    if dataset.official_validation:
        return ("train" if split == "train" else "validation"), None
    held_out = np.zeros(dataset.source.split_sizes["train"], bool)
    held_out[holdout_indices(dataset.source.split_sizes["train"], holdout_seed)] = True
    keep = held_out if split == "val" else ~held_out
    keep = tf.constant(keep)
    return "train", lambda index, example: tf.gather(keep, index)


def _selector(dataset: FgvcDataset, identifiers: Sequence[Identifier]):
    """Predicate (index, example) -> bool for the examples a split file names."""
    if all(isinstance(i, (int, np.integer)) for i in identifiers):
        mask = np.zeros(dataset.pool_size, bool)
        mask[np.asarray(identifiers, np.int64)] = True
        mask = tf.constant(mask)
        return lambda index, example: tf.gather(mask, index)
    if not all(isinstance(i, str) for i in identifiers):
        raise ValueError("Split file entries must be all integers or all file names.")
    stems = sorted({_stem(i) for i in identifiers})
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(stems), tf.ones(len(stems), tf.int32)),
        default_value=0,
    )
    feature = dataset.filename_feature

    def selected(index, example):
        del index
        return table.lookup(_stem_tensor(example[feature])) > 0

    return selected


def train_bytes_per_example(resize_size: int) -> int:
    """Cache memory of one resized uint8 training image (4:3 aspect assumed)."""
    return resize_size * resize_size * 4 // 3 * 3


def eval_bytes_per_example(image_size: int) -> int:
    """Cache memory of one final float32 evaluation image."""
    return image_size * image_size * 3 * 4


def load(
    name: str,
    split: str,
    *,
    image_size: int = 224,
    resize_size: int | None = None,
    batch_size: int = 64,
    seed: int | None = None,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    training: bool | None = None,
    split_file: str | None = None,
    holdout_seed: int = HOLDOUT_SEED,
    cache: bool | None = None,
    cache_budget_bytes: int = ip.DEFAULT_CACHE_BUDGET_BYTES,
    shuffle_buffer_size: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batched (image float32 [B,H,W,3], label int32 [B]) for an FGVC split.

    Args:
      name: "fgvc/cub", "fgvc/nabirds", "fgvc/flowers", "fgvc/dogs" or "fgvc/cars".
      split: "train", "val", "trainval" or "test".
      image_size: crop size (224).
      resize_size: shorter side before cropping; defaults to 8/7 of
        `image_size` (256 for 224).
      batch_size: examples per batch.
      seed: shuffle and augmentation seed; the same seed gives the same batches.
      data_dir: TFDS data directory (local or gs://).
      manual_dir: where manual downloads live (NABirds); used in the error
        message of a missing dataset (see `prepare`).
      training: random crop + flip + shuffle; defaults to True for "train"
        and "trainval".
      split_file: `VPT_SPLIT` ("vpt"), `HOLDOUT_SPLIT` ("holdout", as None)
        or a JSON file or VPT split folder choosing train/val examples (see
        module doc).
      holdout_seed: seed of the 10% hold-out when there is no split file.
      cache: keep prepared images in memory; by default when they fit
        `cache_budget_bytes`.
      shuffle_buffer_size: defaults to the whole split (up to 10,000).
      drop_remainder: defaults to `training`.

    Raises:
      DatasetNotPreparedError: with the command that prepares the dataset.
    """
    dataset = lookup(name)
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for {dataset.name}; expected one of {SPLITS}.")
    count = dataset.num_examples(split, split_file)
    if training is None:
        training = split in ("train", "trainval")
    resize_size = resize_size or ip.default_resize_size(image_size)
    if cache is None:
        per_example = (
            train_bytes_per_example(resize_size) if training else eval_bytes_per_example(image_size)
        )
        cache = ip.fits_in_cache(count, per_example, cache_budget_bytes)

    tfds_split, selected = _select(dataset, split, split_file, holdout_seed)
    features = {"image": True, "label": True}
    if selected is not None:
        features[dataset.filename_feature] = True
    examples = ip.read_tfds_split(
        dataset.source, tfds_split, features=features, data_dir=data_dir, manual_dir=manual_dir
    )
    if selected is not None:
        examples = examples.enumerate().filter(selected).map(lambda index, example: example)
    examples = examples.apply(tf.data.experimental.assert_cardinality(count))

    if training:

        def prepare_example(example):
            image = ip.resize_shorter_side(ip.decode_rgb(example["image"]), resize_size)
            return image, example["label"]

        def augment(image, seed_pair):
            cropped = ip.random_crop_and_flip(image, image_size, seed_pair)
            return ip.normalize_imagenet(cropped)

    else:

        def prepare_example(example):
            image = ip.decode_rgb(example["image"])
            return ip.fgvc_eval_transform(image, image_size, resize_size), example["label"]

        augment = None

    return ip.batch_pipeline(
        examples,
        prepare=prepare_example,
        augment=augment,
        batch_size=batch_size,
        training=training,
        seed=seed,
        cache=cache,
        shuffle_buffer_size=shuffle_buffer_size,
        drop_remainder=drop_remainder,
    )
