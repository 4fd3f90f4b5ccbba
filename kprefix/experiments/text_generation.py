"""Text generation: GPT-2 table-to-text (E2E, WebNLG) and BART summarization (XSUM).

Trains the prefixes with the loss on the target only, decodes the evaluation
split with beam search, scores it with the official-faithful scorers, and
exports a text-in/text-out SavedModel.
"""

import json
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app

from kprefix.data import nlg
from kprefix.data.batching import num_batches, pad_to_full_batch
from kprefix.data.length_buckets import (bucket_ids, epoch_batches, estimated_lengths,
                                         fitting_bucket, length_sample, paired_boundaries,
                                         parse_length_buckets)
from kprefix.experiments.common import (apply_method, build_task, check_batching,
                                        compile_for_training, describe_parameters, fit,
                                        strategy_and_backbone)
from kprefix.runs.export import export_text_generator
from kprefix.metrics.e2e import score_e2e
from kprefix.metrics.rouge import rouge_f1
from kprefix.metrics.webnlg import (WebNLGReferences, normalize_webnlg_output,
                                    read_webnlg_references, score_webnlg)
from kprefix.tasks import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM
from kprefix.tasks.text_features import (causal_lm_features, crop_features, real_lengths,
                                         seq2seq_features)
from kprefix.tasks.text_loss import SequenceSumCrossentropy, resolve_text_loss, token_mean_weights
from kprefix.tasks.tokenizers import load_tokenizer
from kprefix.runs.cluster import cluster_role
from kprefix.runs.files import write_text

TASK_DATASETS = {"table_to_text": ("e2e", "webnlg"), "summarization": ("xsum",)}


def decoding_arguments(config, tokenizer):
    """Keyword arguments of `kprefix.tasks.decoding` from `config.decoding` and the tokenizer."""
    if config.task == "table_to_text":
        # Newlines are banned, as in the reference decoding: bad_words_ids
        # [[628], [198]] are GPT-2's "\n\n" and "\n" (run_generation.py).
        newlines = [np.ravel(tokenizer.tokenize(text)) for text in ("\n", "\n\n")]
        newline_ids = sorted({int(ids[0]) for ids in newlines if len(ids) == 1}
                             - {tokenizer.end_token_id})
        return config.decoding.gpt2_arguments(tokenizer.end_token_id, newline_ids)
    return config.decoding.bart_arguments(tokenizer.end_token_id, tokenizer.pad_token_id)


TFDS_LOADERS = {"e2e": nlg.load_e2e_tfds, "webnlg": nlg.load_webnlg_tfds, "xsum": nlg.load_xsum_tfds}


def _load(config, split, limit):
    """Examples of `split` from TFDS when `--tfds_data_dir` is set, else from files."""
    try:
        if config.tfds_data_dir:
            examples = TFDS_LOADERS[config.dataset](split, config.tfds_data_dir)
        else:
            examples = nlg.load_task(config.dataset, split, config.text_data_dir,
                                     source_format=source_format(config))
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(f"--dataset={config.dataset!r} ({split}): {error}") from None
    return examples[:limit] if limit else examples


def source_format(config):
    """The E2E/WebNLG input form the flags ask for ('reference' or 'raw')."""
    return {"e2e": config.e2e_source_format,
            "webnlg": config.webnlg_source_format}.get(config.dataset, "raw")


def reference_framing(config):
    """GPT-2 texts framed as Li & Liang's data-to-text datasets (see text_features)."""
    return config.task == "table_to_text" and source_format(config) == "reference"


