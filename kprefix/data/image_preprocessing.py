"""Shared machinery of the vision input pipelines (VTAB-1k and FGVC).

Three parts, used by `kprefix.data.vtab` and `kprefix.data.fgvc` and by
anything that feeds images to the image classifier:

* per-image transforms: decoding to RGB, the VTAB resize, the FGVC
  resize / random crop / flip / centre crop, ImageNet normalization;
* `batch_pipeline`, the common tail (deterministic stage, optional cache,
  seeded shuffle, seeded augmentation, batch, prefetch);
* reading a prepared TFDS dataset, failing fast with the exact preparation
  command when it is missing (`DatasetNotPreparedError`).

All randomness is stateless and derived from one integer seed, so two
pipelines built with the same seed yield the same batches.

Example (an in-memory dataset through the VTAB-style pipeline):

>>> import numpy as np, tensorflow as tf
>>> images = np.zeros((10, 8, 8, 1), np.uint8)
>>> labels = np.arange(10) % 3
>>> examples = tf.data.Dataset.from_tensor_slices((images, labels))
>>> ds = batch_pipeline(
...     examples,
...     prepare=lambda image, label: (
...         resize_and_normalize(ensure_rgb(image), 16), tf.cast(label, tf.int32)),
...     batch_size=4, training=True, seed=0)
>>> [tuple(t.shape) for t in next(iter(ds))]
[(4, 16, 16, 3), (4,)]
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Examples are cached in memory when the whole split fits in this many bytes.
# 1 GiB holds VTAB train800val200 at 224x224 (about 0.6 GB of float32) but no
# full test set.
DEFAULT_CACHE_BUDGET_BYTES = 1 << 30

DEFAULT_SHUFFLE_BUFFER_SIZE = 10_000

AUTOTUNE = tf.data.AUTOTUNE


# ---------------------------------------------------------------------------
# Per-image transforms.
# ---------------------------------------------------------------------------


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes JPEG/PNG/BMP/GIF bytes to a uint8 RGB image [H, W, 3].

    Gray images are expanded to three channels by the decoder.

    >>> png = tf.io.encode_png(tf.zeros([4, 5, 1], tf.uint8))
    >>> tuple(decode_rgb(png).shape)
    (4, 5, 3)
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def ensure_rgb(image: tf.Tensor) -> tf.Tensor:
    """Returns `image` with three channels; a one-channel image is repeated.

    >>> tuple(ensure_rgb(tf.zeros([2, 2, 1])).shape)
    (2, 2, 3)
    """
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    raise ValueError(f"Expected 1 or 3 channels, got image shape {image.shape}.")


def normalize_imagenet(image: tf.Tensor) -> tf.Tensor:
    """Maps pixel values in [0, 255] to ImageNet-normalized float32.

    >>> x = normalize_imagenet(tf.fill([1, 1, 3], 255.0))
    >>> [round(float(v), 4) for v in x[0, 0]]
    [2.2489, 2.4286, 2.64]
    """
    image = tf.cast(image, tf.float32) / 255.0
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)
    return (image - mean) / std


def resize_and_normalize(image: tf.Tensor, image_size: int) -> tf.Tensor:
    """VTAB transform: bilinear resize straight to a square, then normalize.

    No aspect-ratio preservation and no antialiasing, as in the VTAB/VPT
    pipeline (`tf.image.resize` on the uint8 image).

    >>> tuple(resize_and_normalize(tf.zeros([32, 48, 3], tf.uint8), 224).shape)
    (224, 224, 3)
    """
    image = tf.image.resize(image, [image_size, image_size], method="bilinear")
    return normalize_imagenet(image)


def default_resize_size(image_size: int) -> int:
    """Shorter-side size before cropping: 256 for 224 (and 512/448, 438/384).

    >>> default_resize_size(224), default_resize_size(384)
    (256, 438)
    """
    return image_size * 8 // 7


def resize_shorter_side(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resizes so the shorter side is `size`, keeping the aspect ratio.

    Follows torchvision's `Resize(size)` on a PIL image: the longer side is
    `int(size * long / short)`, the filter is antialiased bilinear, and the
    result is rounded back to uint8.

    >>> tuple(resize_shorter_side(tf.zeros([375, 500, 3], tf.uint8), 256).shape)
    (256, 341, 3)
    """
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short = tf.minimum(height, width)
    scale = tf.cast(size, tf.float64) / tf.cast(short, tf.float64)
    long_side = tf.cast(tf.cast(tf.maximum(height, width), tf.float64) * scale, tf.int32)
    new_height = tf.where(height <= width, size, long_side)
    new_width = tf.where(height <= width, long_side, size)
    resized = tf.image.resize(
        image, tf.stack([new_height, new_width]), method="bilinear", antialias=True
    )
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    resized.set_shape([None, None, image.shape[-1]])
    return resized


