"""How the text tasks normalise their token losses, as the authors' code does.

Two normalisations, chosen by `--text_loss`, both independent of how far a
batch is padded and of how many replicas share it:

- `sequence_sum`: the sum of an example's target-token losses, averaged over
  the real examples of the global batch. This is the authors' GPT-2 objective
  (`objective_mode=1`: Minhchuyentoancbn/ReparamPrefix `NLP/gpt2/train_e2e.py`
  32, `modeling_gpt2.py` 1006-1011, then the trainer's `.mean()` over the
  batch), so their gradient clip of 1.0 and AdamW's epsilon act at the same
  scale.
- `token_mean`: the mean over all target tokens of the global batch,
  `torch.nn.CrossEntropyLoss(ignore_index=pad)` as the authors' BART code
  computes it (`NLP/seq2seq/finetune.py` 170-176, label smoothing 0).

Both are one Keras loss, `SequenceSumCrossentropy`, fed different token
weights: `token_mean` rescales each global batch's weights in the input
pipeline (`token_mean_weights`) so that they sum to the number of rows.
Keras divides a per-replica loss by the number of replicas and sums the
replicas' gradients, so a loss that is "sum over this replica's rows,
divided by the global row count" per replica adds up to the global value;
the weights are computed before the batch is split, so they are global too.

Example: two sequences padded to 4 and to 6 tokens give the same loss.

>>> import numpy as np
>>> from kprefix.tasks.text_loss import SequenceSumCrossentropy
>>> loss = SequenceSumCrossentropy()
>>> logits = np.log(np.full([2, 6, 3], 1 / 3, "float32"))
>>> labels = np.zeros([2, 6], "int32")
>>> weights = np.array([[0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 0, 0]], "float32")
>>> short = float(loss(labels[:, :4], logits[:, :4], weights[:, :4]))
>>> long = float(loss(labels, logits, weights))
>>> round(short, 5), round(long, 5), round(float(2 * np.log(3)), 5)
(2.19722, 2.19722, 2.19722)
"""

import keras
import tensorflow as tf
from keras import ops

from kprefix.runs.config import TEXT_LOSSES


# The authors' normalisation for each text task (see the module doc).
REFERENCE_TEXT_LOSS = {"table_to_text": "sequence_sum", "summarization": "token_mean"}


class SequenceSumCrossentropy(keras.losses.Loss):
    """Sparse cross-entropy on logits, summed over each sequence's weighted
    tokens and averaged over the batch's rows.

    Padding rows of a kept last batch carry weight 0 and real rows
    `batch / n` (`kprefix.data.batching.pad_to_full_batch`), so the average is
    over the real examples. Keras's `sum_over_batch_size` divides by every
    element of the `[batch, length]` loss; multiplying each token's loss by
    the length first leaves the division by the batch alone, independent of
    the padded length.
    """

    def __init__(self, name="sequence_sum_crossentropy", **kwargs):
        kwargs.setdefault("reduction", "sum_over_batch_size")
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        per_token = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        length = ops.cast(ops.shape(per_token)[-1], per_token.dtype)
        return per_token * length


def token_mean_weights(x, labels, weights):
    """A `Dataset.map` function: token weights rescaled to sum to the row count.

    With `SequenceSumCrossentropy` the loss becomes the mean over the batch's
    weighted tokens. Apply it to whole global batches, after any padding of a
    partial batch.
    """
    rows = tf.cast(tf.shape(weights)[0], weights.dtype)
    return x, labels, weights * tf.math.divide_no_nan(rows, tf.reduce_sum(weights))


def resolve_text_loss(name, task):
    """`name`, or the authors' normalisation for `task` when `name` is 'auto'.

    >>> resolve_text_loss("auto", "summarization"), resolve_text_loss("sequence_sum", "summarization")
    ('token_mean', 'sequence_sum')
    """
    if name == "auto":
        return REFERENCE_TEXT_LOSS[task]
    if name not in TEXT_LOSSES:
        raise ValueError(f"Unknown --text_loss={name!r}; choose auto or one of "
                         f"{', '.join(TEXT_LOSSES)}.")
    return name
