"""kprefix against Hugging Face PEFT prefix-tuning, side by side.

    pip install -e ".[peer]"     # torch (CPU), transformers, peft
    python benchmarks/peer_peft.py [--rounds=5] [--threads=2] [--train_steps=1] [--profile]

Both sides train and decode the same model: a GPT-2-small config with random
weights (`gpt2_small_random`, dropout 0.1), batch 8 x 128 tokens, prefix
length P=10 in every layer, AdamW, the same number of threads. The pairs are

- training, Deep-share (shared P' and first MLP layer, hidden 512) against
  PEFT `prefix_projection=True` (`encoder_hidden_size=512`);
- training, No-share against PEFT's plain prefixes;
- cached decoding of the Deep-share model, greedy and beam 5, 2 prompts of
  16 tokens, exactly `--new_tokens` new tokens (kprefix: the folded prefix and
  `kprefix.tasks.decoding.generate_gpt2`; PEFT: `model.generate`).

kprefix runs with the project's default training flags (those of
`python -m kprefix.launch`, e.g. `--jit_compile`), compiled by the same code
as a real run; `--kprefix_flags` overrides some of them to compare settings.
`--training_precision=mixed_bfloat16` trains both sides in bf16 (kprefix's policy,
PEFT under `torch.autocast`).

Each side runs in its own process (started one after the other) and then
waits for commands, so that the two alternate unit by unit: in every round
each measure runs once on each side, kprefix first in odd rounds and PEFT
first in even ones (ABBA), and load on the machine affects both sides alike.
A unit is `--train_steps` training steps (after a first step, which includes
compilation, and one warm-up step) or one decoding run (after a warm-up run;
tokens per prompt, beams not counted). The table shows medians over rounds
with min-max and the ratio kprefix / PEFT of every round, then each
process's time from its start to the end of its first training step and its
peak resident memory (VmHWM: see `peer_workers.peak_mb`).

`--profile` then profiles one training unit on each side (TensorFlow's
profiler, `torch.profiler`) and prints where its time went: matrix
products, softmax and loss, other ops, and the largest op types.

Before timing, the script checks that both sides compute the same function
(`peer_parity.py`: same weights, prefixes of the same values, logits within
1e-4 with positions aligned). Without the extra it says how to install it and
exits with status 2.
"""

import time

START = time.perf_counter()  # before the heavy imports: time to first step counts them

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from peer_parity import INSTALL_HINT, peer_missing  # noqa: E402

flags.DEFINE_integer("rounds", 5, "ABBA rounds: in each, every measure runs once on each "
                     "side, the order alternating from round to round.", lower_bound=1)
flags.DEFINE_integer("threads", 2, "Intra-op threads of each side (TF and torch); inter-op "
                     "threads too.", lower_bound=1)
flags.DEFINE_integer("train_steps", 1, "Training steps per timed unit (after the first step "
                     "and one warm-up step).", lower_bound=1)
flags.DEFINE_integer("new_tokens", 16, "Tokens generated per prompt and decoding run.",
                     lower_bound=1)
flags.DEFINE_list("measures", ["train_deep", "train_none", "greedy", "beam"],
                  "Which of train_deep, train_none, greedy, beam to measure.")
flags.DEFINE_list("kprefix_flags", [],
                  "Launch flags to override on the kprefix side, e.g. "
                  "jit_compile=true or precision=mixed_bfloat16.")
flags.DEFINE_enum("training_precision", "float32", ["float32", "mixed_bfloat16"],
                  "Training precision of both sides: kprefix --precision, PEFT "
                  "torch.autocast(bfloat16) (as transformers' Trainer with bf16=True). Decoding "
                  "runs in float32 on both sides.")
flags.DEFINE_bool("profile", False, "After the rounds, profile one training unit of each side "
                  "(TensorFlow's profiler, torch.profiler) and print where its time goes.")
