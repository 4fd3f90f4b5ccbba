"""`ImageTaskData`: what training needs from an image classification task.

Three sources: the built-in `digits` task (scikit-learn's 8x8 handwritten
digits, shipped inside the package, for offline quickstarts and tests), the
rendered offline mini-VTAB `minivtab/<task>` (`kprefix.data.synthetic_images`)
and the TFDS benchmark tasks `vtab/<task>` and `fgvc/<dataset>`.

Example:

>>> from kprefix.data.image_tasks import load_image_task
>>> data = load_image_task("digits", image_size=16, batch_size=32, seed=0)
>>> data.num_classes, data.steps_per_epoch
(10, 44)
"""

import dataclasses
from typing import Callable

import tensorflow as tf

from kprefix.data import benchmark
from kprefix.data.batching import num_batches, pad_to_full_batch
from kprefix.data.digits import digits_arrays

DEFAULT_SPLITS = {
    "digits": ("train", "test"),
    "vtab": ("train800val200", "test"),
    "fgvc": ("train", "test"),
    "minivtab": ("train800val200", "test"),
}


@dataclasses.dataclass
class ImageTaskData:
    """Batched `(images float32 [B,H,W,3], labels int32 [B])` pipelines.

    Without `drop_remainder`, training batches also carry sample weights
    `float32 [B]` and the last one is padded to `B` rows (see
    `kprefix.data.batching`).

    Attributes:
        num_classes: number of classes.
        steps_per_epoch: training batches per epoch.
        make_epoch: `epoch (int64 tensor) -> dataset` of one training epoch.
        eval_dataset: the evaluation split, every example, in order.
    """

    num_classes: int
    steps_per_epoch: int
    make_epoch: Callable[[tf.Tensor], tf.data.Dataset]
    eval_dataset: tf.data.Dataset


def load_image_task(name, image_size, batch_size, seed, train_split=None,
                         eval_split=None, data_dir=None, manual_dir=None,
                         drop_remainder=True, split_file=None):
    """Training and evaluation pipelines of task `name` (see module doc).

    `drop_remainder=False` keeps the last partial training batch, padded
    with zero-weight rows; `split_file` chooses FGVC's train/val examples.
    """
    family = name.split("/")[0]
    if family not in DEFAULT_SPLITS or (family == "digits") != (name == "digits"):
        raise ValueError(
            f"Unknown --dataset={name!r}; use 'digits', 'minivtab/<task>', 'vtab/<task>' or "
            "'fgvc/<dataset>'."
        )
    default_train, default_eval = DEFAULT_SPLITS[family]
    train_split, eval_split = train_split or default_train, eval_split or default_eval
    if split_file is not None and family != "fgvc":
        raise ValueError("--split_file applies to FGVC datasets only.")
    if name == "digits":
        return _digits(image_size, batch_size, seed, train_split, eval_split, drop_remainder)
    if family == "minivtab":
        return _minivtab(name.split("/", 1)[1], image_size, batch_size, seed, train_split,
                         eval_split, drop_remainder)
    common = dict(image_size=image_size, batch_size=batch_size, data_dir=data_dir,
                  manual_dir=manual_dir)
    if split_file is not None:
        common["split_file"] = split_file
    protocol = benchmark(name)
    train = protocol.load(name, train_split, seed=seed, training=True,
                          drop_remainder=drop_remainder, **common)
    if not drop_remainder:
        train = train.map(pad_to_full_batch(batch_size))
    evaluation = protocol.load(name, eval_split, seed=seed, training=False, **common)
    # The training pipeline reshuffles and re-augments on every pass.
    return ImageTaskData(protocol.num_classes(name), int(train.cardinality()),
                         lambda epoch: train, evaluation)


def _digits(image_size, batch_size, seed, train_split, eval_split, drop_remainder=True):
    if (train_split, eval_split) != ("train", "test"):
        raise ValueError("The digits task has splits 'train' and 'test' only.")
    (train_x, train_y), (test_x, test_y) = digits_arrays(image_size)
    return _in_memory(10, (train_x, train_y), (test_x, test_y), batch_size, seed,
                      drop_remainder)


def _minivtab(task, image_size, batch_size, seed, train_split, eval_split,
              drop_remainder=True):
    from kprefix.data.synthetic_images import MINIVTAB_CLASSES, minivtab_arrays

    return _in_memory(MINIVTAB_CLASSES.get(task), minivtab_arrays(task, train_split, image_size),
                      minivtab_arrays(task, eval_split, image_size), batch_size, seed,
                      drop_remainder)


def _in_memory(num_classes, train, evaluation, batch_size, seed, drop_remainder):
    """Pipelines over NumPy `(images, labels)` pairs; the epoch order is a function of
    (seed, epoch) only."""
    (train_x, train_y), (test_x, test_y) = train, evaluation
    images, labels = tf.constant(train_x), tf.constant(train_y)

    def make_epoch(epoch):
        # The order is a function of (seed, epoch) only, so resuming is exact.
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(train_y)), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
        )
        batches = (
            tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size, drop_remainder=drop_remainder)
            .map(lambda batch: (tf.gather(images, batch), tf.gather(labels, batch)))
        )
        return batches if drop_remainder else batches.map(pad_to_full_batch(batch_size))

    evaluation = tf.data.Dataset.from_tensor_slices((test_x, test_y)).batch(batch_size)
    return ImageTaskData(num_classes, num_batches(len(train_y), batch_size, drop_remainder),
                         make_epoch, evaluation)
