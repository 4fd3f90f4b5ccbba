"""Input-pipeline throughput next to ViT-B/16 training throughput, same machine.

Feeds one VTAB task and one FGVC task from mocked TFDS data made of
realistically sized JPEGs (500x375 by default) through the real pipelines
(decode, resize, crop/flip, normalize, batch), then times training steps of
a randomly initialised ViT-B/16 (keras-hub `ViTBackbone`) with a Dense head
on the same batch size, and prints images/s for each and their ratio. The
input pipeline should deliver at least twice what training consumes.

Caching is turned off so every epoch pays for decoding, as the test sets and
large FGVC training sets do. Measurements run one after the other, not
concurrently; in real training both share the CPU.

Usage:
    python benchmarks/input_pipeline.py
    python benchmarks/input_pipeline.py --batch_size 8 --train_steps 5 --pipeline_images 1600
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kprefix.data import fgvc, vtab

# Official split sizes of the TFDS datasets benchmarked.
SPLIT_SIZES = {
    "caltech101": {"train": 3_060, "test": 6_084},
    "caltech_birds2011": {"train": 5_994, "test": 5_794},
}


def natural_looking_jpegs(count: int, height: int, width: int, seed: int = 0) -> list[bytes]:
    """JPEGs with smooth structure plus noise, so their size and decoding cost
    resemble photos (pure noise would be far larger than a photo)."""
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, height)[:, None, None]
    cols = np.linspace(0, 1, width)[None, :, None]
    images = []
    for _ in range(count):
        frequencies = rng.uniform(1, 8, size=(2, 3))
        phases = rng.uniform(0, 2 * np.pi, size=(2, 3))
        smooth = np.sin(2 * np.pi * frequencies[0] * rows + phases[0]) + np.cos(
            2 * np.pi * frequencies[1] * cols + phases[1]
        )
        pixels = 127.5 + 50 * smooth + rng.normal(0, 12, size=(height, width, 3))
        pixels = np.clip(pixels, 0, 255).astype(np.uint8)
        images.append(tf.io.encode_jpeg(pixels, quality=90).numpy())
    return images


def mocked_tfds(jpegs: list[bytes]):
    """Context manager making TFDS serve `jpegs` (cycled) for every split slice."""
    pool = tf.constant(jpegs)

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False, **_):
        del decoders, read_config, shuffle_files
        sizes = SPLIT_SIZES[self.name]
        num_classes = self.info.features["label"].num_classes

        def example(index):
            return {
                "image": pool[index % len(jpegs)],
                "label": index % num_classes,
                "image/filename": tf.strings.as_string(index),
            }

        parts = []
        for part in str(split).split("+"):
            name, start, stop = re.fullmatch(r"(\w+)(?:\[(\d*):(\d*)\])?", part).groups()
            start, stop = int(start or 0), int(stop or sizes[name])
            parts.append(tf.data.Dataset.range(start, stop).map(example))
        ds = parts[0]
        for more in parts[1:]:
            ds = ds.concatenate(more)
        return ds

    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset)


def pipeline_images_per_second(ds: tf.data.Dataset, num_images: int, batch_size: int) -> float:
    """Images/s over `num_images` (one warm-up batch excluded)."""
    iterator = iter(ds.repeat())
    next(iterator)
    start = time.perf_counter()
    for _ in range(num_images // batch_size):
        images, _ = next(iterator)
    images.numpy()
    return (num_images // batch_size) * batch_size / (time.perf_counter() - start)


def training_images_per_second(batch_size: int, steps: int, warmup: int, num_classes: int) -> float:
    """Images/s of ViT-B/16 train steps (SGD, cross-entropy) on random data."""
    import keras
    import keras_hub

    backbone = keras_hub.models.ViTBackbone(
        image_shape=(224, 224, 3),
        patch_size=16,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        mlp_dim=3072,
    )
    inputs = keras.Input((224, 224, 3))
    tokens = backbone(inputs)
    logits = keras.layers.Dense(num_classes)(tokens[:, 0])
    model = keras.Model(inputs, logits)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    images = rng.normal(size=(batch_size, 224, 224, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, size=(batch_size,)).astype(np.int32)
    for _ in range(warmup):
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--pipeline_images", type=int, default=1600)
    parser.add_argument("--train_steps", type=int, default=5)
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--jpeg_height", type=int, default=375)
    parser.add_argument("--jpeg_width", type=int, default=500)
    args = parser.parse_args()

    jpegs = natural_looking_jpegs(64, args.jpeg_height, args.jpeg_width)
    mean_kb = np.mean([len(j) for j in jpegs]) / 1024
    print(f"CPU cores: {os.cpu_count()}")
    print(f"mock images: {args.jpeg_width}x{args.jpeg_height} JPEG, {mean_kb:.0f} KB on average")

    rows = []
    with mocked_tfds(jpegs):
        vtab_ds = vtab.load(
            "vtab/caltech101", "train800val200", batch_size=args.batch_size, seed=0, cache=False
        )
        rows.append(
            (
                "vtab/caltech101 train800val200 (decode, resize 224, normalize, shuffle)",
                pipeline_images_per_second(vtab_ds, args.pipeline_images, args.batch_size),
            )
        )
        fgvc_ds = fgvc.load(
            "fgvc/cub", "train", batch_size=args.batch_size, seed=0, cache=False
        )
        rows.append(
            (
                "fgvc/cub train (decode, resize 256, random crop 224, flip, normalize, shuffle)",
                pipeline_images_per_second(fgvc_ds, args.pipeline_images, args.batch_size),
            )
        )
    training = training_images_per_second(
        args.batch_size, args.train_steps, args.warmup_steps, num_classes=200
    )

    print(f"\nbatch size {args.batch_size}")
    print(f"{'measurement':<82} {'images/s':>9} {'ratio':>7}")
    for name, rate in rows:
        print(f"{name:<82} {rate:9.1f} {rate / training:7.1f}")
    print(
        f"{'ViT-B/16 + Dense head, one SGD train step per batch (CPU)':<82} {training:9.2f} {1:7.1f}"
    )
    worst = min(rate for _, rate in rows) / training
    verdict = "meets" if worst >= 2 else "misses"
    print(f"\nslowest pipeline / training = {worst:.1f} ({verdict} the target of at least 2)")


if __name__ == "__main__":
    main()
