"""Image classification: ViT + prefixes + linear head on digits, VTAB or FGVC."""

import dataclasses
import os
import time

import keras
from absl import app

from kprefix.data.image_tasks import DEFAULT_SPLITS, load_image_task_data
from kprefix.experiments.common import (apply_method, build_task, check_batching,
                                        compile_for_training, describe_parameters, fit,
                                        strategy_and_backbone)
from kprefix.runs.export import export_image_classifier
from kprefix.tasks import PrefixImageClassifier
from kprefix.tasks.image_preprocessors import preset_preprocessor, renormalizer
from kprefix.runs.cluster import cluster_role


def prepare(FLAGS, prefix_config):
    """Loads the data and builds and compiles the model, writing nothing.

    Every problem with the flags is a usage error raised here. Returns a
    function that trains, evaluates on `--eval_split` and exports, and
    returns the results and summary lines.
    """
    strategy, backbone = strategy_and_backbone(FLAGS)
    if not hasattr(backbone, "image_shape"):
        raise app.UsageError(f"--backbone={FLAGS.backbone!r} is not an image backbone; "
                             "--task=image_classification needs a ViT.")
    image_size = int(backbone.image_shape[0])
    try:
        data = load_image_task_data(
            FLAGS.dataset, image_size, FLAGS.batch_size, FLAGS.seed,
            FLAGS.train_split, FLAGS.eval_split, FLAGS.tfds_data_dir, FLAGS.manual_dir,
            drop_remainder=FLAGS.drop_remainder, split_file=FLAGS.split_file,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(f"--dataset={FLAGS.dataset!r}: {error}") from None
    if FLAGS.image_normalization == "preset":
        data = _with_preset_normalization(data, FLAGS)
    check_batching(FLAGS, strategy, data.steps_per_epoch)

    with strategy.scope():
        model = build_task(PrefixImageClassifier, FLAGS, backbone, data.num_classes,
                           prefix_config, seed=FLAGS.seed, head_init=FLAGS.head_init,
                           name="classifier")
        accounting = apply_method(model, FLAGS)
        warmup = FLAGS.warmup_epochs * (1 if FLAGS.schedule_unit == "epoch"
                                        else data.steps_per_epoch)
        # torch.optim.SGD as the reference calls it leaves the head bias undecayed.
        coupled = FLAGS.weight_decay_mode == "coupled"
        compile_for_training(
            model, FLAGS, data.steps_per_epoch, warmup,
            no_weight_decay=[model.head.bias] if coupled else (),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return lambda: _train_evaluate_export(FLAGS, model, data, accounting)


def _train_evaluate_export(FLAGS, model, data, accounting):
    print(f"{describe_parameters(FLAGS, accounting)}; {data.num_classes} classes, "
          f"{data.steps_per_epoch} steps/epoch.", flush=True)
    chief = cluster_role().is_chief
    start = time.time()
    history, resumed_from = fit(FLAGS, model, data.make_epoch, data.steps_per_epoch)
    train_seconds = time.time() - start
    scores = model.evaluate(data.eval_dataset, verbose=0, return_dict=True)
    loss, accuracy = scores["loss"], scores["accuracy"]
    results = {
        "eval_split": FLAGS.eval_split or DEFAULT_SPLITS[FLAGS.dataset.split("/")[0]][1],
        "eval_accuracy": float(accuracy),
        "eval_loss": float(loss),
        "train_seconds": round(train_seconds, 1),
        "resumed_from_step": resumed_from,
        **accounting,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    }
    summary = [f"{results['eval_split']} accuracy: {accuracy:.4f}"]
    if FLAGS.export:
        export_dir = os.path.join(FLAGS.workdir, "export")
        export_image_classifier(model, export_dir, writer=chief)
        results["export_dir"] = export_dir
    return results, summary


def _with_preset_normalization(data, FLAGS):
    """`data` normalized by the backbone preset's image converter instead."""
    if FLAGS.dataset == "digits":
        raise app.UsageError("--image_normalization=preset: the digits images are already "
                             "scaled to [-1, 1]; use a vtab/ or fgvc/ dataset.")
    try:
        converter = preset_preprocessor(FLAGS.backbone).image_converter
    except ValueError as error:
        raise app.UsageError(f"--image_normalization=preset: {error}") from None
    renormalize = renormalizer(converter)
    make_epoch, eval_dataset = data.make_epoch, data.eval_dataset

    def renormalized(dataset):
        return dataset.map(lambda images, labels: (renormalize(images), labels))

    return dataclasses.replace(data, make_epoch=lambda epoch: renormalized(make_epoch(epoch)),
                               eval_dataset=renormalized(eval_dataset))
