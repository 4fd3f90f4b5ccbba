"""Train, evaluate and export a prefix-tuned model: the main entry point.

    python -m kprefix.launch --flagfile=configs/quickstart.cfg
    python -m kprefix.launch --flagfile=configs/quickstart.cfg \\
        --backbone=vit_base_patch16_224_imagenet21k --dataset=vtab/cifar100

Flags may come from flagfiles and be overridden on the command line; see
`--helpfull`. The run writes, under `--workdir`: `checkpoints/` (one per
epoch; a restarted run resumes from the newest), `tensorboard/`, `export/`
(the folded SavedModel) and `results.json` (final metrics and every flag).
"""

import os
import sys

from absl import app, flags

from kprefix.prefix.config import ACTIVATIONS, INITIALIZERS, VARIANTS, PrefixConfig

FLAGS = flags.FLAGS

flags.DEFINE_enum("task", "image_classification",
                  ["image_classification", "table_to_text", "summarization"],
                  "What to train: a ViT classifier, GPT-2 table-to-text (E2E, WebNLG) or "
                  "BART summarization (XSUM).")

# Model.
flags.DEFINE_string("backbone", "vit_tiny",
                    "Built-in config (vit_tiny, vit_b16_random, ...), keras-hub preset "
                    "name, or local preset directory.")
flags.DEFINE_enum("prefix_variant", "deep_share", VARIANTS, "Key/value sharing structure.")
flags.DEFINE_string("prefix_placement", "deep",
                    "'shallow' (first layer), 'deep' (all layers) or comma-separated "
                    "layer indices.")
flags.DEFINE_integer("prefix_length", 10, "Prefix vectors per attention layer.")
flags.DEFINE_integer("prefix_mlp_hidden", 48, "Deep-share MLP hidden width.")
flags.DEFINE_enum("prefix_mlp_activation", "tanh", ACTIVATIONS, "Deep-share MLP activation.")
flags.DEFINE_bool("prefix_share_across_layers", False,
                  "Deep-share: one P' and first MLP layer for all layers.")
flags.DEFINE_integer("prefix_embedding_dim", None,
                     "Width of P' (Deep-share) or p (one-layer share); default hidden size.")
flags.DEFINE_enum("prefix_key_activation", "tanh", ACTIVATIONS, "one_layer_share s1.")
flags.DEFINE_enum("prefix_value_activation", "sigmoid", ACTIVATIONS, "one_layer_share s2.")
flags.DEFINE_enum("prefix_init", "xavier_uniform", INITIALIZERS, "Prefix initializer.")
flags.DEFINE_float("prefix_init_scale", 0.02, "Std of the 'normal' prefix initializer.")
flags.DEFINE_float("prefix_dropout", 0.0, "Dropout on generated prefixes in training.")

# Data.
flags.DEFINE_string("dataset", "digits",
                    "Images: 'digits', 'vtab/<task>' or 'fgvc/<dataset>'; "
                    "text: 'e2e', 'webnlg' or 'xsum'.")
flags.DEFINE_string("train_split", None, "Training split (default per dataset family).")
flags.DEFINE_string("eval_split", None, "Evaluation split (default per dataset family).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (local or gs://).")
flags.DEFINE_string("manual_dir", None, "Folder of manually downloaded archives.")
flags.DEFINE_string("text_data_dir", None,
                    "Folder holding e2e/, webnlg2017/ and xsum/ (default: $KPREFIX_SHARED_DATA, "
                    "else ../shared/data).")
flags.DEFINE_integer("max_train_examples", 0, "Text: use only the first N inputs (0: all).")
flags.DEFINE_integer("max_eval_examples", 0, "Text: evaluate the first N inputs (0: all).")
flags.DEFINE_integer("source_length", 64, "Text: source tokens (XSUM: 512).")
flags.DEFINE_integer("target_length", 64, "Text: target tokens in training.")

# Decoding.
flags.DEFINE_integer("num_beams", 5, "Beam width (1: greedy).")
flags.DEFINE_integer("max_new_tokens", 100, "Most generated tokens (XSUM: 61, max length 62).")
flags.DEFINE_integer("min_new_tokens", 5, "Fewest generated tokens before the end token.")
flags.DEFINE_float("length_penalty", 1.0, "Score = log-prob / length ** length_penalty.")
flags.DEFINE_integer("eval_batch_size", 16, "Inputs decoded together.")

