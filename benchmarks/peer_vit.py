"""kprefix's ViT prefix-tuning against the authors' PyTorch model, side by side.

    pip install -e ".[peer]"     # torch (CPU)
    python benchmarks/peer_vit.py [--rounds=8] [--threads=2] [--profile] [--json_output=FILE]

Both sides train the same model: a ViT-B/16 config with random weights
(`vit_b16_random`, 224x224), Deep-share prefixes in every layer (P=10 rows of
P' per layer, 768 -> 48 -> tanh -> 2 x 768), a linear head of 100 classes on
the class token, batch 8, SGD with momentum 0.9: 1,515,172 trainable
parameters on each side. The PyTorch side is `vit_reference.py`, a
transcription of the authors' code (ReparamPrefix,
`CV/src/models/vit_prompt/vit.py`) with the file and lines it follows.
kprefix builds its `PrefixImageClassifier` and compiles it the launcher's
way (`python -m kprefix.launch` defaults; `--kprefix_flags` overrides some).

Before timing, the script checks that both sides train the same number of
parameters and compute the same logits (within 1e-4) from the same weights.

Each precision (`--precisions`, float32 and mixed_bfloat16 by default: the
kprefix policy against `torch.autocast(bfloat16)`) gets a fresh pair of
processes, started one after the other so that each one's time to first
step is its own. The two then alternate unit by unit (ABBA: kprefix first in
odd rounds, PyTorch first in even ones). A unit is `--train_steps` training
steps. Two measures:

- `train`: kprefix's units run inside one `fit` call (a callback times the
  steps and waits for the next command between them), as a launcher epoch
  runs them;
- `train_per_call`: one `fit` call per unit, as a notebook or many short runs
  call it (PyTorch's unit is the same loop in both).

The table shows medians over rounds with min-max and the ratio of every
round, the CPU seconds per step, each process's time from its start to the
end of its first training step and its peak resident memory (VmHWM: see `peer_workers.peak_mb`).
`--json_output` writes the ratios, each defined so that higher is better
for kprefix: `train_ratio` and `train_ratio_bf16` (examples/s, kprefix /
PyTorch, inside one fit), `train_ratio_per_call[_bf16]`,
`peak_memory_ratio[_bf16]` (PyTorch / kprefix) and `first_step_ratio[_bf16]`
(PyTorch / kprefix). `--profile` then profiles one `train` unit on each side
and prints where its time went, with call counts of the largest op types.

`--vit=vit_tiny` runs the same comparison on a tiny ViT (16x16
images), a smoke test of the script in seconds.
"""

import time

START = time.perf_counter()  # before the heavy imports: time to first step counts them

import functools  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from peer_workers import (TensorFlowProfile, Worker, cpu_model, cpu_seconds,  # noqa: E402
                          peak_mb, profile_torch, spread)

flags.DEFINE_integer("rounds", 8, "ABBA rounds per measure and precision.", lower_bound=1)
flags.DEFINE_integer("threads", 2, "Intra-op and inter-op threads of each side.", lower_bound=1)
flags.DEFINE_integer("train_steps", 1, "Training steps per timed unit.", lower_bound=1)
flags.DEFINE_integer("batch", 8, "Images per training step.", lower_bound=1)
flags.DEFINE_integer("prefix_vectors", 10, "Rows of P' (prefix vectors) per layer.",
                     lower_bound=1)
flags.DEFINE_enum("vit", "vit_b16_random", ["vit_b16_random", "vit_tiny"],
                  "kprefix built-in ViT config of both sides (vit_tiny: a smoke test).")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"],
                  "Training precisions to compare, each in its own pair of processes.")
flags.DEFINE_list("measures", ["train", "train_per_call"],
                  "train (kprefix's steps inside one fit call) and/or train_per_call.")
flags.DEFINE_list("kprefix_flags", [],
                  "Launch flags to override on the kprefix side, e.g. jit_compile=true.")