flags.DEFINE_bool("check_parity", True, "Check that both sides compute the same logits first.")
flags.DEFINE_bool("worker_logs", False, "Show the two worker processes' stderr.")
flags.DEFINE_enum("side", None, ["kprefix", "peft"],
                  "Internal: serve one side's measurements in this process.")
FLAGS = flags.FLAGS

BATCH, TOKENS, PREFIX, MLP_HIDDEN = 8, 128, 10, 512
DECODE_BATCH, PROMPT = 2, 16
GPT2_SMALL = dict(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
                  intermediate_dim=3072, max_sequence_length=1024, dropout=0.1)
VARIANTS = {"train_deep": "deep_share", "train_none": "no_share"}
LABELS = {
    "train_deep": ("training, Deep-share vs prefix_projection=True", "examples/s"),
    "train_none": ("training, No-share vs plain prefixes", "examples/s"),
    "greedy": ("greedy decoding, cached", "tokens/s"),
    "beam": ("beam 5 decoding, cached", "tokens/s"),
    "first_step_s": ("time to first training step", "s"),
    "peak_mb": ("peak resident memory (VmHWM)", "MB"),
}


def training_batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(3, GPT2_SMALL["vocabulary_size"] - 1, (BATCH, TOKENS)).astype("int32")
    return ids


def prompts():
    rng = np.random.default_rng(1)
    return rng.integers(3, 50000, (DECODE_BATCH, PROMPT)).astype("int32")


def _peak_mb():
    # The worker's own peak: ru_maxrss would carry over the coordinator's
    # resident size at the fork, which holds both models after the parity check.
    from peer_workers import peak_mb

    return peak_mb()


def _wanted(measure):
    """Whether this process builds `measure`'s model (decoding uses the Deep-share one)."""
    return measure in FLAGS.measures or (measure == "train_deep"
                                         and {"greedy", "beam"} & set(FLAGS.measures))


def kprefix_training_flags():
    """The launch flags' defaults, with the benchmark's own settings and overrides."""
    from types import SimpleNamespace

    from kprefix import launch

    values = {f.name: f.default for f in flags.FLAGS.get_flags_for_module(launch)}
    values.update(optimizer="adamw", learning_rate=5e-5, weight_decay=0.0, batch_size=BATCH,
                  epochs=1, clip_norm=0.0, precision=FLAGS.training_precision)
    for item in FLAGS.kprefix_flags:
        name, _, text = item.partition("=")
        if name not in values:
            raise app.UsageError(f"--kprefix_flags: {name!r} is not a flag of kprefix.launch.")
        values[name] = flags.FLAGS[name].parser.parse(text)
    return SimpleNamespace(**values)


