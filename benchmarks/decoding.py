"""Cached beam decoding speed with folded prefixes versus without, side by side.

    python benchmarks/decoding.py [--runs=5] [--new_tokens=16] [--jit_compile=true]

Builds two random-weight models per family, one with folded Deep-share
prefixes in every layer and one without, on identical backbones:

- GPT-2 small sized (`gpt2_small_random`), beam 5 (the table-to-text setting);
- a small BART (6+6 layers, hidden 512, vocabulary 50265), beam 6 and length
  penalty 0.8 (the XSUM setting).

Each decode runs exactly `--new_tokens` steps (the minimum length equals the
maximum, so both models do the same work whatever they generate). Runs of
the two models alternate so that load on the machine affects both alike;
each figure is the median over `--runs` runs after one warm-up (compilation)
run. Prints generated tokens per second (per input, beams not counted) and
the ratio prefix / none (target >= 0.9).
"""

import os

from absl import app, flags

from timing import side_by_side

flags.DEFINE_integer("runs", 5, "Timed runs per model (after one warm-up run).")
flags.DEFINE_integer("new_tokens", 16, "Tokens generated per input and run.")
flags.DEFINE_integer("batch_size", 2, "Inputs decoded together.")
flags.DEFINE_integer("prompt_length", 16, "GPT-2 prompt tokens / BART source tokens.")
flags.DEFINE_integer("prefix_length", 10, "Prefix vectors per attention layer.")
flags.DEFINE_boolean("jit_compile", True, "Compile the decode functions with XLA.")
flags.DEFINE_string("families", "gpt2,bart", "Comma-separated: gpt2, bart.")
FLAGS = flags.FLAGS

SMALL_BART = dict(vocabulary_size=50265, num_layers=6, num_heads=8, hidden_dim=512,
                  intermediate_dim=2048, max_sequence_length=1024)


def _prefix_config():
    from kprefix.prefix import PrefixConfig

    return PrefixConfig("deep_share", "deep", FLAGS.prefix_length)


def _gpt2_models():
    from kprefix.backbones import build_backbone
    from kprefix.tasks import PrefixGPT2CausalLM

    plain = PrefixGPT2CausalLM(build_backbone("gpt2_small_random", seed=0))
    prefixed = PrefixGPT2CausalLM(build_backbone("gpt2_small_random", seed=0),
                                  prefix_config=_prefix_config(), seed=0).fold()
    return {"prefix": prefixed, "none": plain}


def _bart_models():
    import keras
    import keras_hub

    from kprefix.tasks import PrefixBartSeq2SeqLM

    def backbone():
        keras.utils.set_random_seed(0)
        return keras_hub.models.BartBackbone(**SMALL_BART)

    plain = PrefixBartSeq2SeqLM(backbone())
    prefixed = PrefixBartSeq2SeqLM(backbone(), prefix_config=_prefix_config(), seed=0).fold()
    return {"prefix": prefixed, "none": plain}


def _gpt2_decoders(models):
    import numpy as np
    import tensorflow as tf

    from kprefix.tasks.decoding import generate_gpt2

    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 50000, (FLAGS.batch_size, FLAGS.prompt_length)).astype("int32")
    mask = np.ones_like(token_ids, bool)
    mask[1:, FLAGS.prompt_length // 2:] = False  # mixed prompt lengths
    token_ids = tf.constant(np.where(mask, token_ids, 0))
    mask = tf.constant(mask)

    def decoder(lm):
        @tf.function(jit_compile=FLAGS.jit_compile)
        def decode(token_ids, mask):
            return generate_gpt2(lm, token_ids, mask, num_beams=5,
                                 max_new_tokens=FLAGS.new_tokens,
                                 min_new_tokens=FLAGS.new_tokens, end_token_id=50256)

        return lambda: [t.numpy() for t in decode(token_ids, mask)]

    return {name: decoder(lm) for name, lm in models.items()}


def _bart_decoders(models):
    import numpy as np
    import tensorflow as tf

    from kprefix.tasks.decoding import generate_bart

    rng = np.random.default_rng(0)
    source = tf.constant(rng.integers(3, 50000, (FLAGS.batch_size, FLAGS.prompt_length)),
                         "int32")
    mask = tf.ones_like(source, "bool")
    max_length = FLAGS.new_tokens + 1

    def decoder(lm):
        @tf.function(jit_compile=FLAGS.jit_compile)
        def decode(source, mask):
            return generate_bart(lm, source, mask, start_token_ids=[2], num_beams=6,
                                 max_length=max_length, min_length=max_length,
                                 length_penalty=0.8, end_token_id=2)

        return lambda: [t.numpy() for t in decode(source, mask)]

    return {name: decoder(lm) for name, lm in models.items()}


def main(_):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    families = {
        "gpt2": ("GPT-2 small, beam 5", _gpt2_models, _gpt2_decoders),
        "bart": ("BART 6+6 layers hidden 512, beam 6", _bart_models, _bart_decoders),
    }
    tokens = FLAGS.batch_size * FLAGS.new_tokens
    results = []
    for family in FLAGS.families.split(","):
        title, build, decoders = families[family]
        seconds = side_by_side(decoders(build()), FLAGS.runs)
        rates = {name: tokens / s for name, s in seconds.items()}
        results.append((title, rates))
        for name, rate in rates.items():
            print(f"{title:<36} {name:>6}: {rate:9.1f} tokens/s  "
                  f"({seconds[name] * 1000:8.1f} ms per run)", flush=True)
    print(f"\nbatch {FLAGS.batch_size}, {FLAGS.new_tokens} new tokens, prefix length "
          f"{FLAGS.prefix_length}, median of {FLAGS.runs}, jit_compile={FLAGS.jit_compile}")
    for title, rates in results:
        print(f"{title:<36} tokens/s prefix / none: {rates['prefix'] / rates['none']:.3f}"
              "  (target >= 0.9)")


if __name__ == "__main__":
    app.run(main)