def _training_batches(config, tokenizer, examples, log=print):
    """`(make_epoch, steps)`: each epoch's batches, padded per length bucket
    (`--length_buckets`, see `kprefix.data.length_buckets`)."""
    source_texts, target_texts = zip(*nlg.training_pairs(examples))
    sources, targets = tf.constant(source_texts), tf.constant(target_texts)
    steps = num_batches(len(sources), config.batch_size, config.drop_remainder)
    if steps == 0:
        raise app.UsageError(f"--batch_size={config.batch_size} exceeds the {len(sources)} "
                             "training pairs.")
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    if config.task == "table_to_text":
        maxima = [config.source_length + config.target_length]

        def features(source, target):
            return causal_lm_features(tokenizer, source, target, maxima[0],
                                      reference_framing=reference_framing(config))
    else:
        # Buckets pad the encoder and the decoder, each to its own lengths.
        maxima = [config.source_length, config.target_length]
        features = seq2seq_features(tokenizer, config.source_length, config.target_length)
    boundaries, buckets = _length_buckets(config, features, source_texts, target_texts, maxima)
    log(f"Length buckets: {', '.join('x'.join(map(str, shape)) for shape in zip(*boundaries))} "
        "tokens.")
    bucket_lengths = tf.constant(boundaries, tf.int32)  # [axes, buckets]
    token_mean = resolve_text_loss(config.text_loss, config.task) == "token_mean"

    def batch_features(indices, _):
        x, labels, weights = features(tf.gather(sources, indices), tf.gather(targets, indices))
        # The batch's bucket from its tokens: the grouping's may be an estimate.
        bucket = fitting_bucket(real_lengths(x), boundaries)
        return crop_features(x, labels, weights, tf.unstack(bucket_lengths[:, bucket]))

    def make_epoch(epoch):
        batches = (epoch_batches(buckets, config.batch_size, config.seed, epoch,
                                 config.drop_remainder)
                   .map(batch_features, num_parallel_calls=tf.data.AUTOTUNE))
        if not config.drop_remainder:
            # A partial batch is padded with zero-weight rows (static batch size).
            batches = batches.map(pad_to_full_batch(config.batch_size))
        if token_mean:
            batches = batches.map(token_mean_weights)
        return batches.take(steps).prefetch(tf.data.AUTOTUNE)
    return make_epoch, steps


def _length_buckets(config, features, sources, targets, maxima):
    """`(boundaries, bucket_of_example)`: the bucket lengths of each padded axis
    and each training example's bucket for grouping. Only a fixed sample of
    the examples is tokenized (`length_sample`); the others' buckets come
    from their character counts (`estimated_lengths`). `--length_buckets=none`
    tokenizes nothing."""
    if config.length_buckets == "none":
        return [[maximum] for maximum in maxima], np.zeros(len(sources), np.int32)
    sample = length_sample(len(sources))
    sampled = tf.data.Dataset.from_tensor_slices(
        (tf.constant([sources[i] for i in sample]), tf.constant([targets[i] for i in sample])))
    measured = sampled.batch(1024).map(lambda s, t: tuple(real_lengths(features(s, t)[0])),
                                       num_parallel_calls=tf.data.AUTOTUNE)
    measured = [np.concatenate(axis) for axis in zip(*measured.as_numpy_iterator())]
    try:
        boundaries = [parse_length_buckets(config.length_buckets, axis_lengths, maximum)
                      for axis_lengths, maximum in zip(measured, maxima)]
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    if len(maxima) > 1:
        if config.length_buckets != "auto":
            # Explicit lengths are the encoder's; the decoder keeps its full length.
            boundaries[1] = boundaries[1][-1:]
        boundaries = paired_boundaries(boundaries)
    source_characters, target_characters = (np.array([len(text) for text in texts])
                                            for texts in (sources, targets))
    characters = ([source_characters + target_characters] if len(maxima) == 1
                  else [source_characters, target_characters])
    lengths = [estimated_lengths(c, sample, m) for c, m in zip(characters, measured)]
    return boundaries, bucket_ids(lengths, boundaries)


