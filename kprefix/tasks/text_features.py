"""Token features for training the language models on (source, target) text.

GPT-2 (table-to-text) trains on `source <eos> target <eos>` with the loss on
the target and its end token only. With `reference_framing` the texts are
framed as Li & Liang's data-to-text datasets build them,
`' {source} <eos> {target} <eos>'` tokenized whole: each side gets a leading
and a trailing space (the latter its own token before `<eos>`), and prompts
for generation are `' {source} <eos>'`. BART (summarization) uses keras-hub's own
`BartSeq2SeqLMPreprocessor` (source to the encoder, target to the decoder).
All outputs have fixed shapes, as XLA and TPUs need, and padding masks are
int32 (the backbones' input dtype): Keras's first `fit` under a
multi-device strategy averages a batch over the replicas, which fails on bool
tensors. The functions run in a
graph (a `tf.data` map or a `tf.function`), where keras-hub tokenizers return
ragged tensors.

Example:

>>> import tensorflow as tf
>>> from kprefix.tasks.text_features import causal_lm_features
>>> from kprefix.tasks.tokenizers import load_tokenizer
>>> tokenizer = load_tokenizer("gpt2_tiny")
>>> batches = tf.data.Dataset.from_tensors((["name[A]"], ["A."])).map(
...     lambda s, t: causal_lm_features(tokenizer, s, t, sequence_length=16))
>>> x, labels, weights = next(iter(batches))
>>> [int(w) for w in weights[0]]
[0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]
"""

import keras_hub
import tensorflow as tf


def causal_lm_features(tokenizer, sources, targets, sequence_length, reference_framing=False):
    """`(x, labels, sample_weight)` for a batch of source and target strings.

    The sequence is truncated to `sequence_length + 1` tokens, then split into
    inputs and next-token labels. Weights are 1 where the label is a target
    token or the final end token. `reference_framing`: see the module doc.
    """
    end = tokenizer.end_token_id
    if reference_framing:
        source = tokenizer(tf.strings.join([" ", sources, " "]))
        target = tokenizer(tf.strings.join([" ", targets, " "]))
    else:
        source = tokenizer(sources)
        target = tokenizer(tf.strings.join([" ", targets]))
    batch = source.nrows()
    end_column = tf.fill([batch, 1], tf.cast(end, source.dtype))
    end_column = tf.RaggedTensor.from_tensor(end_column)
    sequence = tf.concat([source, end_column, target, end_column], axis=1)
    is_target = tf.concat(
        [tf.zeros_like(source), tf.zeros_like(end_column), tf.ones_like(target),
         tf.ones_like(end_column)], axis=1)
    shape = [None, sequence_length + 1]
    sequence = sequence.to_tensor(default_value=end, shape=shape)
    present = tf.ones_like(is_target).to_tensor(default_value=0, shape=shape)
    is_target = is_target.to_tensor(default_value=0, shape=shape)
    x = {"token_ids": sequence[:, :-1], "padding_mask": tf.cast(present[:, :-1], tf.int32)}
    return x, sequence[:, 1:], tf.cast(is_target[:, 1:], tf.float32)


def prompt_features(tokenizer, sources, source_length, reference_framing=False):
    """Left-aligned prompts `source <eos>` for generation, and their lengths."""
    end = tokenizer.end_token_id
    if reference_framing:
        sources = tf.strings.join([" ", sources, " "])
    source = tokenizer(sources)[:, : source_length - 1]
    end_column = tf.RaggedTensor.from_tensor(tf.fill([source.nrows(), 1], tf.cast(end, source.dtype)))
    prompt = tf.concat([source, end_column], axis=1)
    lengths = prompt.row_lengths()
    return prompt.to_tensor(default_value=end, shape=[None, source_length]), lengths


def seq2seq_features(tokenizer, source_length, target_length):
    """`(sources, targets) -> (x, labels, sample_weight)` by keras-hub's BART
    preprocessor with the given fixed lengths; padding masks as int32 and
    token weights as float32, as `causal_lm_features` gives them."""
    preprocessor = keras_hub.models.BartSeq2SeqLMPreprocessor(
        tokenizer, encoder_sequence_length=source_length, decoder_sequence_length=target_length
    )

    def features(sources, targets):
        x, labels, weights = preprocessor({"encoder_text": sources, "decoder_text": targets})
        x = {name: tf.cast(value, tf.int32) if value.dtype == tf.bool else value
             for name, value in x.items()}
        return x, labels, tf.cast(weights, tf.float32)

    return features


def real_lengths(x):
    """The real (unpadded) length of each example on each padded axis of `x`:
    `[sequence]` for GPT-2 features, `[encoder, decoder]` for BART's."""
    if "padding_mask" in x:
        masks = [x["padding_mask"]]
    else:
        masks = [x["encoder_padding_mask"], x["decoder_padding_mask"]]
    return [tf.reduce_sum(tf.cast(mask, tf.int32), axis=1) for mask in masks]


def crop_features(x, labels, weights, lengths):
    """`(x, labels, weights)` cut to `lengths` positions per axis (as `real_lengths`).

    Only padding is cut when each length is at least the batch's longest
    example on that axis.
    """
    if "padding_mask" in x:
        (length,) = lengths
        x = {name: value[:, :length] for name, value in x.items()}
        return x, labels[:, :length], weights[:, :length]
    encoder, decoder = lengths
    x = {name: value[:, :encoder if name.startswith("encoder") else decoder]
         for name, value in x.items()}
    return x, labels[:, :decoder], weights[:, :decoder]