flags.DEFINE_bool("profile", False, "Profile one `train` unit of each side after its rounds.")
flags.DEFINE_bool("check_parity", True, "Check parameter counts and logits first.")
flags.DEFINE_string("json_output", None, "Write the ratios and medians to this JSON file.")
flags.DEFINE_bool("worker_logs", False, "Show the worker processes' stderr.")
flags.DEFINE_enum("side", None, ["kprefix", "torch"], "Internal: serve one side.")
flags.DEFINE_enum("worker_precision", "float32", ["float32", "mixed_bfloat16"],
                  "Internal: the serving side's precision.")
FLAGS = flags.FLAGS

NUM_CLASSES, LEARNING_RATE = 100, 0.1
MEASURES = ("train", "train_per_call")
LABELS = {
    "train": "training, steps inside one fit call, examples/s",
    "train_per_call": "training, one fit call per unit, examples/s",
}


# keras-hub `ViTBackbone` arguments of kprefix's built-in configs, spelled out so that
# the PyTorch worker never imports TensorFlow (it would count in its memory and start).
VIT_SIZES = {
    "vit_b16_random": dict(image_shape=(224, 224, 3), patch_size=16, num_layers=12,
                           num_heads=12, hidden_dim=768, mlp_dim=3072),
    "vit_tiny": dict(image_shape=(16, 16, 3), patch_size=4, num_layers=4, num_heads=4,
                     hidden_dim=64, mlp_dim=128),
}


def sizes():
    return VIT_SIZES[FLAGS.vit]


def training_batch():
    """Random images `(B, H, W, 3)` and labels, the same on both sides."""
    size = sizes()["image_shape"][0]
    rng = np.random.default_rng(0)
    return (rng.normal(size=(FLAGS.batch, size, size, 3)).astype("float32"),
            rng.integers(0, NUM_CLASSES, FLAGS.batch).astype("int32"))


def kprefix_training_flags():
    """The launch flags' defaults, with the benchmark's settings and overrides."""
    from types import SimpleNamespace

    from kprefix import launch

    values = {f.name: f.default for f in flags.FLAGS.get_flags_for_module(launch)}
    values.update(optimizer="sgd", learning_rate=LEARNING_RATE, weight_decay=0.0,
                  batch_size=FLAGS.batch, epochs=1, clip_norm=0.0,
                  precision=FLAGS.worker_precision)
    for item in FLAGS.kprefix_flags:
        name, _, text = item.partition("=")
        if name not in values:
            raise app.UsageError(f"--kprefix_flags: {name!r} is not a flag of kprefix.launch.")
        values[name] = flags.FLAGS[name].parser.parse(text)
    return SimpleNamespace(**values)


class KprefixSide:
    """The kprefix worker: a launcher-built classifier, trained by `fit`."""

    def __init__(self):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
        from kprefix.runs import train
        from kprefix.backbones import build_backbone
        from kprefix.experiments.common import compile_for_training
        from kprefix.prefix import PrefixConfig
        from kprefix.tasks import PrefixImageClassifier

        from kprefix.backbones import BUILT_IN

        assert BUILT_IN[FLAGS.vit][1] == sizes(), f"kprefix's {FLAGS.vit} changed"
        settings = kprefix_training_flags()
        train.set_precision(settings.precision, log=lambda *_: None)
        backbone = build_backbone(FLAGS.vit, seed=0, dropout=settings.backbone_dropout,
                                  frozen=True)
        self.model = PrefixImageClassifier(
            backbone, NUM_CLASSES, PrefixConfig("deep_share", "deep", FLAGS.prefix_vectors),
            seed=0, head_init=settings.head_init)
        compile_for_training(self.model, settings, steps_per_epoch=1000, warmup=0)
        self.data = train.without_autotuning(  # as the launcher feeds fit
            tf.data.Dataset.from_tensors(training_batch()).repeat())
        self.fit(1)
        self.info = {"first_step_s": time.perf_counter() - START,
                     "jit_compile": train.jit_compile_for(tf.distribute.get_strategy(),
                                                          settings.jit_compile),
                     "precision": settings.precision}
        self.fit(1)  # warm-up

    def fit(self, steps, callbacks=()):
        history = self.model.fit(self.data, steps_per_epoch=steps, epochs=1, verbose=0,
                                 shuffle=False, callbacks=list(callbacks))
        float(history.history["loss"][-1])

    def serve(self, commands):
        """Answers `commands` (an iterator of lines); `train` units run inside one fit."""
        for command in commands:
            while command and command.endswith("train"):  # `train`, `profile train`: in a fit
                loop = in_fit_units_class()(command, commands)
                self.fit(10**9, callbacks=[loop])
                command = loop.leftover
            if command in ("exit", None):
                return
            if command.startswith("profile "):
                tracer = TensorFlowProfile()
                tracer.start()
                self.fit(FLAGS.train_steps)
                print("PROFILE " + json.dumps(tracer.stop()), flush=True)
            else:
                print(time_unit(lambda: self.fit(FLAGS.train_steps)), flush=True)


