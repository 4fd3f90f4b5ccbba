"""kprefix against Hugging Face PEFT on the paper's own E2E workload, side by side.

    pip install -e ".[peer]"     # torch (CPU), transformers, peft
    python benchmarks/peer_e2e.py [--rounds=2] [--examples=100] [--json_output=FILE]

The defaults are sized to finish in under 20 minutes on a 2-core machine;
`--examples=400 --decode_sources=50 --rounds=4` is the fuller measurement.

The workload is the first `--examples` E2E training pairs (reference
framing, `' source <eos> target <eos>'`) in one fixed order at batch 10,
with the `--config=nlg/e2e` recipe on both sides: Deep-share prefixes of
length 5 (MLP hidden 512), no backbone dropout, AdamW (lr 1e-4, epsilon
1e-8), gradients clipped to norm 1.0, on a GPT-2-small-sized model with
random weights. Texts are tokenized once, by a byte-level BPE with
`--merges` merges learnt from the E2E training texts and the replication's
offline corpus (`kprefix.replicate.byte_pair_encoding`, `pretrain_text`),
and both sides get the same ids,
so sequences have realistic lengths (about 60 tokens).

The sides train as their users do:

- kprefix: length buckets (`--length_buckets=auto`) and, in the same
  rounds but its own process, one fixed shape (`none`: every batch padded to
  128 + 128 tokens), so that each configuration's memory is its own; the
  loss is the authors' per-sequence sum (`--text_loss=sequence_sum`).
- PEFT (`prefix_projection=True`): each batch padded to its longest example,
  the loss on the target tokens, in a random order and with Hugging Face's
  length grouping (`group_by_length=True`: megabatches of 50 batches sorted
  by length).

A training unit is one pass over the examples (one Keras `fit` call on the
kprefix side), after a first pass that compiles every shape. Each side runs in its
own process; in every round each unit runs once, kprefix first in odd rounds
and PEFT first in even ones (ABBA). Reported: real examples/s and real target
tokens/s (medians over rounds), each process's time from its start to the
end of its first training step, and its peak resident memory (VmHWM, `peer_workers.peak_mb`).

First, a parity check: both sides compute the same logits on the model and
prefix length used here (within 1e-4, `peer_parity.py`).

Decoding: the first `--decode_sources` E2E test sources, beam 5, at most
`--new_tokens` new tokens, batches of 10 (kprefix: the export's serving
function over length-sorted batches, as a launch's evaluation runs it; PEFT:
`generate` over left-padded batches). Not measured yet: BART on XSUM.
"""

import time

START = time.perf_counter()  # before the heavy imports: time to first step counts them

import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from peer_parity import INSTALL_HINT, peer_missing  # noqa: E402
from peer_workers import Worker, cpu_model, peak_mb  # noqa: E402

flags.DEFINE_integer("rounds", 2, "ABBA rounds (kprefix first in odd ones).", lower_bound=1)
flags.DEFINE_integer("examples", 100, "E2E training pairs in the workload.", lower_bound=10)
flags.DEFINE_integer("merges", 8192, "BPE merges learnt from the E2E training texts and "
                     "the offline corpus.",
                     lower_bound=1)
flags.DEFINE_integer("decode_sources", 20, "E2E test sources decoded with beam 5 per unit.",
                     lower_bound=1)
flags.DEFINE_integer("new_tokens", 100, "Most new tokens per decoded source.", lower_bound=1)
flags.DEFINE_integer("threads", 2, "Intra- and inter-op threads of each side.", lower_bound=1)
flags.DEFINE_string("data_dir", None, "Folder holding e2e/ (default: $KPREFIX_SHARED_DATA "
                    "or ../shared/data).")
flags.DEFINE_string("json_output", None, "Also write the medians and ratios here.")
flags.DEFINE_bool("check_parity", True, "Check that both sides compute the same logits first.")
flags.DEFINE_bool("worker_logs", False, "Show the workers' stderr.")
flags.DEFINE_string("side", None, "Internal: run as the worker of this side.")
flags.DEFINE_string("workload", None, "Internal: the tokenized workload file.")
FLAGS = flags.FLAGS

