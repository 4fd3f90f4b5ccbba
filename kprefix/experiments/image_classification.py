"""Image classification: ViT + prefixes + linear head on digits, VTAB or FGVC."""

import dataclasses
import os
import time

import keras
from absl import app

from kprefix.data.image_tasks import DEFAULT_SPLITS, load_image_task
from kprefix.experiments.common import (apply_method, build_task, check_batching,
                                        compile_for_training, describe_parameters, fit,
                                        strategy_and_backbone)
from kprefix.runs.cluster import cluster_role
from kprefix.runs.export import export_image_classifier
from kprefix.runs.train import without_autotuning
from kprefix.tasks import PrefixImageClassifier
from kprefix.tasks.image_preprocessors import preset_preprocessor, renormalizer


def prepare(config):
    """Loads the data and builds and compiles the model, writing nothing.

    Every problem with the flags is a usage error raised here. Returns a
    function that trains, evaluates on `--eval_split` and exports, and
    returns the results and summary lines.
    """
    prefix_config = config.prefix_config
    strategy, backbone = strategy_and_backbone(config)
    if not hasattr(backbone, "image_shape"):
        raise app.UsageError(f"--backbone={config.backbone!r} is not an image backbone; "
                             "--task=image_classification needs a ViT.")
    image_size = int(backbone.image_shape[0])
    try:
        data = load_image_task(
            config.dataset, image_size, config.batch_size, config.seed,
            config.train_split, config.eval_split, config.tfds_data_dir, config.manual_dir,
            drop_remainder=config.drop_remainder, split_file=config.split_file,
        )
    except (ValueError, FileNotFoundError) as error:
        raise app.UsageError(f"--dataset={config.dataset!r}: {error}") from None
    if config.image_normalization == "preset":
        data = _with_preset_normalization(data, config)
    check_batching(config, strategy, data.steps_per_epoch)

    with strategy.scope():
        model = build_task(PrefixImageClassifier, config, backbone, data.num_classes,
                           prefix_config, seed=config.seed, head_init=config.head_init,
                           name="classifier")
        accounting = apply_method(model, config)
        warmup = config.warmup_epochs * (1 if config.schedule_unit == "epoch"
                                        else data.steps_per_epoch)
        # torch.optim.SGD as the reference calls it leaves the head bias undecayed.
        coupled = config.weight_decay_mode == "coupled"
        compile_for_training(
            model, config, data.steps_per_epoch, warmup,
            no_weight_decay=[model.head.bias] if coupled else (),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    return lambda: _train_evaluate_export(config, model, data, accounting)


def _train_evaluate_export(config, model, data, accounting):
    print(f"{describe_parameters(config, accounting)}; {data.num_classes} classes, "
          f"{data.steps_per_epoch} steps/epoch.", flush=True)
    chief = cluster_role().is_chief
    start = time.time()
    history, resumed_from = fit(config, model, data.make_epoch, data.steps_per_epoch)
    train_seconds = time.time() - start
    scores = model.evaluate(without_autotuning(data.eval_dataset), verbose=0, return_dict=True)
    loss, accuracy = scores["loss"], scores["accuracy"]
    results = {
        "eval_split": config.eval_split or DEFAULT_SPLITS[config.dataset.split("/")[0]][1],
        "eval_accuracy": float(accuracy),
        "eval_loss": float(loss),
        "train_seconds": round(train_seconds, 1),
        "resumed_from_step": resumed_from,
        **accounting,
        "history": {k: [float(v) for v in vs] for k, vs in history.items()},
    }
    summary = [f"{results['eval_split']} accuracy: {accuracy:.4f}"]
    if config.export:
        export_dir = os.path.join(config.workdir, "export")
        export_image_classifier(model, export_dir, writer=chief)
        results["export_dir"] = export_dir
    return results, summary


def _with_preset_normalization(data, config):
    """`data` normalized by the backbone preset's image converter instead."""
    if config.dataset == "digits":
        raise app.UsageError("--image_normalization=preset: the digits images are already "
                             "scaled to [-1, 1]; use a vtab/ or fgvc/ dataset.")
    try:
        converter = preset_preprocessor(config.backbone).image_converter
    except ValueError as error:
        raise app.UsageError(f"--image_normalization=preset: {error}") from None
    renormalize = renormalizer(converter)
    make_epoch, eval_dataset = data.make_epoch, data.eval_dataset

    def renormalized(dataset):
        return dataset.map(lambda images, labels: (renormalize(images), labels))

    return dataclasses.replace(data, make_epoch=lambda epoch: renormalized(make_epoch(epoch)),
                               eval_dataset=renormalized(eval_dataset))