def rate_answer(wall, cpu):
    """`RATE examples/s cpu_s_per_step` of a unit that took `wall` and `cpu` seconds."""
    return f"RATE {FLAGS.batch * FLAGS.train_steps / wall} {cpu / FLAGS.train_steps}"


def time_unit(run):
    """The `rate_answer` of one `run()` of a unit."""
    start, cpu = time.perf_counter(), cpu_seconds()
    run()
    return rate_answer(time.perf_counter() - start, cpu_seconds() - cpu)


@functools.lru_cache(maxsize=None)
def in_fit_units_class():
    """The `InFitUnits` callback class (defined on first use: only kprefix imports Keras)."""
    import keras

    class InFitUnits(keras.callbacks.Callback):
        """Times `train` units between batch ends of one long `fit` call.

        Between units it waits for the next command; any command other than
        `train` or `profile train` stops the fit and is left in `leftover`.
        """

        def __init__(self, first_command, commands):
            super().__init__()
            self.commands, self.pending = commands, first_command
            self.unit, self.leftover = None, None

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step has finished, not only been dispatched
            if self.unit is not None:
                self.unit["steps"] += 1
                if self.unit["steps"] < FLAGS.train_steps:
                    return
                if self.unit["tracer"] is not None:
                    print("PROFILE " + json.dumps(self.unit["tracer"].stop()), flush=True)
                else:
                    print(rate_answer(time.perf_counter() - self.unit["start"],
                                      cpu_seconds() - self.unit["cpu"]), flush=True)
                self.unit = None
            command = self.pending or next(self.commands, None)
            self.pending = None
            if command not in ("train", "profile train"):
                self.leftover = command
                self.model.stop_training = True
                return
            tracer = TensorFlowProfile() if command.startswith("profile") else None
            if tracer is not None:
                tracer.start()
            self.unit = {"steps": 0, "tracer": tracer, "start": time.perf_counter(),
                         "cpu": cpu_seconds()}

    return InFitUnits