def kprefix_units():
    """`(settings, {measure: (run one unit, examples or tokens per unit)})`, warmed up."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from kprefix.runs import train
    from kprefix.backbones import BUILT_IN
    from kprefix.tasks.decoding import generate_gpt2
    from kprefix.experiments.common import compile_for_training
    from peer_parity import kprefix_lm

    built_in = BUILT_IN["gpt2_small_random"][1]
    assert all(built_in[k] == GPT2_SMALL[k] for k in built_in), "gpt2_small_random changed"
    settings = kprefix_training_flags()
    train.set_precision(settings.precision)
    ids = training_batch()
    x = {"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}
    data = train.without_autotuning(  # as the launcher feeds fit
        tf.data.Dataset.from_tensors((x, np.roll(ids, -1, axis=1))).repeat())
    info = {"jit_compile": train.jit_compile_for(tf.distribute.get_strategy(),
                                                  settings.jit_compile),
            "precision": settings.precision}
    units, models = {}, {}
    for measure in ("train_deep", "train_none"):
        if not _wanted(measure):
            continue
        lm = kprefix_lm(VARIANTS[measure], length=PREFIX, mlp_hidden=MLP_HIDDEN)
        compile_for_training(lm, settings, steps_per_epoch=1000, warmup=0)
        models[measure] = lm
        if measure not in FLAGS.measures:
            continue

        def fit(lm=lm, steps=FLAGS.train_steps):
            history = lm.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
            float(history.history["loss"][-1])

        fit(steps=1)
        info.setdefault("first_step_s", time.perf_counter() - START)
        fit(steps=1)
        units[measure] = (fit, BATCH * FLAGS.train_steps)
    if {"greedy", "beam"} & set(FLAGS.measures):
        train.set_precision("float32")
        folded = models["train_deep"].fold()
        token_ids = tf.constant(prompts())
        mask = tf.ones_like(token_ids, tf.bool)
        for measure, beams in (("greedy", 1), ("beam", 5)):
            if measure not in FLAGS.measures:
                continue

            @tf.function(jit_compile=True)
            def generate(token_ids, mask, beams=beams):
                return generate_gpt2(folded, token_ids, mask, num_beams=beams,
                                     max_new_tokens=FLAGS.new_tokens,
                                     min_new_tokens=FLAGS.new_tokens, end_token_id=50256)

            def decode(generate=generate):
                [t.numpy() for t in generate(token_ids, mask)]

            decode()  # compilation
            units[measure] = (decode, DECODE_BATCH * FLAGS.new_tokens)
    return info, units


def peft_units():
    """As `kprefix_units`, for the PEFT side."""
    import torch

    torch.set_num_threads(FLAGS.threads)
    torch.set_num_interop_threads(FLAGS.threads)
    from peer_parity import hf_gpt2_config, peft_lm

    torch.manual_seed(0)
    config = hf_gpt2_config(**GPT2_SMALL)
    ids = torch.from_numpy(training_batch().astype("int64"))
    mask = torch.ones_like(ids)
    bf16 = FLAGS.training_precision == "mixed_bfloat16"
    info = {"torch": torch.__version__, "precision": FLAGS.training_precision}
    units, models = {}, {}
    for measure in ("train_deep", "train_none"):
        if not _wanted(measure):
            continue
        model = peft_lm(config, VARIANTS[measure], PREFIX, MLP_HIDDEN)
        models[measure] = model
        if measure not in FLAGS.measures:
            continue
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                      lr=5e-5, weight_decay=0.0)

        def fit(model=model, optimizer=optimizer, steps=FLAGS.train_steps):
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            float(loss)

        fit(steps=1)
        info.setdefault("first_step_s", time.perf_counter() - START)
        fit(steps=1)
        units[measure] = (fit, BATCH * FLAGS.train_steps)
    if {"greedy", "beam"} & set(FLAGS.measures):
        model = models["train_deep"].eval()
        prompt = torch.from_numpy(prompts().astype("int64"))
        for measure, beams in (("greedy", 1), ("beam", 5)):
            if measure not in FLAGS.measures:
                continue

            def decode(beams=beams):
                with torch.no_grad():
                    model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                   max_new_tokens=FLAGS.new_tokens,
                                   min_new_tokens=FLAGS.new_tokens, num_beams=beams,
                                   do_sample=False, pad_token_id=50256)

            decode()  # warm-up
            units[measure] = (decode, DECODE_BATCH * FLAGS.new_tokens)
    return info, units


def serve(side):
    """Worker: warms up, says READY, then times one unit per command on stdin."""
    info, units = kprefix_units() if side == "kprefix" else peft_units()
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        measure = line.strip()
        if measure == "exit":
            break
        if measure.startswith("profile "):
            run, _ = units[measure.split()[1]]
            profile = profile_kprefix if side == "kprefix" else profile_peft
            print("PROFILE " + json.dumps(profile(run)), flush=True)
            continue
        run, work = units[measure]
        start = time.perf_counter()
        run()
        print(f"RATE {work / (time.perf_counter() - start)}", flush=True)
    print(f"PEAK {_peak_mb()}", flush=True)


# Op types that are matrix products (TensorFlow's oneDNN kernels, torch's aten ops).
MATMUL_OP = re.compile(r"MatMul|Einsum|^aten::(mm|addmm|bmm|baddbmm|addbmm)$")
LOSS_OP = re.compile(r"Softmax|CrossEntropy|^aten::(_log_softmax|_softmax|nll_loss|cross_entropy)")
# A TensorFlow op's profiler event is named `scope/name:Type`.
TF_OP_EVENT = re.compile(r"^(.*[^:]):([A-Za-z_][A-Za-z0-9_]*)$")


def _op_breakdown(seconds_by_type, wall):
    """`{"wall": s, "matmul": s, "softmax_loss": s, "other_ops": s, "top": [...]}`."""
    matmul = sum(t for k, t in seconds_by_type.items() if MATMUL_OP.search(k))
    loss = sum(t for k, t in seconds_by_type.items() if LOSS_OP.search(k))
    top = sorted(seconds_by_type.items(), key=lambda item: -item[1])[:6]
    return {"wall": wall, "matmul": matmul, "softmax_loss": loss,
            "other_ops": sum(seconds_by_type.values()) - matmul - loss, "top": top}


def profile_kprefix(run):
    """Op time by type of one unit, from TensorFlow's profiler (its compute threads)."""
    import collections
    import glob
    import tempfile

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        [path] = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        with open(path, "rb") as trace:
            space.ParseFromString(trace.read())
    seconds = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if line.name.startswith("tf_Compute"):
                for event in line.events:
                    match = TF_OP_EVENT.match(plane.event_metadata[event.metadata_id].name)
                    if match:
                        seconds[match.group(2)] += event.duration_ps / 1e12
    return _op_breakdown(seconds, wall)