def center_crop(image: tf.Tensor, crop_size: int) -> tf.Tensor:
    """Crops the central `crop_size` square (offsets rounded as torchvision).

    >>> tuple(center_crop(tf.zeros([256, 341, 3]), 224).shape)
    (224, 224, 3)
    """
    shape = tf.shape(image)
    top = tf.cast(tf.round(tf.cast(shape[0] - crop_size, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - crop_size, tf.float32) / 2.0), tf.int32)
    return tf.image.crop_to_bounding_box(image, top, left, crop_size, crop_size)


def random_crop_and_flip(image: tf.Tensor, crop_size: int, seed: tf.Tensor) -> tf.Tensor:
    """Uniform random `crop_size` square crop, then a horizontal flip with p=0.5.

    `seed` is a stateless seed of shape [2]; the same seed gives the same crop
    and flip.

    >>> out = random_crop_and_flip(tf.zeros([256, 300, 3]), 224, tf.constant([1, 2]))
    >>> tuple(out.shape)
    (224, 224, 3)
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    channels = image.shape[-1]
    image = tf.image.stateless_random_crop(image, [crop_size, crop_size, channels], crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def fgvc_train_transform(
    image: tf.Tensor, seed: tf.Tensor, image_size: int, resize_size: int | None = None
) -> tf.Tensor:
    """FGVC training transform: resize 256 -> random crop 224 -> flip -> normalize.

    >>> out = fgvc_train_transform(tf.zeros([375, 500, 3], tf.uint8), tf.constant([0, 1]), 224)
    >>> tuple(out.shape), out.dtype.name
    ((224, 224, 3), 'float32')
    """
    resized = resize_shorter_side(image, resize_size or default_resize_size(image_size))
    return normalize_imagenet(random_crop_and_flip(resized, image_size, seed))


def fgvc_eval_transform(
    image: tf.Tensor, image_size: int, resize_size: int | None = None
) -> tf.Tensor:
    """FGVC evaluation transform: resize 256 -> centre crop 224 -> normalize.

    >>> tuple(fgvc_eval_transform(tf.zeros([375, 500, 3], tf.uint8), 224).shape)
    (224, 224, 3)
    """
    resized = resize_shorter_side(image, resize_size or default_resize_size(image_size))
    return normalize_imagenet(center_crop(resized, image_size))


# ---------------------------------------------------------------------------
# The common pipeline tail.
# ---------------------------------------------------------------------------


def fits_in_cache(
    num_examples: int, bytes_per_example: int, budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES
) -> bool:
    """Whether `num_examples` cached examples of that size fit the budget.

    >>> fits_in_cache(1000, 224 * 224 * 3 * 4), fits_in_cache(10000, 224 * 224 * 3 * 4)
    (True, False)
    """
    return num_examples * bytes_per_example <= budget_bytes


def batch_pipeline(
    examples: tf.data.Dataset,
    *,
    prepare: Callable[..., tuple[tf.Tensor, tf.Tensor]],
    batch_size: int,
    training: bool,
    seed: int | None,
    augment: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None,
    cache: bool = False,
    shuffle_buffer_size: int | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Turns raw examples into batches of (image float32 [B,H,W,3], label int32 [B]).

    Args:
      examples: unbatched dataset of raw examples, one epoch, fixed order.
      prepare: the deterministic per-example stage (decode, label mapping,
        resize...), called as `prepare(example)` (or `prepare(*example)` for
        tuple elements); returns `(image, label)`. Runs in parallel; its
        output is what gets cached.
      batch_size: examples per batch.
      training: shuffle (and augment) when True; keep the order otherwise.
      seed: seed of the shuffle order and of the augmentation; `None` draws a
        fresh one (not reproducible).
      augment: optional random stage for training, `augment(image, seed)`
        with a stateless seed of shape [2]; the seeds come from a seeded
        stream that differs every epoch.
      cache: keep the prepared examples in memory after the first epoch.
      shuffle_buffer_size: defaults to the whole split up to 10,000.
      drop_remainder: defaults to `training` (static batch shape for training;
        every example for evaluation).

    Returns:
      The batched, prefetched `tf.data.Dataset` (one epoch per iteration).
    """
    if drop_remainder is None:
        drop_remainder = training

    def call_prepare(*element):
        image, label = prepare(*element)
        return image, tf.cast(label, tf.int32)

    if shuffle_buffer_size is None:
        cardinality = int(examples.cardinality())
        shuffle_buffer_size = (
            min(cardinality, DEFAULT_SHUFFLE_BUFFER_SIZE)
            if cardinality > 0
            else DEFAULT_SHUFFLE_BUFFER_SIZE
        )

    def shuffled(ds: tf.data.Dataset) -> tf.data.Dataset:
        return ds.shuffle(shuffle_buffer_size, seed=seed, reshuffle_each_iteration=True)

    if cache:
        ds = examples.map(call_prepare, num_parallel_calls=AUTOTUNE).cache()
        if training:
            ds = shuffled(ds)
    else:
        # Shuffling raw (encoded) records before the expensive stage keeps the
        # shuffle buffer small in memory.
        ds = shuffled(examples) if training else examples
        ds = ds.map(call_prepare, num_parallel_calls=AUTOTUNE)

    if training and augment is not None:
        augment_seed = None if seed is None else seed + 1
        seeds = tf.data.Dataset.random(seed=augment_seed, rerandomize_each_iteration=True).batch(
            2, drop_remainder=True
        )

        def call_augment(example, example_seed):
            image, label = example
            return augment(image, example_seed), label

        ds = tf.data.Dataset.zip((ds, seeds)).map(call_augment, num_parallel_calls=AUTOTUNE)

    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


