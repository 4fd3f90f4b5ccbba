"""Train-step time and peak memory of every method against full fine-tuning.

    python benchmarks/methods.py [--steps=5] [--batch_size=8]

One ViT-B/16-sized classifier (random weights, 224x224, 100 classes) per
method, each with the settings of `configs/vtab/methods/` (prefixes: Deep-share,
P=10 in every layer; VPT-deep 10 prompts; LoRA rank 8; Pfeiffer adapters of
width 96; Partial-1), trained with SGD on one fixed batch. Prints, per method,
its trainable parameters, the median train-step time and the peak resident
memory of steady-state steps, each with its ratio to full fine-tuning.

The timed steps alternate between the methods, so load on the machine affects
every method alike. Peak memory comes from one fresh subprocess per method
(Linux `/proc`), after a first step that compiles and builds the optimizer.
"""

from absl import app, flags

from timing import peak_in_subprocess, print_steady_state_peak, side_by_side

flags.DEFINE_integer("steps", 5, "Timed steps per method (after 2 warm-up steps).")
flags.DEFINE_integer("batch_size", 8, "Images per training step.")
flags.DEFINE_string("memory_probe", None, "Internal: measure peak memory of one method.")
FLAGS = flags.FLAGS

# Method -> MethodConfig options, as configs/vtab/methods/ sets them.
METHOD_OPTIONS = {
    "finetune": {},
    "linear": {},
    "partial": {"partial_layers": 1},
    "lora": {"lora_rank": 8},
    "adapter": {"adapter_dim": 96, "adapter_style": "pfeiffer"},
    "vpt": {"vpt_length": 10, "vpt_placement": "deep"},
    "prefix": {},
}


def _classifier(method):
    import keras

    from kprefix.backbones import build_backbone
    from kprefix.methods import MethodConfig, apply_method
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixImageClassifier

    prefix = PrefixConfig("deep_share", "deep", 10, mlp_hidden=48) if method == "prefix" else None
    model = PrefixImageClassifier(build_backbone("vit_b16_random"), 100, prefix, seed=0)
    apply_method(model, MethodConfig(method, **METHOD_OPTIONS[method]), seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    return model


def _batch():
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.normal(size=(FLAGS.batch_size, 224, 224, 3)).astype("float32"),
            rng.integers(0, 100, FLAGS.batch_size).astype("int32"))


def memory_probe(method):
    x, y = _batch()
    model = _classifier(method)
    print_steady_state_peak(lambda: model.train_on_batch(x, y))


def peak_memory(method):
    return peak_in_subprocess(__file__, f"--memory_probe={method}",
                              f"--batch_size={FLAGS.batch_size}")


def main(argv):
    del argv
    if FLAGS.memory_probe:
        memory_probe(FLAGS.memory_probe)
        return
    from kprefix.methods import count_parameters

    x, y = _batch()
    models = {method: _classifier(method) for method in METHOD_OPTIONS}
    seconds = side_by_side({m: (lambda model=model: model.train_on_batch(x, y))
                            for m, model in models.items()}, FLAGS.steps, warmup=2)
    trainable = {m: count_parameters(model.trainable_weights) for m, model in models.items()}
    del models
    memory = {method: peak_memory(method) for method in METHOD_OPTIONS}
    print(f"\nViT-B/16 (random weights), batch {FLAGS.batch_size}, 224x224, SGD, "
          f"median of {FLAGS.steps} alternating steps; ratios against full fine-tuning")
    print(f"{'method':10} {'trainable':>12} {'step ms':>9} {'/ full':>7} {'peak MiB':>9} {'/ full':>7}")
    for method in METHOD_OPTIONS:
        print(f"{method:10} {trainable[method]:12,} {seconds[method] * 1000:9.1f} "
              f"{seconds[method] / seconds['finetune']:7.3f} {memory[method]:9.0f} "
              f"{memory[method] / memory['finetune']:7.3f}")


if __name__ == "__main__":
    app.run(main)