class TorchSide:
    """The PyTorch worker: the authors' model, a plain training loop."""

    def __init__(self):
        import torch

        torch.set_num_threads(FLAGS.threads)
        torch.set_num_interop_threads(FLAGS.threads)
        from vit_reference import reference_model

        torch.manual_seed(0)
        images, labels = training_batch()
        self.images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        self.labels = torch.from_numpy(labels.astype("int64"))
        self.model = reference_model(sizes(), FLAGS.prefix_vectors, NUM_CLASSES).train()
        self.optimizer = torch.optim.SGD(
            [p for p in self.model.parameters() if p.requires_grad], lr=LEARNING_RATE,
            momentum=0.9)
        self.bf16 = FLAGS.worker_precision == "mixed_bfloat16"
        self.fit(1)
        self.info = {"first_step_s": time.perf_counter() - START, "torch": torch.__version__,
                     "precision": FLAGS.worker_precision}
        self.fit(1)

    def fit(self, steps):
        import torch

        for _ in range(steps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        float(loss)

    def serve(self, commands):
        for command in commands:
            if command == "exit":
                return
            if command.startswith("profile "):
                profile = profile_torch(lambda: self.fit(FLAGS.train_steps))
                print("PROFILE " + json.dumps(profile), flush=True)
            else:
                print(time_unit(lambda: self.fit(FLAGS.train_steps)), flush=True)


def serve(side):
    """Worker: warms up, says READY, then answers one command per stdin line."""
    worker = KprefixSide() if side == "kprefix" else TorchSide()
    print("READY " + json.dumps(worker.info), flush=True)
    worker.serve(line.strip() for line in sys.stdin)
    print(f"PEAK {peak_mb()}", flush=True)


def start_worker(side, precision):
    command = [sys.executable, os.path.abspath(__file__), f"--side={side}",
               f"--worker_precision={precision}"] + [
        FLAGS[name].serialize() for name in ("threads", "train_steps", "batch",
                                             "prefix_vectors", "vit", "kprefix_flags")]
    return Worker(side, command, show_logs=FLAGS.worker_logs)


def check_parity():
    from vit_reference import max_logit_difference

    difference = max_logit_difference(FLAGS.vit, FLAGS.prefix_vectors)
    print(f"parity: same trainable parameter count; max |logit difference| kprefix vs "
          f"PyTorch = {difference:.2e}", flush=True)
    if not difference < 1e-4:
        sys.exit(f"kprefix and PyTorch compute different logits ({difference:.2e} >= 1e-4); "
                 "timings would compare different functions.")


def measure_precision(precision):
    """Runs the rounds of one precision; returns its results."""
    workers = {side: start_worker(side, precision) for side in ("kprefix", "torch")}
    print(f"{precision}: kprefix {workers['kprefix'].info}, PyTorch {workers['torch'].info}",
          flush=True)
    rates = {m: {"kprefix": [], "torch": []} for m in FLAGS.measures}
    cpu = {m: {"kprefix": [], "torch": []} for m in FLAGS.measures}
    profiles = {}
    for measure in FLAGS.measures:
        for n in range(FLAGS.rounds):
            order = ("kprefix", "torch") if n % 2 == 0 else ("torch", "kprefix")
            for side in order:
                rate, seconds = map(float, workers[side].ask(measure, "RATE").split())
                rates[measure][side].append(rate)
                cpu[measure][side].append(seconds)
            print(f"{precision} {measure} round {n + 1} ({' then '.join(order)}): "
                  f"{rates[measure]['kprefix'][-1]:.2f} vs {rates[measure]['torch'][-1]:.2f} "
                  "examples/s", flush=True)
        if FLAGS.profile and measure == "train":
            profiles = {side: json.loads(w.ask("profile train", "PROFILE"))
                        for side, w in workers.items()}
    peaks = {side: worker.close() for side, worker in workers.items()}
    return {"rates": rates, "cpu_s_per_step": cpu, "peak_mb": peaks, "profiles": profiles,
            "first_step_s": {side: w.info["first_step_s"] for side, w in workers.items()}}


def ratios(results):
    """The JSON summary: ratios (higher is better for kprefix) and medians."""
    summary = {}
    for precision, result in results.items():
        suffix = "" if precision == "float32" else "_bf16"
        for measure, sides in result["rates"].items():
            per_round = [a / b for a, b in zip(sides["kprefix"], sides["torch"])]
            name = "train_ratio" if measure == "train" else "train_ratio_per_call"
            summary[name + suffix] = statistics.median(per_round)
            for side, values in sides.items():
                summary[f"{measure}_examples_per_s_{side}{suffix}"] = statistics.median(values)
        for measure, sides in result["cpu_s_per_step"].items():
            for side, values in sides.items():
                summary[f"{measure}_cpu_s_per_step_{side}{suffix}"] = statistics.median(values)
        peaks, first = result["peak_mb"], result["first_step_s"]
        summary["peak_memory_ratio" + suffix] = peaks["torch"] / peaks["kprefix"]
        summary["first_step_ratio" + suffix] = first["torch"] / first["kprefix"]
        for side in ("kprefix", "torch"):
            summary[f"peak_mb_{side}{suffix}"] = peaks[side]
            summary[f"first_step_s_{side}{suffix}"] = first[side]
    return summary


def report(precision, result):
    print(f"\n{precision}, {FLAGS.rounds} rounds; median (min-max) over rounds; "
          "ratio = kprefix / PyTorch")
    print(f"{'measure':48} {'kprefix':>22} {'PyTorch':>22}  ratio per round (median)")
    for measure, sides in result["rates"].items():
        per_round = [a / b for a, b in zip(sides["kprefix"], sides["torch"])]
        print(f"{LABELS[measure]:48} {spread(sides['kprefix']):>22} {spread(sides['torch']):>22}"
              f"  {' '.join(f'{r:.2f}' for r in per_round)} ({statistics.median(per_round):.2f})")
        cpu = result["cpu_s_per_step"][measure]
        print(f"{'  process CPU seconds per step':48} {spread(cpu['kprefix']):>22} "
              f"{spread(cpu['torch']):>22}")
    for title, values in (("time to first training step, s", result["first_step_s"]),
                          ("peak resident memory (VmHWM), MB", result["peak_mb"])):
        print(f"{title:48} {values['kprefix']:>22.1f} {values['torch']:>22.1f}  "
              f"{values['kprefix'] / values['torch']:.2f} (one per process)")
    if result["profiles"]:
        print("\nOne profiled `train` unit per side, seconds per step (profiler on; ops that "
              "overlap on two threads both count)")
        print(f"{'side':8} {'wall':>6} {'matmul':>7} {'softmax+loss':>12} {'other':>6}  "
              "largest op types (seconds, calls)")
        for side, (parts, calls) in result["profiles"].items():
            steps = FLAGS.train_steps
            top = ", ".join(f"{name} {t / steps:.2f} ({calls.get(name, 0) // steps})"
                            for name, t in parts["top"])
            print(f"{side:8} {parts['wall'] / steps:6.2f} {parts['matmul'] / steps:7.2f} "
                  f"{parts['softmax_loss'] / steps:12.2f} {parts['other_ops'] / steps:6.2f}  "
                  f"{top}")


def main(argv):
    del argv
    if FLAGS.side:
        serve(FLAGS.side)
        return
    for name, given, known in (("measures", FLAGS.measures, MEASURES),
                               ("precisions", FLAGS.precisions, ("float32", "mixed_bfloat16"))):
        if not given or set(given) - set(known):
            raise app.UsageError(f"--{name}: choose from {', '.join(known)}.")
    try:
        import torch
    except ImportError:
        print('The PyTorch side needs torch. Install the extra:\n    pip install -e ".[peer]"',
              file=sys.stderr)
        sys.exit(2)
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; {FLAGS.threads} threads per "
          f"side; {FLAGS.vit} (random weights), batch {FLAGS.batch}, Deep-share DEEP "
          f"P={FLAGS.prefix_vectors}, {NUM_CLASSES} classes, SGD; torch {torch.__version__}",
          flush=True)
    if FLAGS.check_parity:
        check_parity()
    results = {precision: measure_precision(precision) for precision in FLAGS.precisions}
    for precision, result in results.items():
        report(precision, result)
    if FLAGS.json_output:
        summary = dict(ratios(results), cpu=cpu_model(), threads=FLAGS.threads,
                       rounds=FLAGS.rounds, backbone=FLAGS.vit,
                       profiles={p: r["profiles"] for p, r in results.items() if r["profiles"]})
        with open(FLAGS.json_output, "w") as output:
            json.dump(summary, output, indent=1)


if __name__ == "__main__":
    app.run(main)
