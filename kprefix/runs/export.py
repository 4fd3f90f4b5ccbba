"""Export: fold the prefixes (or merge LoRA), then write a SavedModel for serving.

The SavedModel needs neither kprefix nor keras-hub to load: its
`serving_default` signature declares float32 `images` of shape
`(None, H, W, 3)`, already preprocessed as in training, and returns class
probabilities under the key `probabilities`. Images of another rank, size or
channel count are refused with an `InvalidArgumentError` that names the
expected shape, also when fed to the graph directly (as TensorFlow Serving
does). The text export's signature declares `text` as `(None,)` strings.

Exports are written to a sibling folder and moved into place at the end
(`kprefix.runs.files.replace_directory`), so a kill at any moment leaves the
previous export or the new one, never a broken one. A model whose weights
hold NaN or infinity is never exported.

Example (in a fresh process, no kprefix import):

    import tensorflow as tf
    serving = tf.saved_model.load("runs/quickstart/export").signatures["serving_default"]
    probabilities = serving(images=tf.zeros((1, 16, 16, 3)))["probabilities"]
"""

import functools

import keras
import tensorflow as tf

from kprefix.runs.checkpoints import NonFiniteState
from kprefix.methods import folded_for_export
from kprefix.runs.files import exists, partial_directory, recover_directory, replace_directory


def write_atomically(save, directory, writer=True):
    """Calls `save(folder)` on a fresh sibling folder, then moves it to `directory`.

    With `writer=False` (a worker other than the chief, which must still run
    the same steps) the folder is deleted instead, so only the chief's copy
    remains. On an error the partial folder is removed and `directory` is
    untouched.
    """
    if writer:
        recover_directory(directory)
    partial = partial_directory(directory)
    try:
        save(partial)
    except BaseException:
        if exists(partial):
            tf.io.gfile.rmtree(partial)
        raise
    if writer:
        replace_directory(partial, directory)
    else:
        tf.io.gfile.rmtree(partial)


def _require_finite(model):
    # Checked where the weights live: a float64 host copy of GPT-2's
    # embedding alone would take 300 MB.
    bad = [w.path for w in model.weights if "float" in str(w.dtype)
           and not bool(tf.reduce_all(tf.math.is_finite(w)))]
    if bad:
        raise NonFiniteState(f"not exporting: {', '.join(bad[:3])} hold NaN or infinity.")


def export_image_classifier(model, directory, writer=True):
    """Folds `model`'s prefixes (merges LoRA) and writes the serving SavedModel to `directory`.

    Returns the folded model (the one that was exported).
    """
    folded = folded_for_export(model)
    _require_finite(folded)
    image_shape = tuple(int(d) for d in folded.backbone.image_shape)
    expected = ", ".join(map(str, image_shape))

    def serve(images):
        # The signature declares the shape, but TensorFlow Serving and eager
        # callers run the graph without checking it, and a kernel given another
        # rank can abort the process. The check compares the shape as text
        # (arithmetic on the rank, a constant under the declaration, would be
        # folded away), and the model reads the images only through
        # ensure_shape, which runs after the check, so no kernel sees them first.
        got = tf.strings.reduce_join(tf.strings.as_string(tf.shape(images)[1:]), separator=", ")
        check = tf.debugging.Assert(
            tf.equal(got, expected),
            [f"images must have shape (batch, {expected}); got", tf.shape(images)],
        )
        with tf.control_dependencies([check]):
            images = tf.ensure_shape(images, (None,) + image_shape)
        logits = folded(images, training=False)
        return {"probabilities": keras.ops.softmax(keras.ops.cast(logits, "float32"), axis=-1)}

    archive = keras.export.ExportArchive()
    archive.track(folded)
    archive.add_endpoint(
        "serving_default",
        serve,
        input_signature=[tf.TensorSpec((None,) + image_shape, tf.float32, name="images")],
    )
    write_atomically(lambda folder: archive.write_out(folder, verbose=False), directory, writer)
    return folded


def prompt_widths(source_length):
    """The few prompt widths a serving batch is cut to: 1/8, 1/4, 1/2 and all
    of `source_length`.

    >>> prompt_widths(128), prompt_widths(6)
    ((16, 32, 64, 128), (1, 3, 6))
    """
    return tuple(sorted({max(1, source_length // d) for d in (8, 4, 2, 1)}))


def export_text_generator(model, tokenizer, directory, source_length, settings, write=True,
                          writer=True, reference_framing=False):
    """Folds `model`'s prefixes (merges LoRA) and builds a text-in/text-out serving function.

    Tokenization, beam search (`kprefix.tasks.decoding`) and detokenization all run
    in the graph. Each batch is cut to the shortest of `prompt_widths` that
    holds its longest prompt, so short prompts do not pay for `source_length`. `settings` are the decoding keyword arguments. With `write`
    the SavedModel goes to `directory`; its `serving_default` signature takes
    `text` (a batch of source strings) and returns `text` (the generated
    strings) and `score` (their length-normalized log-probabilities).

    `reference_framing` (GPT-2): prompts framed as in training
    (`kprefix.tasks.text_features`); the generated text is stripped of the
    spaces that framing puts around it.

    Returns the `tf.function` that is (or would be) exported, so in-process
    decoding runs exactly the exported computation.
    """
    import keras_hub

    from kprefix.tasks import decoding
    from kprefix.tasks.text_features import prompt_features

    folded = folded_for_export(model)
    _require_finite(folded)
    is_causal = isinstance(folded, keras_hub.models.GPT2CausalLM)
    special = {tokenizer.end_token_id}
    if not is_causal:
        special |= {tokenizer.start_token_id, tokenizer.pad_token_id}
        packer = keras_hub.layers.StartEndPacker(
            sequence_length=source_length, start_value=tokenizer.start_token_id,
            end_value=tokenizer.end_token_id, pad_value=tokenizer.pad_token_id,
            return_padding_mask=True,
        )

    generate = decoding.generate_gpt2 if is_causal else decoding.generate_bart
    # Each batch of prompts is cut to the shortest of these widths that holds
    # its longest prompt: one static shape per width (one XLA/TPU program).
    widths = prompt_widths(source_length)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(text):
        if is_causal:
            prompt, lengths = prompt_features(tokenizer, text, source_length, reference_framing)
            mask = tf.sequence_mask(lengths, source_length)
        else:
            prompt, mask = packer(tokenizer(text))
            lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        longest = tf.reduce_max(lengths)  # an empty batch takes the first width
        branch = tf.searchsorted(tf.constant(widths, lengths.dtype), longest[None])[0]
        tokens, scores = tf.switch_case(
            tf.cast(branch, tf.int32),
            [functools.partial(generate, folded, prompt[:, :width], mask[:, :width], **settings)
             for width in widths])
        keep = tf.reduce_all(tokens[..., None] != tf.constant(sorted(special), tokens.dtype),
                             axis=-1)
        generated = tokenizer.detokenize(tf.ragged.boolean_mask(tokens, keep))
        if reference_framing:
            generated = tf.strings.strip(generated)
        return {"text": generated, "score": scores}

    if write:
        module = tf.Module()
        module.model = folded
        module.tokenizer = tokenizer
        # The signature is this trace, the one in-process calls reuse: saving
        # the `tf.function` itself would trace the whole beam search again.
        traced = serve.get_concrete_function()
        write_atomically(
            lambda folder: tf.saved_model.save(module, folder,
                                               signatures={"serving_default": traced}),
            directory, writer)
    return serve