# ---------------------------------------------------------------------------
# Reading prepared TFDS datasets.
# ---------------------------------------------------------------------------


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset a task needs is not prepared in `data_dir`."""


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """Where a task's images come from in TFDS.

    Attributes:
      task: the kprefix task name, for messages (e.g. "vtab/cifar100").
      tfds_name: TFDS name with config and version pattern, e.g.
        "eurosat/rgb:2.*.*" or "kitti:3.2.0".
      split_sizes: sizes of the official TFDS splits the protocol relies on;
        a prepared dataset with other sizes is a different dataset.
      manual_download: the TFDS builder needs files downloaded by hand.
      builder_module: module to import so that TFDS knows the builder (for
        builders that are not part of TFDS).
    """

    task: str
    tfds_name: str
    split_sizes: Mapping[str, int]
    manual_download: bool = False
    builder_module: str | None = None


def _resolved_name(builder) -> str:
    config = builder.builder_config.name if builder.builder_config else None
    name = builder.name if config is None else f"{builder.name}/{config}"
    return f"{name}:{builder.version}"


def preparation_instructions(
    source: TfdsSource, builder, data_dir: str | None, manual_dir: str | None
) -> str:
    """The exact commands that prepare `source` in `data_dir`."""
    full_name = _resolved_name(builder)
    data_root = data_dir or str(builder.data_dir_root)
    manual = manual_dir or "/path/to/manual_dir"
    command = ["tfds", "build", full_name, f"--data_dir={data_root}"]
    if source.builder_module:
        command.append(f"--imports={source.builder_module}")
    if source.manual_download:
        command.append(f"--manual_dir={manual}")
    python_args = [json.dumps(source.task), f"data_dir={json.dumps(data_root)}"]
    if source.manual_download:
        python_args.append(f"manual_dir={json.dumps(manual)}")
    package = "vtab" if source.task.startswith("vtab/") else "fgvc"
    python_call = f"from kprefix.data import {package}; {package}.prepare({', '.join(python_args)})"
    lines = [
        (
            f"Dataset {source.task!r} needs the TFDS dataset {full_name}, which is not "
            f"prepared in data_dir {data_root!r}."
        ),
        "Prepare it once with:",
        "  " + shlex.join(command),
        "or, from Python:",
        "  python -c " + shlex.quote(python_call),
    ]
    if source.manual_download:
        instructions = getattr(type(builder), "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or ""
        lines += [
            f"{full_name} cannot be downloaded automatically; first place its files in {manual}:",
            textwrap.indent(textwrap.dedent(instructions).strip(), "  "),
        ]
    return "\n".join(lines)


def tfds_builder(source: TfdsSource, data_dir: str | None = None):
    """Returns the TFDS builder of `source` (registering custom builders)."""
    import importlib

    import tensorflow_datasets as tfds

    if source.builder_module:
        importlib.import_module(source.builder_module)
    return tfds.builder(source.tfds_name, data_dir=data_dir)


def prepare_tfds(
    source: TfdsSource, data_dir: str | None = None, manual_dir: str | None = None
) -> None:
    """Downloads (or reads from `manual_dir`) and prepares the dataset once."""
    import tensorflow_datasets as tfds

    builder = tfds_builder(source, data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    builder.download_and_prepare(download_config=download_config)


def check_split_sizes(source: TfdsSource, builder) -> None:
    """Raises if a prepared dataset's split sizes differ from the protocol's.

    Builders without recorded split sizes (nothing prepared yet, or test
    doubles) pass.
    """
    recorded = {name: info.num_examples for name, info in builder.info.splits.items()}
    for split, expected in source.split_sizes.items():
        if split in recorded and recorded[split] != expected:
            raise ValueError(
                f"{source.task}: the prepared TFDS dataset {_resolved_name(builder)} has "
                f"{recorded[split]} examples in its {split!r} split, but the protocol "
                f"expects {expected}. This is a different version of the data; "
                f"prepare {source.tfds_name} as stated."
            )


def read_tfds_split(
    source: TfdsSource,
    split: str,
    *,
    features: Mapping[str, Any],
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> tf.data.Dataset:
    """Reads `split` of a prepared TFDS dataset, in file order, without decoding images.

    Args:
      source: the dataset.
      split: a TFDS split string such as "train[:800]+train[45000:45200]".
      features: the feature keys to read, in `tfds.decode.PartialDecoding`
        form (e.g. `{"image": True, "label": True}`); "image" stays encoded.
      data_dir: TFDS data directory (local path or gs://).
      manual_dir: only used in the error message.

    Raises:
      DatasetNotPreparedError: the dataset is not prepared in `data_dir`.
    """
    import tensorflow_datasets as tfds

    builder = tfds_builder(source, data_dir)
    check_split_sizes(source, builder)
    decoders = tfds.decode.PartialDecoding(
        dict(features), decoders={"image": tfds.decode.SkipDecoding()}
    )
    read_config = tfds.ReadConfig(try_autocache=False)
    try:
        return builder.as_dataset(
            split=split, decoders=decoders, read_config=read_config, shuffle_files=False
        )
    except AssertionError as error:
        # TFDS reports a missing dataset with an AssertionError.
        if builder.is_prepared():
            raise
        raise DatasetNotPreparedError(
            preparation_instructions(source, builder, data_dir, manual_dir)
        ) from error


def split_string(slices: Sequence[tuple[str, int, int]], split_sizes: Mapping[str, int]) -> str:
    """Renders (split, start, stop) slices as a TFDS split string.

    >>> split_string([("train", 0, 800), ("train", 45000, 45200)], {"train": 50000})
    'train[:800]+train[45000:45200]'
    >>> split_string([("test", 0, 10000)], {"test": 10000})
    'test'
    """
    parts = []
    for name, start, stop in slices:
        if start == 0 and stop == split_sizes[name]:
            parts.append(name)
        elif start == 0:
            parts.append(f"{name}[:{stop}]")
        else:
            parts.append(f"{name}[{start}:{stop}]")
    return "+".join(parts)
