"""Train, evaluate and export a prefix-tuned model: the main entry point.

    python -m kprefix.launch --flagfile=configs/quickstart.cfg
    python -m kprefix.launch --flagfile=configs/quickstart.cfg \\
        --backbone=vit_base_patch16_224_imagenet21k --dataset=vtab/cifar100
    kprefix-launch --config=vtab/deep_cifar100 --prefix_variant=no_share

Flags may come from flagfiles (`--flagfile=PATH`, or `--config=NAME` for a
config installed with kprefix) and be overridden on the command line; see
`--helpfull`. The run writes, under `--workdir`: `checkpoints/` (one per
epoch; a restarted run resumes from the newest), `tensorboard/`, `export/`
(the folded SavedModel) and `results.json` (final metrics and every flag).
"""

import os
import sys

from absl import app, flags

from kprefix import cli, logs
from kprefix.flag_help import group
from kprefix.prefix import flags as prefix_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None,
                    "Name of a config installed with kprefix, read like a flagfile: "
                    "'quickstart', 'vtab/deep_cifar100', 'nlg/e2e', ... (configs/NAME.cfg).")
flags.DEFINE_enum("task", "image_classification",
                  ["image_classification", "table_to_text", "summarization"],
                  "What to train: a ViT classifier, GPT-2 table-to-text (E2E, WebNLG) or "
                  "BART summarization (XSUM).")

group("Model")
flags.DEFINE_string("backbone", "vit_tiny",
                    "Built-in config (vit_tiny, vit_b16_random, ...), keras-hub preset "
                    "name, or local preset directory.")
# The --prefix_* flags, one per PrefixConfig field (kprefix/prefix/config.py).
prefix_flags.define_prefix_flags()

group("Data")
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

group("Decoding")
flags.DEFINE_integer("num_beams", 5, "Beam width (1: greedy).")
flags.DEFINE_integer("max_new_tokens", 100, "Most generated tokens (XSUM: 61, max length 62).")
flags.DEFINE_integer("min_new_tokens", 5, "Fewest generated tokens before the end token.")
flags.DEFINE_float("length_penalty", 1.0, "Score = log-prob / length ** length_penalty.")
flags.DEFINE_integer("eval_batch_size", 16, "Inputs decoded together.")

group("Optimization")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"], "SGD+momentum (vision) or AdamW.")
flags.DEFINE_float("learning_rate", 0.1,
                   "Base learning rate (SGD: scaled by batch_size/256).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_integer("batch_size", 64, "Global batch size, over all replicas.")
flags.DEFINE_integer("epochs", 30, "Training epochs.")
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs (SGD).")
flags.DEFINE_integer("warmup_steps", 100, "Linear warm-up steps (AdamW).")
flags.DEFINE_integer("seed", 0, "Seed of initializers and data order.")

group("Hardware")
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy; prefix variables stay float32.")
flags.DEFINE_bool("jit_compile", True, "Compile the train step with XLA.")

group("Outputs")
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs, exports go.")
flags.DEFINE_bool("export", True, "Fold the prefixes and write a SavedModel.")


def prefix_config_from_flags():
    """The `PrefixConfig` the `--prefix_*` flags describe; errors name the flag."""
    try:
        return prefix_flags.prefix_config_from_flags(FLAGS)
    except ValueError as error:
        raise app.UsageError(f"Bad prefix flags: {error}") from None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    prefix_config = prefix_config_from_flags()
    logs.import_tensorflow_quietly(FLAGS.verbosity if FLAGS["verbosity"].present else None)
    if FLAGS.task == "image_classification":
        from kprefix.experiments import image_classification as experiment
    else:
        from kprefix.experiments import text_generation as experiment
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


def console_main():
    """The `kprefix-launch` console script."""
    cli.run(main)


if __name__ == "__main__":
    console_main()