def compile_text_model(model, config, steps_per_epoch):
    """Compiles a text task for training as the flags say: their optimizer,
    schedule and clipping, and the token loss `--text_loss` normalises (its
    token weights come from `_training_batches`)."""
    compile_for_training(
        model, config, steps_per_epoch, config.warmup_steps, loss=SequenceSumCrossentropy(),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


def generate_texts(serve, sources, batch_size):
    """Runs the export's `serve` function over `sources` in batches.

    Batches hold sources of similar length (sorted by characters, a close
    proxy for tokens), so each is cut to a short prompt width; the outputs
    come back in the order of `sources`.
    """
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs = [None] * len(sources)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        texts = serve(tf.constant([sources[i] for i in chunk]))["text"].numpy()
        for i, text in zip(chunk, texts):
            outputs[i] = text.decode("utf-8", errors="replace")
    return outputs


def score(config, examples, predictions, full_split):
    """The official-faithful scores of the task."""
    references = nlg.evaluation_references(examples)
    if config.dataset == "e2e":
        return score_e2e(predictions, references).as_dict()
    if config.dataset == "webnlg":
        seen = [bool(e.seen) for e in examples]
        official = nlg.shared_data_dir(config.text_data_dir) / "webnlg2017" / "eval_references"
        if full_split and config.eval_split in (None, "test") and official.is_dir():
            return score_webnlg(predictions, read_webnlg_references(official, seen))
        normalized = [[normalize_webnlg_output(r) for r in refs] for refs in references]
        scores = score_webnlg(predictions, WebNLGReferences(normalized, normalized, normalized,
                                                            seen))
        scores["note"] = "scored against the loader's references, not the official files"
        return scores
    return rouge_f1(predictions, [r[0] for r in references])


def prepare(config):
    """Loads the data and builds and compiles the model, writing nothing.

    Every problem with the flags is a usage error raised here. Returns a
    function that trains, decodes and scores the evaluation split and
    exports, and returns the results and summary lines.
    """
    prefix_config = config.prefix_config
    if config.dataset not in TASK_DATASETS[config.task]:
        raise app.UsageError(f"--dataset={config.dataset!r} does not fit --task={config.task}; "
                             f"use one of {', '.join(TASK_DATASETS[config.task])}.")
    train_examples = _load(config, config.train_split or "train", config.max_train_examples)
    eval_split = config.eval_split or "test"
    eval_examples = _load(config, eval_split, config.max_eval_examples)
    strategy, backbone = strategy_and_backbone(config)
    task_class = PrefixGPT2CausalLM if config.task == "table_to_text" else PrefixBartSeq2SeqLM
    if not isinstance(backbone, task_class.backbone_cls):
        raise app.UsageError(f"--backbone={config.backbone!r} does not fit --task={config.task} "
                             f"(needs a {task_class.backbone_cls.__name__}).")
    limit = backbone.max_sequence_length
    needed = {"table_to_text": config.source_length + max(config.target_length, config.decoding.max_new_tokens),
              "summarization": max(config.source_length, config.target_length,
                                   config.decoding.max_new_tokens + 1)}[config.task]
    if config.task == "table_to_text" and prefix_config is not None:
        needed += prefix_config.position_shift  # --prefix_position_offset=P
    if needed > limit:
        raise app.UsageError(
            f"--source_length/--target_length/--max_new_tokens (and a position offset) need "
            f"{needed} positions but "
            f"--backbone={config.backbone!r} has max_sequence_length {limit}; shorten them.")
    tokenizer = load_tokenizer(config.backbone)
    if config.schedule_unit != "step":
        raise app.UsageError("--schedule_unit=epoch is the vision scheduler; text runs step "
                             "their schedule every step (--schedule_unit=step).")
    make_epoch, steps = _training_batches(config, tokenizer, train_examples)
    check_batching(config, strategy, steps)
    with strategy.scope():
        model = build_task(task_class, config, backbone, prefix_config=prefix_config,
                           seed=config.seed)
        accounting = apply_method(model, config)
        compile_text_model(model, config, steps)
    settings = decoding_arguments(config, tokenizer)
    return lambda: _train_decode_export(config, model, tokenizer, make_epoch, steps, settings,
                                        eval_examples, accounting)


def _train_decode_export(config, model, tokenizer, make_epoch, steps, settings, eval_examples,
                         accounting):
    print(f"{describe_parameters(config, accounting)}; {steps} steps/epoch.", flush=True)
    chief = cluster_role().is_chief
    start = time.time()
    history, resumed_from = fit(config, model, make_epoch, steps)
    train_seconds = time.time() - start

    export_dir = os.path.join(config.workdir, "export")
    serve = export_text_generator(model, tokenizer, export_dir, config.source_length,
                                  settings, write=config.export,
                                  writer=chief,
                                  reference_framing=reference_framing(config))
    start = time.time()
    sources = nlg.evaluation_sources(eval_examples)
    eval_split = config.eval_split or "test"
    predictions = generate_texts(serve, sources, config.eval_batch_size)
    decode_seconds = time.time() - start
    predictions_path = os.path.join(config.workdir, f"predictions_{eval_split}.txt")
    if chief:
        write_text(predictions_path, "".join(p.replace("\n", " ") + "\n" for p in predictions))
    scores = score(config, eval_examples, predictions, full_split=not config.max_eval_examples)
    results = {
        "eval_split": eval_split,
        "num_eval_examples": len(eval_examples),
        "scores": scores,
        "predictions": predictions_path,
        "train_seconds": round(train_seconds, 1),
        "decode_seconds": round(decode_seconds, 1),
        "resumed_from_step": resumed_from,
        **accounting,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    }
    if config.export:
        results["export_dir"] = export_dir
    summary = [f"{eval_split} scores: {json.dumps(scores)}", f"predictions: {predictions_path}"]
    return results, summary
