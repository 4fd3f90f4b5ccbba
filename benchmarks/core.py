"""Speed and memory ratios of prefix-tuning, measured side by side in one run.

    python benchmarks/core.py [--steps=5] [--batch_size=8] [--[no]jit_compile]

Builds a ViT-B/16-sized backbone from config (random weights, 224x224) and a
GPT-2-small-sized one, and prints:

- training step time, Deep-share / No-share (target <= 1.05);
- inference time, folded Deep-share / No-share (target <= 1.02);
- training step time, prefix-tuning / full fine-tuning (target <= 0.8);
- peak memory (resident set), prefix-tuning / full fine-tuning;
- training step time, mixed_bfloat16 / float32;
- GPT-2 cached greedy generation tokens/s, with folded prefixes / without
  (target >= 0.9).

The ViT steps use XLA as the launcher does by default (on GPUs and TPUs,
off on CPUs) unless `--jit_compile` says otherwise.
Timed variants alternate step by step so that load on the machine affects
both sides alike; each figure is the median over `--steps` steps after
warm-up. Peak memory is the peak resident set of steady-state training
steps, in one fresh subprocess per mode (Linux `/proc`).
"""


from absl import app, flags

from timing import peak_in_subprocess, print_steady_state_peak, side_by_side

flags.DEFINE_integer("steps", 5, "Timed steps per variant (after 2 warm-up steps).")
flags.DEFINE_integer("batch_size", 8, "Images per training step.")
flags.DEFINE_integer("prefix_length", 10, "Prefix vectors per layer.")
flags.DEFINE_integer("new_tokens", 32, "Tokens generated per GPT-2 run.")
flags.DEFINE_bool("jit_compile", None, "XLA for the ViT training and inference steps "
                  "(default: the launcher's per-platform default, off on CPUs).")
flags.DEFINE_string("memory_probe", None, "Internal: measure peak memory of one mode.")
FLAGS = flags.FLAGS


def _classifier(variant, precision="float32", full_finetune=False):
    import keras

    from kprefix.backbones import build_backbone
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixImageClassifier

    keras.mixed_precision.set_global_policy(precision)
    config = None if variant is None else PrefixConfig(variant, "deep", FLAGS.prefix_length)
    model = PrefixImageClassifier(build_backbone("vit_b16_random"), 100, config, seed=0)
    if full_finetune:
        model.backbone.trainable = True
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=models_use_xla())
    keras.mixed_precision.set_global_policy("float32")
    return model


def models_use_xla():
    import tensorflow as tf

    from kprefix.runs.train import jit_compile_for

    return jit_compile_for(tf.distribute.get_strategy(), FLAGS.jit_compile)


def _batch():
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.normal(size=(FLAGS.batch_size, 224, 224, 3)).astype("float32"),
            rng.integers(0, 100, FLAGS.batch_size).astype("int32"))


def vision_timings():
    x, y = _batch()
    models = {
        "deep_share": _classifier("deep_share"),
        "no_share": _classifier("no_share"),
        "full_finetune": _classifier(None, full_finetune=True),
        "deep_share_bf16": _classifier("deep_share", "mixed_bfloat16"),
    }
    train = side_by_side({name: (lambda m=m: m.train_on_batch(x, y)) for name, m in models.items()},
                         FLAGS.steps, warmup=2)
    folded = {name: models[name].fold() for name in ("deep_share", "no_share")}
    infer = side_by_side({name: (lambda m=m: m.predict_on_batch(x)) for name, m in folded.items()},
                         FLAGS.steps, warmup=2)
    return train, infer


def gpt2_generation():
    import numpy as np

    from kprefix.backbones import build_backbone
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixGPT2CausalLM

    prompt_length, total = 16, 16 + FLAGS.new_tokens
    token_ids = np.zeros((FLAGS.batch_size, total), "int32")
    token_ids[:, :prompt_length] = np.random.default_rng(0).integers(1, 50000, (FLAGS.batch_size, prompt_length))
    mask = np.zeros_like(token_ids, bool)
    mask[:, :prompt_length] = True
    models = {}
    for name, config in (("no_prefix", None),
                         ("prefix", PrefixConfig("deep_share", "deep", FLAGS.prefix_length,
                                                 mlp_hidden=512, share_across_layers=True))):
        lm = PrefixGPT2CausalLM(build_backbone("gpt2_small_random"), prefix_config=config, seed=0)
        lm = lm.fold() if config else lm
        lm.compile(sampler="greedy")
        models[name] = lm
    seconds = side_by_side({
        name: (lambda lm=lm: lm.generate({"token_ids": token_ids, "padding_mask": mask},
                                         stop_token_ids=None))
        for name, lm in models.items()
    }, FLAGS.steps, warmup=2)
    tokens = FLAGS.batch_size * FLAGS.new_tokens
    return {name: tokens / s for name, s in seconds.items()}


def memory_probe(mode):
    """Peak resident memory of steady-state training steps (Linux).

    The first step (compilation, optimizer slots) runs before the peak is
    reset, so the figure is what training holds: weights, slots, gradients
    and activations.
    """
    x, y = _batch()
    model = _classifier("deep_share" if mode == "prefix" else None, full_finetune=mode == "full")
    print_steady_state_peak(lambda: model.train_on_batch(x, y))


def peak_memory(mode):
    xla = [] if FLAGS.jit_compile is None else [FLAGS["jit_compile"].serialize()]
    return peak_in_subprocess(__file__, f"--memory_probe={mode}", *xla,
                              f"--batch_size={FLAGS.batch_size}",
                              f"--prefix_length={FLAGS.prefix_length}")


def main(argv):
    del argv
    if FLAGS.memory_probe:
        memory_probe(FLAGS.memory_probe)
        return
    train, infer = vision_timings()
    tokens_per_second = gpt2_generation()
    memory = {mode: peak_memory(mode) for mode in ("prefix", "full")}
    rows = [
        ("train step Deep-share / No-share", train["deep_share"] / train["no_share"], "<= 1.05"),
        ("inference folded Deep-share / No-share", infer["deep_share"] / infer["no_share"], "<= 1.02"),
        ("train step prefix / full fine-tune", train["deep_share"] / train["full_finetune"], "<= 0.8"),
        ("peak memory prefix / full fine-tune", memory["prefix"] / memory["full"], "-"),
        ("train step mixed_bfloat16 / float32", train["deep_share_bf16"] / train["deep_share"], "-"),
        ("GPT-2 cached generation tok/s prefix / none",
         tokens_per_second["prefix"] / tokens_per_second["no_prefix"], ">= 0.9"),
    ]
    print(f"\nViT-B/16 (random weights), batch {FLAGS.batch_size}, 224x224, "
          f"P={FLAGS.prefix_length}, median of {FLAGS.steps} steps, "
          f"XLA {'on' if models_use_xla() else 'off'}")
    for name, seconds in train.items():
        print(f"  train step {name:>16}: {seconds * 1000:9.1f} ms")
    for name, seconds in infer.items():
        print(f"  folded inference {name:>10}: {seconds * 1000:9.1f} ms")
    for name, rate in tokens_per_second.items():
        print(f"  GPT-2 small generation {name:>9}: {rate:9.1f} tokens/s")
    for mode, mib in memory.items():
        print(f"  peak RSS {mode:>6}: {mib:9.0f} MiB")
    print(f"\n{'ratio':48} {'measured':>9}  target")
    for name, value, target in rows:
        print(f"{name:48} {value:9.3f}  {target}")


if __name__ == "__main__":
    app.run(main)