# Optimization.
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"], "SGD+momentum (vision) or AdamW.")
flags.DEFINE_float("learning_rate", 0.1,
                   "Base learning rate (SGD: scaled by batch_size/256).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_integer("batch_size", 64, "Global batch size, over all replicas.")
flags.DEFINE_integer("epochs", 30, "Training epochs.")
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs (SGD).")
flags.DEFINE_integer("warmup_steps", 100, "Linear warm-up steps (AdamW).")
flags.DEFINE_integer("seed", 0, "Seed of initializers and data order.")

# Hardware.
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_float("peer_timeout_seconds", 300,
                   "--strategy=multi_worker_mirrored: a worker whose peer has not answered "
                   "for this long (no heartbeat, or a collective still waiting) exits with an "
                   "error naming the peer. Must exceed the slowest healthy step, compilation "
                   "included.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy; prefix variables stay float32.")
flags.DEFINE_bool("jit_compile", True, "Compile the train step with XLA.")

# Outputs.
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs, exports go.")
flags.DEFINE_bool("export", True, "Fold the prefixes and write a SavedModel.")


def prefix_config_from_flags():
    """The `PrefixConfig` the flags describe; errors name the flag."""
    placement = FLAGS.prefix_placement
    if placement not in ("shallow", "deep"):
        try:
            placement = tuple(int(i) for i in placement.split(","))
        except ValueError:
            raise app.UsageError(
                f"--prefix_placement={placement!r}: use 'shallow', 'deep' or "
                "comma-separated layer indices like '0,1,5'."
            ) from None
    try:
        return PrefixConfig(
            variant=FLAGS.prefix_variant,
            placement=placement,
            length=FLAGS.prefix_length,
            mlp_hidden=FLAGS.prefix_mlp_hidden,
            mlp_activation=FLAGS.prefix_mlp_activation,
            share_across_layers=FLAGS.prefix_share_across_layers,
            embedding_dim=FLAGS.prefix_embedding_dim,
            key_activation=FLAGS.prefix_key_activation,
            value_activation=FLAGS.prefix_value_activation,
            initializer=FLAGS.prefix_init,
            init_scale=FLAGS.prefix_init_scale,
            dropout=FLAGS.prefix_dropout,
        )
    except ValueError as error:
        raise app.UsageError(f"Bad prefix flags: {error}") from None


def _run_multi_worker(experiment, prefix_config):
    """`experiment.run` as one worker of several: a dead peer ends the run
    with a message naming it (the strategy also makes SIGTERM/SIGINT end a
    blocked worker, see `kprefix.multi_worker`)."""
    from kprefix import multi_worker

    try:
        multi_worker.cluster_from_tf_config()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        return experiment.run(FLAGS, prefix_config)
    except multi_worker.PEER_FAILURE_ERRORS as error:
        detail = [line for line in str(error).splitlines() if line.strip() and not line.startswith(
            (" ", "\t", "Graph execution error", "Detected at", "The error could be"))]
        print("TensorFlow: " + " ".join(detail[:3]), file=sys.stderr)
        message = multi_worker.describe_peer_failure(error)
        # TensorFlow's exit waits on a shutdown barrier that the dead peer
        # never reaches; give exit handlers a few seconds, then leave.
        multi_worker.exit_after(seconds=5, code=1, message=message)
        sys.exit(message)
    except BaseException as error:
        # Any other failure: tell the peers at once (instead of after
        # --peer_timeout_seconds) and leave promptly.
        multi_worker.report_failure_to_peers(error)
        multi_worker.exit_after(seconds=5, code=1)
        raise


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    prefix_config = prefix_config_from_flags()
    if FLAGS.task == "image_classification":
        from kprefix.experiments import image_classification as experiment
    else:
        from kprefix.experiments import text_generation as experiment
    if FLAGS.strategy == "multi_worker_mirrored":
        results, summary = _run_multi_worker(experiment, prefix_config)
    else:
        results, summary = experiment.run(FLAGS, prefix_config)
    results["flags"] = {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules[__name__])}
    results_path = os.path.join(FLAGS.workdir, "results.json")
    from kprefix.train import write_json

    write_json(results_path, results)
    workdir = FLAGS.workdir
    print(
        "\nDone.\n"
        + "".join(f"  {line}\n" for line in summary)
        + f"  results:     {results_path}\n"
        f"  checkpoints: {os.path.join(workdir, 'checkpoints')}\n"
        f"  tensorboard: {os.path.join(workdir, 'tensorboard')}\n"
        + (f"  SavedModel:  {results['export_dir']}\n" if "export_dir" in results else ""),
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
