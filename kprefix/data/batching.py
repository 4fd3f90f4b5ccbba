"""Keeping the last, partial training batch without changing batch shapes.

PyTorch's `DataLoader(drop_last=False)` trains on a smaller last batch and
averages its loss over the examples it has. XLA and TPUs need one batch
shape, so `pad_to_full_batch` fills a partial batch with zero rows and gives
each example a sample weight: `batch_size / n` for the `n` real examples,
0 for the padding. Keras's default loss reduction (`sum_over_batch_size`)
divides the weighted sum by the full batch size, so the loss of a padded
batch is the mean over its real examples only, the reference's value; full
batches get weight 1 and are unchanged. Under `tf.distribute` the per-replica
losses are divided by the number of replicas and summed, which keeps the
result the mean over the real examples of the global batch.

Example:

>>> import tensorflow as tf
>>> from kprefix.data.batching import pad_to_full_batch
>>> ds = tf.data.Dataset.range(5).map(lambda i: (tf.cast(i, tf.float32), i)).batch(2)
>>> [w.numpy().tolist() for _, _, w in ds.map(pad_to_full_batch(2))]
[[1.0, 1.0], [1.0, 1.0], [2.0, 0.0]]
"""

import math

import tensorflow as tf


def num_batches(num_examples, batch_size, drop_remainder):
    """Batches per epoch: floor with `drop_remainder`, else ceil.

    >>> num_batches(1000, 128, True), num_batches(1000, 128, False)
    (7, 8)
    """
    if drop_remainder:
        return num_examples // batch_size
    return math.ceil(num_examples / batch_size)


def pad_to_full_batch(batch_size):
    """A `Dataset.map` function: `(x, y[, w])` -> `(x, y, w)` of `batch_size` rows.

    `x` may be a tensor or a nested structure; every tensor is padded with
    zeros along its first axis. An existing per-row or per-token weight `w`
    is multiplied by the row weight described in the module doc.
    """

    def pad(x, y, sample_weight=None):
        rows = tf.shape(y)[0]
        missing = batch_size - rows

        def pad_rows(tensor):
            paddings = tf.concat([[[0, missing]], tf.zeros([tf.rank(tensor) - 1, 2], tf.int32)],
                                 axis=0)
            padded = tf.pad(tensor, paddings)
            padded.set_shape([batch_size] + tensor.shape[1:].as_list())
            return padded

        row_weight = tf.concat([
            tf.fill([rows], tf.cast(batch_size, tf.float32) / tf.cast(rows, tf.float32)),
            tf.zeros([missing], tf.float32)], axis=0)
        row_weight.set_shape([batch_size])
        if sample_weight is None:
            weight = row_weight
        else:
            weight = pad_rows(tf.cast(sample_weight, tf.float32))
            weight *= tf.reshape(row_weight, [batch_size] + [1] * (weight.shape.rank - 1))
        return tf.nest.map_structure(pad_rows, x), pad_rows(y), weight

    return pad