BATCH = 10
PREFIX = 5
MLP_HIDDEN = 512
SOURCE_LENGTH = TARGET_LENGTH = 128  # configs/nlg/table_to_text.cfg
# kprefix's built-in gpt2_small_random (as benchmarks/peer_peft.py), without dropout.
GPT2_SMALL = dict(vocabulary_size=50257, num_layers=12, num_heads=12, hidden_dim=768,
                  intermediate_dim=3072, max_sequence_length=1024, dropout=0.0)
# Each side is one process; kprefix's fixed-shape training runs in its own.
UNITS = {"kprefix": ("bucketed", "decode"), "kprefix_fixed": ("fixed",),
         "peft": ("random", "grouped", "decode")}
BEAMS = 5


def workload(path):
    """Tokenizes the first `--examples` pairs once; writes ids and target masks to `path`."""
    from kprefix.data import nlg
    from kprefix.replicate.byte_pair_encoding import gpt2_tokenizer, learn_byte_pair_encoding

    from kprefix.replicate.pretrain_text import pretraining_corpus

    examples = nlg.load_task("e2e", "train", FLAGS.data_dir, source_format="reference")
    pairs = list(nlg.training_pairs(examples))
    # E2E alone supports about 3.7k merges (pairs seen twice); the replication's
    # offline corpus (WebNLG, XSUM) brings more.
    corpus, _ = pretraining_corpus(FLAGS.data_dir)
    vocabulary, merges = learn_byte_pair_encoding(
        [text for pair in pairs for text in pair] + corpus, FLAGS.merges + 257)
    tokenizer = gpt2_tokenizer(vocabulary, merges)
    end = tokenizer.end_token_id
    sequences, is_target = [], []
    for source, target in pairs[:FLAGS.examples]:
        source_ids = list(np.ravel(tokenizer.tokenize(f" {source} ")))
        target_ids = list(np.ravel(tokenizer.tokenize(f" {target} ")))
        ids = (source_ids + [end] + target_ids + [end])[:SOURCE_LENGTH + TARGET_LENGTH + 1]
        sequences.append(ids)
        is_target.append(([0] * (len(source_ids) + 1) + [1] * (len(target_ids) + 1))[:len(ids)])
    lengths = np.array([len(s) for s in sequences])
    width = lengths.max()
    test = nlg.load_task("e2e", "test", FLAGS.data_dir, source_format="reference")
    sources = nlg.evaluation_sources(test)[:FLAGS.decode_sources]
    np.savez(path, ids=np.array([s + [end] * (width - len(s)) for s in sequences], np.int32),
             is_target=np.array([t + [0] * (width - len(t)) for t in is_target], np.int32),
             lengths=lengths, end=end, merges=len(merges), sources=np.array(sources),
             vocabulary=json.dumps(vocabulary), merge_list=np.array(merges))
    return lengths


def kprefix_e2e_flags():
    """The launch flags' defaults with configs/nlg/e2e.cfg's training settings."""
    from types import SimpleNamespace

    from kprefix import launch

    values = {f.name: f.default for f in flags.FLAGS.get_flags_for_module(launch)}
    values.update(optimizer="adamw", learning_rate=1e-4, weight_decay=0.0, batch_size=BATCH,
                  epochs=1, clip_norm=1.0, adam_epsilon=1e-8, warmup_steps=0,
                  backbone_dropout=False, text_loss="sequence_sum")
    return SimpleNamespace(**values)


