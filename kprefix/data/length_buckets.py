"""Length buckets: training batches padded to a few lengths, not to the maximum.

Text examples vary in length (E2E: about 60 tokens of a 256-token window),
so padding every batch to the configured maximum spends most of a step on
padding. Here each batch is padded to the smallest of a few *bucket* lengths
that fits its longest example. Each bucket is one static shape, so XLA and
TPUs compile once per bucket, and the losses of `kprefix.tasks.text_loss`
do not depend on the padded length, so a batch's loss is unchanged.

Batches are formed as Hugging Face's `group_by_length` forms them: the
epoch's shuffled order is cut into windows of `window_batches` batches, each
window is sorted by bucket, cut into batches, and the batches are shuffled.
Everything is a function of the (seed, epoch) pair, in graph ops, so a
resumed run replays an epoch exactly, and the number of batches is known in
advance (`kprefix.data.batching.num_batches`).

A text task may pad several axes (BART: the encoder and decoder lengths).
Bucket `i` then pads each axis to its own `i`-th boundary, and an example
goes to the first bucket that fits it on every axis.

Measuring every example would tokenize the whole training set before the
first step (seconds to minutes). So `auto` measures a fixed sample of
`SAMPLE_SIZE` examples (`length_sample`): its quantiles give the
boundaries, and the other examples' lengths, used only to group similar
examples, are estimated from their character counts
(`estimated_lengths`). Each batch is padded to the first bucket that fits
its tokenized examples (`fitting_bucket`), so an estimate never cuts a
token; it can only place an example among longer or shorter ones.

Example:

>>> import numpy as np
>>> from kprefix.data.length_buckets import auto_boundaries, bucket_ids, epoch_batches
>>> lengths = np.array([5, 7, 30, 31, 6, 4])
>>> boundaries = auto_boundaries(lengths, maximum=64, max_buckets=3)
>>> boundaries
(8, 32, 64)
>>> ids = bucket_ids([lengths], [boundaries])
>>> ids.tolist()
[0, 0, 1, 1, 0, 0]
>>> batches = epoch_batches(ids, batch_size=3, seed=0, epoch=0, drop_remainder=True)
>>> sorted(sorted(ids[b].tolist()) for b, _ in batches.as_numpy_iterator())
[[0, 0, 0], [0, 1, 1]]
"""

import numpy as np
import tensorflow as tf

from kprefix.data.batching import num_batches

# Batches per sorted window, as Hugging Face's LengthGroupedSampler (megabatches of 50).
WINDOW_BATCHES = 50
# Examples tokenized to choose the `auto` boundaries; quantiles of 2,000
# lengths are within about a percentile of the whole set's.
SAMPLE_SIZE = 2000


def length_sample(count, size=SAMPLE_SIZE, seed=0):
    """Sorted indices of a fixed random sample of `size` of `count` examples
    (all of them when `count <= size`).

    >>> length_sample(5).tolist(), length_sample(10, size=3).tolist()
    ([0, 1, 2, 3, 4], [5, 6, 9])
    """
    if count <= size:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def estimated_lengths(characters, sample, measured):
    """Token lengths of all examples: `measured` for those in `sample`, the
    others from their `characters` at the sample's tokens per character.

    >>> estimated_lengths([10, 20, 40], sample=[0, 1], measured=[3, 6]).tolist()
    [3, 6, 12]
    """
    characters = np.asarray(characters, np.float64)
    measured = np.asarray(measured)
    tokens_per_character = measured.sum() / max(characters[sample].sum(), 1.0)
    lengths = np.ceil(characters * tokens_per_character).astype(np.int64)
    lengths[sample] = measured
    return lengths


def fitting_bucket(lengths_per_axis, boundaries_per_axis):
    """The first bucket that fits every example of a batch on every axis, in
    graph ops: `lengths_per_axis` are the examples' real lengths (tensors),
    `boundaries_per_axis` the bucket lengths.

    >>> int(fitting_bucket([[5, 9]], [(8, 16, 32)]))
    1
    """
    ids = [tf.searchsorted(tf.constant(b, tf.int32),
                           tf.minimum(tf.reduce_max(tf.cast(n, tf.int32)), b[-1])[None])[0]
           for n, b in zip(lengths_per_axis, boundaries_per_axis)]
    return tf.cast(tf.reduce_max(tf.stack(ids)), tf.int32)


