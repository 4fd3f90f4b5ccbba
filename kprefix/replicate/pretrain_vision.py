"""Pretrains a small ViT on the rendered source task and saves it as a keras-hub preset.

The source task is `kprefix.data.synthetic_images.source_arrays`: rendered
formula-driven images with several labelled factors (`SOURCE_FACTORS`: shape
class, number of copies, position, rotation, scale). One linear head per
factor reads the class token, as `PrefixImageClassifier` does downstream, and
the loss is their sum: a shape classifier alone learns to ignore where, how
many, how big and how turned its objects are, which is what structured
downstream tasks ask. Two presets are written,
both loadable with `--backbone=<dir>`: the pretrained backbone and the same
architecture with its random initial weights (the transfer baseline).

Example:

>>> from kprefix.replicate.pretrain_vision import VisionPretraining, pretrain_vision
>>> import tempfile
>>> summary = pretrain_vision(tempfile.mkdtemp(), VisionPretraining(
...     steps=2, examples=64, batch_size=32, num_layers=1, hidden_dim=16, mlp_dim=32,
...     num_heads=2, log_every=1), log=None)
>>> len(summary["loss_curve"])
2
"""

import dataclasses
import os
import time

import numpy as np

from kprefix.replicate.pretraining import (finished_summary, save_preset, train_with_loss_curve,
                                           warmup_cosine, write_summary)

PRETRAINED, RANDOM = "vit_pretrained", "vit_random"


@dataclasses.dataclass(frozen=True)
class VisionPretraining:
    """Architecture and budget of the source-task pretraining."""

    steps: int = 3000
    examples: int = 50000
    batch_size: int = 128
    learning_rate: float = 2e-3
    image_size: int = 32
    patch_size: int = 4
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: int = 128
    mlp_dim: int = 256
    log_every: int = 50
    seed: int = 0


def build_vit(config):
    import keras
    import keras_hub

    keras.utils.set_random_seed(config.seed)
    return keras_hub.models.ViTBackbone(
        image_shape=(config.image_size, config.image_size, 3), patch_size=config.patch_size,
        num_layers=config.num_layers, num_heads=config.num_heads,
        hidden_dim=config.hidden_dim, mlp_dim=config.mlp_dim)


def pretrain_vision(output_dir, config, log=print):
    """Writes `<output_dir>/vit_pretrained`, `<output_dir>/vit_random` and
    `<output_dir>/vision_pretraining.json` (loss curve, held-out source accuracy,
    timing); returns that summary. Skips the work if the summary exists.
    `log` gets a progress line every `config.log_every` steps (None: silent)."""
    import keras

    from kprefix.data.synthetic_images import SOURCE_FACTORS, source_arrays

    summary_path = os.path.join(output_dir, "vision_pretraining.json")
    finished = finished_summary(summary_path)
    if finished is not None:
        return finished
    backbone = build_vit(config)
    save_preset(os.path.join(output_dir, RANDOM), backbone)
    tokens = backbone.output[:, 0, :]
    logits = {factor: keras.layers.Dense(classes, name=factor)(tokens)
              for factor, classes in SOURCE_FACTORS.items()}
    model = keras.Model(backbone.input, logits)
    model.compile(optimizer=keras.optimizers.AdamW(
                      warmup_cosine(config.steps, config.learning_rate), weight_decay=0.05),
                  loss={factor: keras.losses.SparseCategoricalCrossentropy(from_logits=True)
                        for factor in SOURCE_FACTORS},
                  metrics={factor: ["accuracy"] for factor in SOURCE_FACTORS}, jit_compile=True)

    start = time.time()
    images, labels = source_arrays(config.examples, config.image_size, seed=config.seed)
    held_out = source_arrays(min(2000, config.examples), config.image_size, seed=config.seed + 1)
    generate_seconds = time.time() - start
    rng = np.random.RandomState(config.seed)

    def next_batch():
        batch = rng.randint(0, len(images), config.batch_size)
        return images[batch], {factor: y[batch] for factor, y in labels.items()}

    curve, train_seconds = train_with_loss_curve(model, next_batch, config.steps,
                                                 config.log_every, log, "vision")
    evaluation = model.evaluate(*held_out, batch_size=256, verbose=0, return_dict=True)
    accuracy = {factor: float(evaluation[f"{factor}_accuracy"]) for factor in SOURCE_FACTORS}
    save_preset(os.path.join(output_dir, PRETRAINED), backbone)
    summary = {
        "config": dataclasses.asdict(config),
        "source_factors": dict(SOURCE_FACTORS),
        "loss_curve": curve,
        "held_out_factor_accuracy": accuracy,
        "generate_seconds": round(generate_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "steps_per_second": round(config.steps / train_seconds, 2),
        "presets": {"pretrained": PRETRAINED, "random": RANDOM},
    }
    return write_summary(summary_path, summary)
