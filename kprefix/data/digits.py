"""scikit-learn's 8x8 handwritten digits as RGB image arrays (shipped with scikit-learn).

The built-in `digits` task (`kprefix.data.image_tasks`) and the `digits` task
of the mini-VTAB (`kprefix.data.synthetic_images`) both read them from here.

Example:

>>> from kprefix.data.digits import digits_arrays
>>> (train_x, train_y), (test_x, test_y) = digits_arrays(16)
>>> train_x.shape, test_x.shape, float(train_x.min()), float(train_x.max())
((1438, 16, 16, 3), (359, 16, 16, 3), -1.0, 1.0)
"""

import numpy as np
import tensorflow as tf


def digits_arrays(image_size, seed=0, test_fraction=0.2):
    """scikit-learn's digits as normalized RGB arrays, split train/test.

    Returns `((train_images, train_labels), (test_images, test_labels))`;
    images are resized to `image_size` and scaled to [-1, 1].
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype("float32")[..., None] / 16.0
    images = tf.image.resize(images, (image_size, image_size)).numpy()
    images = np.repeat(images * 2.0 - 1.0, 3, axis=-1)
    labels = digits.target.astype("int32")
    order = np.random.RandomState(seed).permutation(len(labels))
    num_test = int(round(len(labels) * test_fraction))
    test, train = order[:num_test], order[num_test:]
    return (images[train], labels[train]), (images[test], labels[test])