def kprefix_units(data, side):
    """`{unit: run one pass}` of a kprefix side (see `UNITS`), each compiled by a first pass."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from kprefix.runs import train
    from kprefix.backbones import build_backbone
    from kprefix.data.length_buckets import bucket_ids, epoch_batches, parse_length_buckets
    from kprefix.experiments.common import compile_for_training
    from kprefix.prefix import PrefixConfig
    from kprefix.tasks import PrefixGPT2CausalLM
    from kprefix.tasks.text_loss import SequenceSumCrossentropy

    ids, is_target, lengths = data["ids"], data["is_target"], data["lengths"]
    maximum = SOURCE_LENGTH + TARGET_LENGTH
    settings = kprefix_e2e_flags()
    train.set_precision(settings.precision)
    config = PrefixConfig("deep_share", "deep", PREFIX, mlp_hidden=MLP_HIDDEN,
                          share_across_layers=True)
    lm = PrefixGPT2CausalLM(build_backbone("gpt2_small_random", dropout=False, frozen=True),
                            prefix_config=config)
    steps = len(lengths) // BATCH
    compile_for_training(lm, settings, steps, 0, loss=SequenceSumCrossentropy())
    units = {}
    for unit, spec in (("bucketed", "auto"), ("fixed", "none")):
        if unit not in UNITS[side]:
            continue
        # Real length = tokens fed in (the last token is only a label).
        boundaries = parse_length_buckets(spec, lengths - 1, maximum)
        buckets = bucket_ids([lengths - 1], [boundaries])
        batches = []
        for indices, bucket in epoch_batches(buckets, BATCH, 0, 0, True).as_numpy_iterator():
            width = boundaries[bucket]
            sequence = np.full([BATCH, width + 1], data["end"], np.int32)
            part = ids[indices, :width + 1]
            sequence[:, :part.shape[1]] = part
            weights = np.zeros([BATCH, width], np.float32)
            targets = is_target[indices, 1:width + 1]
            weights[:, :targets.shape[1]] = targets
            mask = (np.arange(width)[None] < (lengths[indices] - 1)[:, None]).astype(np.int32)
            batches.append(({"token_ids": sequence[:, :-1], "padding_mask": mask},
                            sequence[:, 1:], weights))
        signature = (({"token_ids": tf.TensorSpec([BATCH, None], tf.int32),
                   "padding_mask": tf.TensorSpec([BATCH, None], tf.int32)},
                  tf.TensorSpec([BATCH, None], tf.int32), tf.TensorSpec([BATCH, None], tf.float32)))
        dataset = train.without_autotuning(tf.data.Dataset.from_generator(
            lambda b=batches: iter(b), output_signature=signature).cache())

        def run(dataset=dataset, steps=None):
            lm.fit(dataset.take(steps) if steps else dataset, epochs=1, verbose=0,
                   shuffle=False)
        units[unit] = (run, len({b[1].shape for b in batches}))
    if "decode" in UNITS[side]:
        units["decode"] = (kprefix_decoding(lm, data), None)
    return lm, units


def kprefix_decoding(lm, data):
    """One unit: the evaluation's decoding of the test sources (length-sorted batches of
    10 through the export's serving function, beam 5, stopping when all beams are done).
    The serving function is built at the first call."""
    from kprefix.experiments.text_generation import generate_texts
    from kprefix.runs.export import export_text_generator
    from kprefix.replicate.byte_pair_encoding import gpt2_tokenizer

    tokenizer = gpt2_tokenizer(json.loads(str(data["vocabulary"])),
                               [str(m) for m in data["merge_list"]])
    settings = dict(num_beams=BEAMS, max_new_tokens=FLAGS.new_tokens,
                    end_token_id=tokenizer.end_token_id, pad_token_id=tokenizer.end_token_id)
    sources = [str(s) for s in data["sources"]]
    serve = []

    def run(steps=None):
        if not serve:
            # Built at the first decoding, after training as in a launch: folding
            # copies the model, which the time to the first step should not pay.
            serve.append(export_text_generator(lm, tokenizer, None, SOURCE_LENGTH, settings,
                                               write=False, reference_framing=True))
        generate_texts(serve[0], sources, BATCH)
    return run


def peft_units(data):
    """As `kprefix_units`, for the PEFT side (batches padded to their longest example)."""
    import torch

    torch.set_num_threads(FLAGS.threads)
    torch.set_num_interop_threads(FLAGS.threads)
    from peer_parity import hf_gpt2_config, peft_lm

    torch.manual_seed(0)
    config = hf_gpt2_config(**GPT2_SMALL)
    model = peft_lm(config, "deep_share", PREFIX, MLP_HIDDEN).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, eps=1e-8, weight_decay=0.0)
    ids, is_target, lengths = data["ids"], data["is_target"], data["lengths"]
    count = len(lengths) // BATCH * BATCH
    random_order = np.random.default_rng(0).permutation(len(lengths))[:count]
    # transformers' LengthGroupedSampler: megabatches of 50 batches, each sorted by length.
    megabatch = 50 * BATCH
    grouped = np.concatenate([sorted(random_order[i:i + megabatch], key=lambda j: -lengths[j])
                              for i in range(0, count, megabatch)])

    def run(order, steps=None):
        for start in range(0, BATCH * steps if steps else count, BATCH):
            rows = order[start:start + BATCH]
            width = int(lengths[rows].max())
            tokens = torch.from_numpy(ids[rows, :width].astype("int64"))
            labels = tokens.masked_fill(torch.from_numpy(is_target[rows, :width] == 0), -100)
            mask = torch.from_numpy((np.arange(width)[None] < lengths[rows][:, None])
                                    .astype("int64"))
            loss = model(input_ids=tokens, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss)

    return model, {"random": (lambda steps=None: run(random_order, steps), None),
                   "grouped": (lambda steps=None: run(grouped, steps), None),
                   "decode": (peft_decoding(model, data), None)}


def peft_decoding(model, data):
    """One unit: `generate` over the test sources, batches of 10 in their order,
    left-padded as decoder-only generation needs, beam 5 (Hugging Face's default
    stop: when no beam can improve)."""
    import torch

    from kprefix.replicate.byte_pair_encoding import gpt2_tokenizer

    tokenizer = gpt2_tokenizer(json.loads(str(data["vocabulary"])),
                               [str(m) for m in data["merge_list"]])
    end = tokenizer.end_token_id
    prompts = [list(np.ravel(tokenizer.tokenize(f" {s} "))) + [end] for s in data["sources"]]

    def run(steps=None):
        model.eval()
        with torch.no_grad():
            for start in range(0, len(prompts), BATCH):
                batch = prompts[start:start + BATCH]
                width = max(len(p) for p in batch)
                ids = torch.tensor([[end] * (width - len(p)) + p for p in batch])
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
                model.generate(input_ids=ids, attention_mask=mask, num_beams=BEAMS,
                               max_new_tokens=FLAGS.new_tokens, do_sample=False,
                               pad_token_id=end, eos_token_id=end)
        model.train()
    return run


def serve(side):
    """Worker: compiles every unit (first step timed), says READY, then times units."""
    data = dict(np.load(FLAGS.workload))
    _, units = peft_units(data) if side == "peft" else kprefix_units(data, side)
    info = {}
    for unit, (run, shapes) in units.items():
        if not info:
            run(steps=1)
            info["first_step_s"] = time.perf_counter() - START
        run()  # the first pass compiles each shape (decoding: each prompt width)
        info[f"{unit}_peak_mb"] = round(peak_mb())  # the high-water mark so far
        if shapes:
            info[f"{unit}_shapes"] = shapes
    print("READY " + json.dumps(info), flush=True)
    for line in sys.stdin:
        unit = line.strip()
        if unit == "exit":
            break
        start = time.perf_counter()
        units[unit][0]()
        print(f"SECONDS {time.perf_counter() - start}", flush=True)
    print(f"PEAK {peak_mb()}", flush=True)


def start_worker(side, workload_path):
    """This script as one side's process (see `peer_workers.Worker`)."""
    command = [sys.executable, os.path.abspath(__file__), f"--side={side}",
               f"--workload={workload_path}", f"--threads={FLAGS.threads}",
               f"--new_tokens={FLAGS.new_tokens}"]
    return Worker(side, command, show_logs=FLAGS.worker_logs)


