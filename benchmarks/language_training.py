"""Training throughput of Deep-share versus No-share on GPT-2 and BART.

    python benchmarks/language_training.py [--steps=5] [--batch_size=8]

Small GPT-2 and BART configs (random weights) train on fixed batches of
token ids with prefixes in every layer; the script prints examples per
second for each variant and the ratio Deep-share / No-share (target >= 0.95),
measured side by side (alternating steps, median of `--steps`).
"""

import os

import numpy as np
from absl import app, flags

from timing import side_by_side

flags.DEFINE_integer("steps", 5, "Timed steps per variant (after 2 warm-up steps).")
flags.DEFINE_integer("batch_size", 8, "Examples per step.")
flags.DEFINE_integer("sequence_length", 128, "Tokens per example.")
flags.DEFINE_integer("prefix_length", 10, "Prefix vectors per layer.")
FLAGS = flags.FLAGS


def _models(family):
    import keras
    import keras_hub

    from kprefix.backbones import build_backbone
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM

    models = {}
    for variant in ("deep_share", "no_share"):
        config = PrefixConfig(variant, "deep", FLAGS.prefix_length, mlp_hidden=512,
                              share_across_layers=True)
        if family == "gpt2":
            lm = PrefixGPT2CausalLM(build_backbone("gpt2_small_random"), prefix_config=config)
        else:
            backbone = keras_hub.models.BartBackbone(
                vocabulary_size=50265, num_layers=6, num_heads=8, hidden_dim=512,
                intermediate_dim=2048, max_sequence_length=FLAGS.sequence_length)
            lm = PrefixBartSeq2SeqLM(backbone, prefix_config=config)
        lm.compile(optimizer=keras.optimizers.AdamW(1e-4),
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   jit_compile=True)
        models[variant] = lm
    return models


def _batch(family):
    rng = np.random.default_rng(0)
    shape = (FLAGS.batch_size, FLAGS.sequence_length)
    ids = rng.integers(3, 50000, shape).astype("int32")
    mask = np.ones(shape, bool)
    if family == "gpt2":
        return {"token_ids": ids, "padding_mask": mask}, np.roll(ids, -1, axis=1)
    x = {"encoder_token_ids": ids, "encoder_padding_mask": mask,
         "decoder_token_ids": ids[:, :32], "decoder_padding_mask": mask[:, :32]}
    return x, np.roll(ids[:, :32], -1, axis=1)


def main(_):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print(f"batch {FLAGS.batch_size}, {FLAGS.sequence_length} tokens, P={FLAGS.prefix_length}, "
          f"median of {FLAGS.steps} steps, jit_compile=True")
    for family, label in (("gpt2", "GPT-2 small"), ("bart", "BART 6+6 layers, hidden 512")):
        x, y = _batch(family)
        seconds = side_by_side({name: (lambda m=m: m.train_on_batch(x, y))
                                for name, m in _models(family).items()}, FLAGS.steps, warmup=2)
        rate = {name: FLAGS.batch_size / s for name, s in seconds.items()}
        for name, value in rate.items():
            print(f"  {label:30} {name:>10}: {value:8.2f} examples/s")
        print(f"  {label:30} examples/s Deep-share / No-share: "
              f"{rate['deep_share'] / rate['no_share']:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    app.run(main)
