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
import time

from absl import app, flags

from kprefix.prefix.config import ACTIVATIONS, INITIALIZERS, VARIANTS, PrefixConfig

FLAGS = flags.FLAGS

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
flags.DEFINE_string("dataset", "digits", "'digits', 'vtab/<task>' or 'fgvc/<dataset>'.")
flags.DEFINE_string("train_split", None, "Training split (default per dataset family).")
flags.DEFINE_string("eval_split", None, "Evaluation split (default per dataset family).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (local or gs://).")
flags.DEFINE_string("manual_dir", None, "Folder of manually downloaded archives.")

# Optimization.
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"], "SGD+momentum (vision) or AdamW.")
flags.DEFINE_float("learning_rate", 0.1,
                   "Base learning rate (SGD: scaled by batch_size/256).")
flags.DEFINE_float("weight_decay", 0.0, "Decoupled weight decay.")
flags.DEFINE_integer("batch_size", 64, "Global batch size, over all replicas.")
flags.DEFINE_integer("epochs", 30, "Training epochs.")
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs.")
flags.DEFINE_integer("seed", 0, "Seed of initializers and data order.")

# Hardware.
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
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


def run_image_classification(prefix_config):
    """Trains, evaluates and exports; returns the results dictionary."""
    import keras

    from kprefix import train
    from kprefix.backbones import build_backbone
    from kprefix.data.image_tasks import load_image_task_data
    from kprefix.export import export_image_classifier
    from kprefix.tasks import PrefixImageClassifier

    strategy = train.make_strategy(FLAGS.strategy, FLAGS.tpu)
    train.set_precision(FLAGS.precision)
    with strategy.scope():
        try:
            backbone = build_backbone(FLAGS.backbone, seed=FLAGS.seed)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
    image_size = int(backbone.image_shape[0])
    try:
        data = load_image_task_data(
            FLAGS.dataset, image_size, FLAGS.batch_size, FLAGS.seed,
            FLAGS.train_split, FLAGS.eval_split, FLAGS.tfds_data_dir, FLAGS.manual_dir,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(f"--dataset={FLAGS.dataset!r}: {error}") from None

    total_steps = data.steps_per_epoch * FLAGS.epochs
    with strategy.scope():
        model = PrefixImageClassifier(backbone, data.num_classes, prefix_config,
                                      seed=FLAGS.seed, name="classifier")
        optimizer = train.make_optimizer(
            FLAGS.optimizer, FLAGS.learning_rate, FLAGS.weight_decay, FLAGS.batch_size,
            total_steps, data.steps_per_epoch * FLAGS.warmup_epochs,
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=FLAGS.jit_compile,
        )
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    print(f"Backbone {FLAGS.backbone} (frozen), {data.num_classes} classes, "
          f"{trainable:,} trainable parameters, {data.steps_per_epoch} steps/epoch.",
          flush=True)

    start = time.time()
    history, resumed_from = train.fit(model, data.make_epoch, data.steps_per_epoch,
                                      FLAGS.epochs, FLAGS.workdir)
    train_seconds = time.time() - start
    loss, accuracy = model.evaluate(data.eval_dataset, verbose=0)
    results = {
        "eval_split": FLAGS.eval_split or "default",
        "eval_accuracy": float(accuracy),
        "eval_loss": float(loss),
        "train_seconds": round(train_seconds, 1),
        "resumed_after_epoch": resumed_from,
        "trainable_parameters": trainable,
        "history": {k: [float(v) for v in vs] for k, vs in history.history.items()},
    }
    if FLAGS.export:
        export_dir = os.path.join(FLAGS.workdir, "export")
        export_image_classifier(model, export_dir)
        results["export_dir"] = export_dir
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    prefix_config = prefix_config_from_flags()
    results = run_image_classification(prefix_config)
    results["flags"] = {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules[__name__])}
    results_path = os.path.join(FLAGS.workdir, "results.json")
    from kprefix.train import write_json

    write_json(results_path, results)
    workdir = FLAGS.workdir
    print(
        "\nDone.\n"
        f"  {FLAGS.eval_split or 'test'} accuracy: {results['eval_accuracy']:.4f}\n"
        f"  results:     {results_path}\n"
        f"  checkpoints: {os.path.join(workdir, 'checkpoints')}\n"
        f"  tensorboard: {os.path.join(workdir, 'tensorboard')}\n"
        + (f"  SavedModel:  {results['export_dir']}\n" if "export_dir" in results else ""),
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