def profile_peft(run):
    """Op self time by type of one unit, from torch.profiler."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    seconds = {event.key: event.self_cpu_time_total / 1e6
               for event in profiler.key_averages() if event.self_cpu_time_total > 0}
    return _op_breakdown(seconds, wall)


class Worker:
    """One side's process, driven line by line."""

    def __init__(self, side):
        command = [sys.executable, os.path.abspath(__file__), f"--side={side}"] + [
            FLAGS[name].serialize() for name in ("threads", "train_steps", "new_tokens",
                                                 "measures", "kprefix_flags",
                                                 "training_precision")]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONWARNINGS="ignore")
        self.side = side
        self.stderr = open(os.devnull, "w") if not FLAGS.worker_logs else None
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, text=True, env=env)
        self.info = json.loads(self._answer("READY"))

    def _answer(self, tag):
        for line in self.process.stdout:
            if line.startswith(tag + " "):
                return line[len(tag) + 1:]
        sys.exit(f"The {self.side} side stopped (exit {self.process.wait()}); rerun with "
                 "--worker_logs to see why.")

    def rate(self, measure):
        self.process.stdin.write(measure + "\n")
        self.process.stdin.flush()
        return float(self._answer("RATE"))

    def profile(self, measure):
        self.process.stdin.write(f"profile {measure}\n")
        self.process.stdin.flush()
        return json.loads(self._answer("PROFILE"))

    def close(self):
        self.process.stdin.write("exit\n")
        self.process.stdin.flush()
        peak = float(self._answer("PEAK"))
        self.process.wait()
        return peak


def check_parity():
    from peer_parity import max_logit_difference

    for variant in ("deep_share", "no_share"):
        difference = max_logit_difference(variant, length=PREFIX, mlp_hidden=MLP_HIDDEN)
        print(f"parity {variant}: max |logit difference| kprefix vs PEFT = {difference:.2e}",
              flush=True)
        if not difference < 1e-4:
            sys.exit(f"kprefix and PEFT compute different logits ({difference:.2e} >= 1e-4); "
                     "timings would compare different functions.")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _spread(values):
    return f"{statistics.median(values):9.2f} ({min(values):.2f}-{max(values):.2f})"