def auto_boundaries(lengths, maximum, max_buckets=8, multiple=8):
    """Up to `max_buckets` lengths from the quantiles of `lengths`, the last `maximum`.

    The quantiles are evenly spaced up to the longest length, so only
    examples longer than all of `lengths` (none, unless they are a sample)
    are padded to `maximum`. Each boundary is rounded up to a multiple of
    `multiple` (friendlier to matrix units) and capped at `maximum`.
    """
    lengths = np.asarray(lengths)
    levels = np.arange(1, max_buckets) / max(max_buckets - 1, 1)
    quantiles = np.quantile(lengths, levels)
    rounded = {min(maximum, int(np.ceil(max(q, 1) / multiple) * multiple)) for q in quantiles}
    return tuple(sorted(rounded | {maximum}))


def parse_length_buckets(spec, lengths, maximum, max_buckets=8):
    """The bucket lengths of `--length_buckets` for one axis.

    `spec`: 'auto' (see `auto_boundaries`), 'none' (one bucket, `maximum`),
    or comma-separated lengths; `maximum` is appended when missing and must
    not be exceeded.

    >>> parse_length_buckets("16,32", [3, 20], 128), parse_length_buckets("none", [3], 128)
    ((16, 32, 128), (128,))
    """
    if spec == "none":
        return (maximum,)
    if spec == "auto":
        return auto_boundaries(lengths, maximum, max_buckets)
    try:
        values = sorted({int(v) for v in spec.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"--length_buckets={spec!r}: use auto, none or lengths like "
                         "32,64") from None
    if not values or values[0] < 1 or values[-1] > maximum:
        raise ValueError(f"--length_buckets={spec!r}: lengths must lie in [1, {maximum}].")
    return tuple(sorted(set(values) | {maximum}))


def paired_boundaries(boundaries_per_axis):
    """The axes' bucket lengths as one list of buckets: bucket i pads each axis
    to its i-th length, the shorter lists repeating their first.

    >>> paired_boundaries([(64, 128, 512), (64,)])
    [(64, 128, 512), (64, 64, 64)]
    """
    count = max(len(b) for b in boundaries_per_axis)
    return [(b[0],) * (count - len(b)) + tuple(b) for b in boundaries_per_axis]


def bucket_ids(lengths_per_axis, boundaries_per_axis):
    """The first bucket that fits each example on every axis (numpy int array)."""
    ids = [np.searchsorted(np.asarray(b), np.minimum(np.asarray(n), b[-1]), side="left")
           for n, b in zip(lengths_per_axis, boundaries_per_axis)]
    return np.max(ids, axis=0).astype(np.int32)


def epoch_batches(bucket_of_example, batch_size, seed, epoch, drop_remainder,
                  window_batches=WINDOW_BATCHES):
    """A `tf.data.Dataset` of `(indices, bucket)`: one epoch's batches.

    `indices` are the examples of a batch (fewer than `batch_size` only in the
    last batch, when `drop_remainder` is false); `bucket` is the largest
    bucket id among them. `epoch` may be a tensor (it is inside
    `Dataset.flat_map`); the batches are a function of `(seed, epoch)` only.
    """
    buckets = tf.constant(bucket_of_example, tf.int32)
    count = len(bucket_of_example)
    steps = num_batches(count, batch_size, drop_remainder)
    key = tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=key)
    used = steps * batch_size if drop_remainder else count
    order = order[:used]
    # Sort each window by bucket (stable, so ties keep the shuffled order).
    window = window_batches * batch_size
    windows = -(-used // window)
    padded = tf.concat([order, tf.fill([windows * window - used], -1)], axis=0)
    padded = tf.reshape(padded, [windows, window])
    # Missing slots (-1) sort after every real example and are removed below.
    keys = tf.where(padded >= 0, tf.gather(buckets, tf.maximum(padded, 0)), tf.int32.max)
    ranked = tf.gather(padded, tf.argsort(keys, axis=1, stable=True), batch_dims=1)
    ranked = tf.boolean_mask(ranked, ranked >= 0)
    if np.max(bucket_of_example, initial=0) == 0:
        # One bucket: the batches are the shuffled order cut in turn, as without buckets.
        batch_order = tf.range(steps)
    else:
        # Shuffle the batches themselves, so that buckets are mixed over the epoch.
        batch_order = tf.random.experimental.stateless_shuffle(
            tf.range(steps), seed=tf.random.experimental.stateless_fold_in(key, 1))
    starts = batch_order * batch_size
    ends = tf.minimum(starts + batch_size, used)

    def batch(start, end):
        indices = ranked[start:end]
        return indices, tf.reduce_max(tf.gather(buckets, indices))

    return tf.data.Dataset.from_tensor_slices((starts, ends)).map(batch)