def main(argv):
    del argv
    if FLAGS.side:
        serve(FLAGS.side)
        return
    missing = peer_missing()
    if missing:
        print(f"The PEFT side needs {missing}. Install the extra:\n    {INSTALL_HINT}",
              file=sys.stderr)
        sys.exit(2)
    import tempfile

    folder = tempfile.mkdtemp(prefix="peer_e2e_")
    path = os.path.join(folder, "workload.npz")
    lengths = workload(path)
    data = np.load(path)
    examples = len(lengths) // BATCH * BATCH
    target_tokens = int(data["is_target"][:examples].sum())
    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; {FLAGS.threads} threads per "
          f"side; GPT-2 small config (random weights, no dropout), Deep-share P={PREFIX}, "
          f"batch {BATCH}; {examples} E2E pairs, BPE of {int(data['merges'])} merges: "
          f"{lengths.mean():.1f} tokens per pair on average (max {lengths.max()}), "
          f"{target_tokens} target tokens", flush=True)
    if FLAGS.check_parity:
        from peer_parity import max_logit_difference

        difference = max_logit_difference("deep_share", length=PREFIX, mlp_hidden=MLP_HIDDEN)
        print(f"parity: max |logit difference| kprefix vs PEFT = {difference:.2e}", flush=True)
        if not difference < 1e-4:
            sys.exit(f"kprefix and PEFT compute different logits ({difference:.2e}).")
    workers = {side: start_worker(side, path) for side in UNITS}
    for side, worker in workers.items():
        print(f"{side}: {worker.info}", flush=True)
    seconds = {(side, unit): [] for side, units in UNITS.items() for unit in units}
    for n in range(FLAGS.rounds):
        order = tuple(UNITS) if n % 2 == 0 else tuple(reversed(UNITS))
        for side in order:
            for unit in UNITS[side]:
                seconds[side, unit].append(float(workers[side].ask(unit, "SECONDS")))
        print(f"round {n + 1}: " + "; ".join(f"{s} {u} {v[-1]:.1f}s"
                                             for (s, u), v in seconds.items()), flush=True)
    peaks = {side: worker.close() for side, worker in workers.items()}
    shutil.rmtree(folder)
    rates = {f"{s.split('_')[0]}_{u}": examples / statistics.median(v)
             for (s, u), v in seconds.items() if u != "decode"}
    decoded = len(data["sources"])
    decode = {s: decoded / statistics.median(seconds[s, "decode"]) for s in ("kprefix", "peft")}
    first = {side: w.info["first_step_s"] for side, w in workers.items()}
    gpt2 = {
        "examples_per_s": rates,
        "target_tokens_per_s": {k: v * target_tokens / examples for k, v in rates.items()},
        "decoded_sources_per_s": decode,
        "first_step_s": first,
        "peak_mb": peaks,
        "kprefix_shapes": {"bucketed": workers["kprefix"].info["bucketed_shapes"],
                           "fixed": workers["kprefix_fixed"].info["fixed_shapes"]},
        # High-water marks after each unit's first pass: what training alone
        # needs, before the decoding.
        "peak_mb_after_unit": {side: {u: w.info[f"{u}_peak_mb"] for u in UNITS[side]}
                               for side, w in workers.items()},
    }
    results = {
        "cpu": cpu_model(), "rounds": FLAGS.rounds, "examples": examples,
        "train_ratio": rates["kprefix_bucketed"] / rates["peft_random"],
        "train_ratio_grouped": rates["kprefix_bucketed"] / rates["peft_grouped"],
        "decode_ratio": decode["kprefix"] / decode["peft"],
        "first_step_ratio": first["peft"] / first["kprefix"],
        "peak_memory_ratio": peaks["peft"] / peaks["kprefix"],
        "bucketing_gain": rates["kprefix_bucketed"] / rates["kprefix_fixed"],
        "gpt2_e2e": gpt2,
    }
    print(f"\nmedian over {FLAGS.rounds} rounds, real examples/s (target tokens/s):")
    for name, rate in rates.items():
        print(f"  {name:18} {rate:8.2f} ({gpt2['target_tokens_per_s'][name]:8.1f})")
    print(f"beam-{BEAMS} decoding of {decoded} test sources, sources/s: kprefix "
          f"{decode['kprefix']:.2f}, PEFT {decode['peft']:.2f}")
    print(f"time to the first training step (process start to its end): "
          f"kprefix {first['kprefix']:.1f}s, PEFT {first['peft']:.1f}s")
    print(f"peak memory: kprefix {peaks['kprefix']:.0f} MB (fixed shape, its own process: "
          f"{peaks['kprefix_fixed']:.0f} MB), PEFT {peaks['peft']:.0f} MB")
    print(json.dumps({k: v for k, v in results.items() if k.endswith(("ratio", "gain",
                                                                      "grouped"))}))
    if FLAGS.json_output:
        with open(FLAGS.json_output, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    app.run(main)