def report(rates, first_step, peaks):
    print(f"\n{FLAGS.rounds} rounds; median (min-max) over rounds; ratio = kprefix / PEFT")
    print(f"{'measure':50} {'kprefix':>22} {'PEFT':>22}  ratio per round (median)")
    for measure, sides in rates.items():
        title, unit = LABELS[measure]
        ratios = [a / b for a, b in zip(sides["kprefix"], sides["peft"])]
        print(f"{title + ', ' + unit:50} {_spread(sides['kprefix']):>22} "
              f"{_spread(sides['peft']):>22}  {' '.join(f'{r:.2f}' for r in ratios)} "
              f"({statistics.median(ratios):.2f})")
    for measure, values in (("first_step_s", first_step), ("peak_mb", peaks)):
        if len(values) == 2:
            title, unit = LABELS[measure]
            print(f"{title + ', ' + unit:50} {values['kprefix']:>22.1f} {values['peft']:>22.1f}"
                  f"  {values['kprefix'] / values['peft']:.2f} (one per process)")


def report_profiles(profiles):
    """Where one profiled training unit's time went, per side, in seconds per step."""
    print("\nOne profiled unit per side, seconds per training step (with the profiler on, so "
          "walls run a little slower than above); an op's time is its wall time, and ops that "
          "overlap on two threads both count")
    print(f"{'measure, side':28} {'wall':>7} {'matmul':>7} {'softmax+loss':>12} "
          f"{'other ops':>9}  largest op types")
    for (measure, side), parts in profiles.items():
        per_step = {k: parts[k] / FLAGS.train_steps
                    for k in ("wall", "matmul", "softmax_loss", "other_ops")}
        top = ", ".join(f"{name} {t / FLAGS.train_steps:.2f}" for name, t in parts["top"])
        print(f"{measure + ', ' + side:28} {per_step['wall']:7.2f} {per_step['matmul']:7.2f} "
              f"{per_step['softmax_loss']:12.2f} {per_step['other_ops']:9.2f}  {top}")


def main(argv):
    del argv
    if FLAGS.side:
        serve(FLAGS.side)
        return
    unknown = set(FLAGS.measures) - {"train_deep", "train_none", "greedy", "beam"}
    if unknown:
        raise app.UsageError(f"--measures: unknown {sorted(unknown)}; use train_deep, "
                             "train_none, greedy, beam.")
    missing = peer_missing()
    if missing:
        print(f"The PEFT side needs {missing}. Install the extra:\n    {INSTALL_HINT}",
              file=sys.stderr)
        sys.exit(2)
    import torch

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; {FLAGS.threads} threads per "
          f"side; GPT-2 small config (random weights, dropout 0.1), batch {BATCH} x {TOKENS} "
          f"tokens, P={PREFIX}, AdamW, {FLAGS.training_precision}; torch "
          f"{torch.__version__}", flush=True)
    if FLAGS.check_parity:
        check_parity()
    # Started one after the other, so that each one's time to first step is its own.
    workers = {side: Worker(side) for side in ("kprefix", "peft")}
    print(f"kprefix: {workers['kprefix'].info}\nPEFT: {workers['peft'].info}", flush=True)
    rates = {m: {"kprefix": [], "peft": []} for m in FLAGS.measures}
    for n in range(FLAGS.rounds):
        order = ("kprefix", "peft") if n % 2 == 0 else ("peft", "kprefix")
        for measure in FLAGS.measures:
            for side in order:
                rates[measure][side].append(workers[side].rate(measure))
        print(f"round {n + 1} ({' then '.join(order)}): " + "; ".join(
            f"{m} {rates[m]['kprefix'][-1]:.2f} vs {rates[m]['peft'][-1]:.2f}"
            for m in FLAGS.measures), flush=True)
    profiles = {(measure, side): workers[side].profile(measure)
                for measure in FLAGS.measures if FLAGS.profile and measure.startswith("train")
                for side in ("kprefix", "peft")}
    peaks = {side: worker.close() for side, worker in workers.items()}
    report(rates, {side: w.info["first_step_s"] for side, w in workers.items()
                   if "first_step_s" in w.info}, peaks)
    if profiles:
        report_profiles(profiles)


if __name__ == "__main__":
    app.run(main)
