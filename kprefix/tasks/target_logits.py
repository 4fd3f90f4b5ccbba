"""Training a causal LM with logits only where the loss reads them.

GPT-2's output layer maps each position to 50,257 logits, about a third of
the model's multiply-adds per position, and its float32 logits, softmax and
gradient take several times `batch x length x 50,257 x 4` bytes. Table-to-text
puts its loss on the target tokens only (under half of a bucketed E2E batch,
a fifth of a 256-token fixed one), so `TargetLogitsTraining.train_step`
gathers the final hidden states at the positions of non-zero token weight
and applies the output layer to those alone. The loss, its gradients and the
weighted metrics are those of the full logits (`target_batch`).

The gathered block has a data-dependent size, which XLA cannot compile; a
model compiled with `jit_compile` trains on the full logits as before.

Example: the gathered batch gives the full batch's loss.

>>> import numpy as np
>>> import tensorflow as tf
>>> from kprefix.tasks.target_logits import target_batch
>>> from kprefix.tasks.text_loss import SequenceSumCrossentropy
>>> logits = np.log(np.full([2, 4, 3], 1 / 3, "float32"))
>>> labels = np.zeros([2, 4], "int32")
>>> weights = np.array([[0, 1, 1, 0], [0, 0, 1, 0]], "float32")
>>> positions, gathered_labels, gathered_weights = target_batch(labels, weights)
>>> gathered_logits = tf.gather_nd(logits, positions)[None]
>>> loss = SequenceSumCrossentropy()
>>> full = float(loss(labels, logits, weights))
>>> part = float(loss(gathered_labels, gathered_logits, gathered_weights))
>>> round(full, 5) == round(part, 5) == round(float(1.5 * np.log(3)), 5)
True
"""

import tensorflow as tf

from kprefix.tasks.text_loss import SequenceSumCrossentropy


def target_batch(labels, weights):
    """`(positions, labels, weights)` of the positions with non-zero weight,
    as one row for `SequenceSumCrossentropy`.

    `positions` are `[n + 1, 2]` (row, column) indices; the labels and
    weights are `[1, n + 1]`, the weights divided by the batch's row count, so
    that the row's sequence sum is the batch's loss. The last position is
    (0, 0) with weight 0: a batch without target tokens (all padding) still
    gives a block to average over, where an empty one would make Keras's
    weighted metrics NaN for the rest of the epoch. Row 0 of `positions` is
    the batch's first target token: Keras's loss tracker counts rows by the
    first input.
    """
    targets = tf.where(tf.not_equal(weights, 0))
    rows = tf.cast(tf.shape(weights)[0], weights.dtype)
    gathered_weights = tf.concat([tf.gather_nd(weights, targets) / rows,
                                  tf.zeros([1], weights.dtype)], axis=0)
    positions = tf.concat([targets, tf.zeros([1, 2], targets.dtype)], axis=0)
    return positions, tf.gather_nd(labels, positions)[None], gathered_weights[None]


class TargetLogitsTraining:
    """Mixed in front of a keras-hub causal LM task: `fit` computes logits only
    at the target positions when the loss is `SequenceSumCrossentropy` with
    token weights and the step is not XLA-compiled (see the module doc)."""

    gathers_target_logits = True  # False: full logits, as keras-hub trains
    _target_positions = None

    def train_step(self, data):
        x, labels, weights = _unpack(data)
        if (not self.gathers_target_logits or weights is None or self.jit_compile
                or not isinstance(self.loss, SequenceSumCrossentropy)):
            return super().train_step(data)
        positions, labels, weights = target_batch(labels, weights)
        # Read by `call` while Keras traces its step; the step's own tensor.
        self._target_positions = positions
        try:
            return super().train_step((x, labels, weights))
        finally:
            self._target_positions = None

    def call(self, inputs, training=None, mask=None):
        if self._target_positions is None:
            return super().call(inputs, training=training, mask=mask)
        hidden = self.backbone(inputs, training=training)
        hidden = tf.gather_nd(hidden, self._target_positions)[None]
        return self.backbone.token_embedding(hidden, reverse=True)


def _unpack(data):
    if isinstance(data, tuple) and len(data) == 3:
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return (*data, None)
    return data, None, None
