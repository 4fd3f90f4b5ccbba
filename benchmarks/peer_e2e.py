"""kprefix against Hugging Face PEFT on the paper's own text workloads, side by side:
GPT-2 on E2E and BART on XSUM.

    pip install -e ".[peer]"     # torch (CPU), transformers, peft
    python benchmarks/peer_e2e.py [--rounds=2] [--examples=400] [--json_output=FILE]

The defaults (400 E2E pairs, 50 decoded E2E sources, 32 XSUM documents,
2 rounds) take well over an hour on a 2-core machine;
`--examples=100 --decode_sources=20 --xsum_examples=16 --xsum_decode_sources=10`
took 41 minutes, and `--size=tiny` (tiny configs of both models) is a smoke
run of a few minutes.

Each model's weights are random, made once by `transformers` (seed 0) and
saved as a Hugging Face checkpoint folder that both sides load: PEFT with
`from_pretrained`, kprefix as a launch does (`--backbone=<folder>`, keras-hub's
converter, the frozen backbone in the compute dtype).

**GPT-2 on E2E.** The first `--examples` E2E training pairs (reference
framing, `' source <eos> target <eos>'`) in one fixed order at batch 10, with
the `--config=nlg/e2e` recipe on both sides: Deep-share prefixes of length 5
(MLP hidden 512), no backbone dropout, AdamW (lr 1e-4, epsilon 1e-8),
gradients clipped to norm 1.0, on a GPT-2-small-sized model. Decoding: the
first `--decode_sources` E2E test sources, beam 5, at most `--new_tokens` new
tokens, batches of 10.

**BART on XSUM.** The first `--xsum_examples` documents of the data folder's
XSUM validation subset (it holds no training split) with their summaries,
sources cut to 512 tokens and targets to 64 as `configs/nlg/xsum.cfg` does,
at batch 8, with that recipe's prefix and optimizer: Deep-share prefixes of
length 200 (MLP hidden 512), backbone dropout on, AdamW (lr 5e-5), clip 1.0,
the loss a mean over target tokens, on a BART-base-sized model. Decoding: the
first `--xsum_decode_sources` XSUM test documents with the recipe's search
(beam 6, at most 62 tokens, at least 11, length penalty 0.8, no repeated
trigram, stop when 6 hypotheses are done, forced end), batches of 10. The
prefix sites differ: kprefix puts Li & Liang's prefixes in the encoder's
self-attention, the decoder's and the cross-attention; PEFT has one prefix
for the decoder's self-attention, reused in the cross-attention, and none in
the encoder. With transformers 5, PEFT's `generate` drops the prefix of a
seq2seq model altogether (its logits are the plain model's): the script
checks this and reports it as `peft_generate_uses_prefix`.

Texts are tokenized once, by a byte-level BPE with `--merges` merges learnt
from the E2E training texts and the replication's offline corpus
(`kprefix.replicate.byte_pair_encoding`, `pretrain_text`), and both sides get
the same ids, so sequences have realistic lengths (about 60 tokens per E2E
pair).

The sides train as their users do:

- kprefix: length buckets (`--length_buckets=auto`) and, in the same rounds
  but its own process, one fixed shape (`none`: E2E batches padded to 128 +
  128 tokens, XSUM ones to 512 and 64), so that each configuration's memory is
  its own; the loss normalised as the recipe says (`--text_loss`).
- PEFT (`prefix_projection=True`): each batch padded to its longest example,
  the loss on the target tokens, in a random order and with Hugging Face's
  length grouping (`group_by_length=True`: megabatches of 50 batches sorted
  by length).

A training unit is one pass over the examples (one Keras `fit` call on the
kprefix side), after a first pass that compiles every shape. Each side runs in
its own process; in every round each unit runs once, kprefix first in odd
rounds and PEFT first in even ones (ABBA). Reported per model: real
examples/s and real target tokens/s (medians over rounds), decoded sources/s,
each process's time from its start to the end of its first training step, and
its peak resident memory (VmHWM, `peer_workers.peak_mb`).

Parity first: on GPT-2 both sides compute the same logits with the same
prefixes (within 1e-4, `peer_parity.py`); on BART, where the prefix sites
differ, the two loaded backbones compute the same logits.
"""

import time

START = time.perf_counter()  # before the heavy imports: time to first step counts them

import dataclasses  # noqa: E402
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
flags.DEFINE_list("models", ["gpt2", "bart"], "Which blocks to run: gpt2 (E2E), bart (XSUM).")
flags.DEFINE_enum("size", "small", ["small", "tiny"],
                  "small: GPT-2 small and BART base configs; tiny: a smoke run.")
flags.DEFINE_integer("examples", 400, "E2E training pairs in the GPT-2 workload.",
                     lower_bound=10)
flags.DEFINE_integer("decode_sources", 50, "E2E test sources decoded with beam 5 per unit.",
                     lower_bound=1)
flags.DEFINE_integer("new_tokens", 100, "Most new tokens per decoded E2E source.",
                     lower_bound=1)
flags.DEFINE_integer("xsum_examples", 32, "XSUM documents in the BART workload.",
                     lower_bound=8)
flags.DEFINE_integer("xsum_decode_sources", 10, "XSUM test documents decoded per unit.",
                     lower_bound=1)
flags.DEFINE_integer("merges", 8192, "BPE merges learnt from the E2E training texts and "
                     "the offline corpus.", lower_bound=1)
flags.DEFINE_integer("threads", 2, "Intra- and inter-op threads of each side.", lower_bound=1)
flags.DEFINE_string("data_dir", None, "Folder holding e2e/ and xsum/ (default: "
                    "$KPREFIX_SHARED_DATA or ../shared/data).")
flags.DEFINE_string("json_output", None, "Also write the medians and ratios here.")
flags.DEFINE_bool("check_parity", True, "Check that both sides compute the same logits first.")
flags.DEFINE_bool("worker_logs", False, "Show the workers' stderr.")
flags.DEFINE_string("side", None, "Internal: run as the worker of this side.")
flags.DEFINE_string("workload", None, "Internal: the workload folder.")
FLAGS = flags.FLAGS

DECODE_BATCH = 10
# Each side is one process; kprefix's fixed-shape training runs in its own.
UNITS = {"kprefix": ("bucketed", "decode"), "kprefix_fixed": ("fixed",),
         "peft": ("random", "grouped", "decode")}


@dataclasses.dataclass(frozen=True)
class Block:
    """One model's workload and recipe (see the module doc)."""

    name: str  # the JSON block
    batch: int
    prefix: int
    mlp_hidden: int
    dropout: bool
    learning_rate: float
    text_loss: str  # kprefix's --text_loss; PEFT's loss is Hugging Face's token mean
    maxima: tuple  # padded lengths of --length_buckets=none, per axis
    sizes: dict  # Hugging Face config of each --size

    @property
    def is_bart(self):
        return self.name.startswith("bart")


GPT2 = Block(
    "gpt2_e2e", batch=10, prefix=5, mlp_hidden=512, dropout=False, learning_rate=1e-4,
    text_loss="sequence_sum", maxima=(128 + 128,),  # configs/nlg/table_to_text.cfg
    sizes={"small": dict(vocab_size=50257, n_layer=12, n_head=12, n_embd=768),
           "tiny": dict(n_layer=2, n_head=2, n_embd=32)})
BART = Block(
    "bart_xsum", batch=8, prefix=200, mlp_hidden=512, dropout=True, learning_rate=5e-5,
    text_loss="token_mean", maxima=(512, 64),  # configs/nlg/xsum.cfg
    sizes={"small": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                         encoder_attention_heads=12, decoder_attention_heads=12,
                         encoder_ffn_dim=3072, decoder_ffn_dim=3072),
           "tiny": dict(d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2,
                        encoder_ffn_dim=64, decoder_ffn_dim=64)})
BLOCKS = {"gpt2": GPT2, "bart": BART}
# BART's special tokens come first, as in BART's own vocabulary.
BART_SPECIAL = {"<s>": 0, "<pad>": 1, "</s>": 2, "<mask>": 3}
# XSUM decoding as configs/nlg/xsum.cfg sets it (lengths count the start token).
XSUM_SEARCH = dict(num_beams=6, max_length=62, min_length=11, length_penalty=0.8,
                   no_repeat_ngram_size=3)


def learn_tokenizer_files():
    """`(vocabulary, merges)` of the byte-level BPE both sides' ids come from."""
    from kprefix.data import nlg
    from kprefix.replicate.byte_pair_encoding import learn_byte_pair_encoding
    from kprefix.replicate.pretrain_text import corpus_segments, pretraining_corpus

    examples = nlg.load_task("e2e", "train", FLAGS.data_dir, source_format="reference")
    # E2E alone supports about 3.7k merges (pairs seen twice); the replication's
    # offline corpus (WebNLG, XSUM) brings more.
    corpus, _ = pretraining_corpus(FLAGS.data_dir)
    return learn_byte_pair_encoding(
        [text for pair in nlg.training_pairs(examples) for text in pair]
        + corpus_segments(corpus),
        FLAGS.merges + 257)


def tokenizer_for(block, folder):
    """The block's keras-hub tokenizer over the learnt BPE (BART: ids shifted past
    its special tokens)."""
    import keras_hub

    with open(os.path.join(folder, "tokenizer.json")) as file:
        saved = json.load(file)
    vocabulary, merges = saved["vocabulary"], saved["merges"]
    if not block.is_bart:
        return keras_hub.models.GPT2Tokenizer(vocabulary=vocabulary, merges=merges)
    shifted = dict(BART_SPECIAL)
    for token, index in vocabulary.items():
        if token != "<|endoftext|>":
            shifted[token] = index + len(BART_SPECIAL)
    return keras_hub.models.BartTokenizer(vocabulary=shifted, merges=merges)


def ids_of(tokenizer, text):
    return [int(i) for i in np.ravel(tokenizer.tokenize(text))]


def padded(rows, value):
    width = max(len(r) for r in rows)
    return np.array([r + [value] * (width - len(r)) for r in rows], np.int32)


def write_workload(block, folder, vocabulary, merges):
    """Tokenizes the block's examples and decoding sources once and saves its random
    Hugging Face checkpoint; returns the examples' real lengths (per axis for BART)."""
    from kprefix.data import nlg

    os.makedirs(folder)
    with open(os.path.join(folder, "tokenizer.json"), "w") as file:
        json.dump({"vocabulary": vocabulary, "merges": merges}, file)
    tokenizer = tokenizer_for(block, folder)
    save_random_checkpoint(block, os.path.join(folder, "checkpoint"), tokenizer)
    end = tokenizer.end_token_id
    if not block.is_bart:
        (length,) = block.maxima
        pairs = list(nlg.training_pairs(nlg.load_task("e2e", "train", FLAGS.data_dir,
                                                      source_format="reference")))
        sequences, is_target = [], []
        for source, target in pairs[:FLAGS.examples]:
            source_ids, target_ids = ids_of(tokenizer, f" {source} "), ids_of(tokenizer,
                                                                                f" {target} ")
            ids = (source_ids + [end] + target_ids + [end])[:length + 1]
            sequences.append(ids)
            is_target.append(([0] * (len(source_ids) + 1) + [1] * (len(target_ids) + 1))
                             [:len(ids)])
        lengths = np.array([len(s) for s in sequences])
        test = nlg.load_task("e2e", "test", FLAGS.data_dir, source_format="reference")
        arrays = dict(ids=padded(sequences, end), is_target=padded(is_target, 0),
                      lengths=lengths, sources=np.array(
                          nlg.evaluation_sources(test)[:FLAGS.decode_sources]))
    else:
        source_length, target_length = block.maxima
        start, pad = tokenizer.start_token_id, tokenizer.pad_token_id
        documents = nlg.load_xsum("validation", FLAGS.data_dir)[:FLAGS.xsum_examples]
        # As keras-hub's BART preprocessor frames them: <s> text </s> on both
        # sides, the decoder input shifted right behind </s>.
        sources = [([start] + ids_of(tokenizer, e.source))[:source_length - 1] + [end]
                   for e in documents]
        labels = [([start] + ids_of(tokenizer, e.targets[0]))[:target_length - 1] + [end]
                  for e in documents]
        decoder = [[end] + row[:-1] for row in labels]
        lengths = np.array([[len(s), len(d)] for s, d in zip(sources, decoder)])
        test = nlg.load_xsum("test", FLAGS.data_dir)[:FLAGS.xsum_decode_sources]
        arrays = dict(encoder=padded(sources, pad), decoder=padded(decoder, pad),
                      labels=padded(labels, pad), lengths=lengths,
                      sources=np.array([e.source for e in test]))
    np.savez(os.path.join(folder, "workload.npz"), **arrays)
    return lengths


def save_random_checkpoint(block, folder, tokenizer):
    """A `transformers` model of the block's `--size` with random weights (seed 0)."""
    import torch
    import transformers

    sizes = dict(block.sizes[FLAGS.size])
    sizes.setdefault("vocab_size", tokenizer.vocabulary_size())
    torch.manual_seed(0)
    if not block.is_bart:
        dropout = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        end = tokenizer.end_token_id
        config = transformers.GPT2Config(n_positions=1024, bos_token_id=end, eos_token_id=end,
                                         **dropout, **sizes)
        transformers.GPT2LMHeadModel(config).save_pretrained(folder)
        return
    # Dropout 0.1 everywhere, as BART's hub configs and keras-hub's one rate have it.
    config = transformers.BartConfig(
        max_position_embeddings=1024, dropout=0.1, attention_dropout=0.1,
        activation_dropout=0.1, scale_embedding=False, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, **sizes)
    transformers.BartForConditionalGeneration(config).save_pretrained(folder)


def kprefix_settings(block):
    """The launch flags' defaults with the block's training settings."""
    from types import SimpleNamespace

    from kprefix import launch

    values = {f.name: f.default for f in flags.FLAGS.get_flags_for_module(launch)}
    values.update(optimizer="adamw", learning_rate=block.learning_rate, weight_decay=0.0,
                  batch_size=block.batch, epochs=1, clip_norm=1.0, adam_epsilon=1e-8,
                  warmup_steps=0, backbone_dropout=block.dropout, text_loss=block.text_loss)
    return SimpleNamespace(**values)


def kprefix_batches(block, data, spec, end):
    """The batches of one pass: `--length_buckets=spec` buckets and the epoch
    order of seed 0; target tokens weigh 1."""
    from kprefix.data.length_buckets import (bucket_ids, epoch_batches, paired_boundaries,
                                             parse_length_buckets)

    if block.is_bart:
        axes = [data["lengths"][:, 0], data["lengths"][:, 1]]
    else:
        axes = [data["lengths"] - 1]  # tokens fed in (the last token is only a label)
    boundaries = [parse_length_buckets(spec, lengths, maximum)
                  for lengths, maximum in zip(axes, block.maxima)]
    boundaries = paired_boundaries(boundaries)  # as the launcher pairs the axes' buckets
    buckets = bucket_ids(axes, boundaries)
    batches = []
    for indices, bucket in epoch_batches(buckets, block.batch, 0, 0, True).as_numpy_iterator():
        widths = [b[bucket] for b in boundaries]
        masks = [(np.arange(w)[None] < lengths[indices][:, None]).astype(np.int32)
                 for w, lengths in zip(widths, axes)]
        if block.is_bart:
            encoder, decoder = (fit_width(data[key][indices], width, 1)
                                for key, width in (("encoder", widths[0]),
                                                   ("decoder", widths[1])))
            labels = fit_width(data["labels"][indices], widths[1], 1)
            weights = masks[1].astype(np.float32)
            batches.append(({"encoder_token_ids": encoder, "encoder_padding_mask": masks[0],
                             "decoder_token_ids": decoder, "decoder_padding_mask": masks[1]},
                            labels, weights))
        else:
            sequence = fit_width(data["ids"][indices], widths[0] + 1, end)
            weights = fit_width(data["is_target"][indices, 1:], widths[0], 0)
            batches.append(({"token_ids": sequence[:, :-1], "padding_mask": masks[0]},
                            sequence[:, 1:], weights.astype(np.float32)))
    return batches


def fit_width(rows, width, value):
    """`rows` cut or padded with `value` to `width` columns."""
    out = np.full((len(rows), width), value, rows.dtype)
    part = rows[:, :width]
    out[:, :part.shape[1]] = part
    return out


def kprefix_units(block, folder, side):
    """`{unit: (run one pass, distinct batch shapes)}` of a kprefix side (see `UNITS`)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    from kprefix.backbones import build_backbone
    from kprefix.experiments.common import compile_for_training
    from kprefix.prefix import PrefixConfig
    from kprefix.runs import train
    from kprefix.tasks import PrefixBartSeq2SeqLM, PrefixGPT2CausalLM
    from kprefix.tasks.text_loss import SequenceSumCrossentropy, token_mean_weights

    data = dict(np.load(os.path.join(folder, "workload.npz")))
    tokenizer = tokenizer_for(block, folder)
    settings = kprefix_settings(block)
    train.set_precision(settings.precision)
    config = PrefixConfig("deep_share", "deep", block.prefix, mlp_hidden=block.mlp_hidden,
                          share_across_layers=True)
    backbone = build_backbone(os.path.join(folder, "checkpoint"), dropout=block.dropout,
                              frozen=True)
    task = PrefixBartSeq2SeqLM if block.is_bart else PrefixGPT2CausalLM
    lm = task(backbone, prefix_config=config)
    steps = len(data["lengths"]) // block.batch
    compile_for_training(lm, settings, steps, 0, loss=SequenceSumCrossentropy())
    units = {}
    for unit, spec in (("bucketed", "auto"), ("fixed", "none")):
        if unit not in UNITS[side]:
            continue
        batches = kprefix_batches(block, data, spec, tokenizer.end_token_id)
        signature = tree_spec(batches[0])
        dataset = tf.data.Dataset.from_generator(lambda b=batches: iter(b),
                                                 output_signature=signature)
        if block.text_loss == "token_mean":  # as the launcher weights its batches
            dataset = dataset.map(token_mean_weights)
        dataset = train.without_autotuning(dataset.cache())

        def run(dataset=dataset, steps=None):
            lm.fit(dataset.take(steps) if steps else dataset, epochs=1, verbose=0,
                   shuffle=False)
        units[unit] = (run, len({tuple(v.shape for v in b[0].values()) for b in batches}))
    if "decode" in UNITS[side]:
        units["decode"] = (kprefix_decoding(block, lm, tokenizer, data), None)
    return units


def tree_spec(batch):
    """The `output_signature` of batches like `batch`, lengths left open."""
    import tensorflow as tf

    def spec(array):
        return tf.TensorSpec([array.shape[0]] + [None] * (array.ndim - 1),
                             tf.as_dtype(array.dtype))
    x, labels, weights = batch
    return ({name: spec(value) for name, value in x.items()}, spec(labels), spec(weights))


def kprefix_decoding(block, lm, tokenizer, data):
    """One unit: the evaluation's decoding of the test sources (length-sorted batches
    through the export's serving function, stopping when all beams are done).
    The serving function is built at the first call."""
    from kprefix.experiments.text_generation import generate_texts
    from kprefix.runs.config import DecodingSettings
    from kprefix.runs.export import export_text_generator

    end = tokenizer.end_token_id
    if block.is_bart:
        search = DecodingSettings(
            num_beams=XSUM_SEARCH["num_beams"], max_new_tokens=XSUM_SEARCH["max_length"] - 1,
            min_new_tokens=XSUM_SEARCH["min_length"] - 1,
            length_penalty=XSUM_SEARCH["length_penalty"], length_normalization="full",
            no_repeat_ngram_size=XSUM_SEARCH["no_repeat_ngram_size"], early_stopping="first",
            force_end_at_max_length=True)
        settings = search.bart_arguments(end, tokenizer.pad_token_id)
    else:
        settings = dict(num_beams=5, max_new_tokens=FLAGS.new_tokens, end_token_id=end,
                        pad_token_id=end)
    sources = [str(s) for s in data["sources"]]
    serve = []

    def run(steps=None):
        if not serve:
            # Built at the first decoding, after training as in a launch: folding
            # copies the model, which the time to the first step should not pay.
            serve.append(export_text_generator(lm, tokenizer, None, block.maxima[0], settings,
                                               write=False,
                                               reference_framing=not block.is_bart))
        generate_texts(serve[0], sources, DECODE_BATCH)
    return run


def peft_model(block, folder):
    """The block's PEFT prefix-tuned model (`prefix_projection=True`) over the checkpoint."""
    import peft
    import transformers

    path = os.path.join(folder, "checkpoint")
    if block.is_bart:
        model = transformers.BartForConditionalGeneration.from_pretrained(path)
        task = "SEQ_2_SEQ_LM"
    else:
        model = transformers.GPT2LMHeadModel.from_pretrained(path)
        task = "CAUSAL_LM"
    return peft.get_peft_model(model, peft.PrefixTuningConfig(
        task_type=task, num_virtual_tokens=block.prefix, prefix_projection=True,
        encoder_hidden_size=block.mlp_hidden))


def peft_units(block, folder):
    """As `kprefix_units`, for the PEFT side (batches padded to their longest example)."""
    import torch

    torch.set_num_threads(FLAGS.threads)
    torch.set_num_interop_threads(FLAGS.threads)
    torch.manual_seed(0)
    data = dict(np.load(os.path.join(folder, "workload.npz")))
    model = peft_model(block, folder).train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=block.learning_rate, eps=1e-8,
                                  weight_decay=0.0)
    lengths = data["lengths"]
    total = lengths.sum(axis=1) if block.is_bart else lengths
    count = len(total) // block.batch * block.batch
    random_order = np.random.default_rng(0).permutation(len(total))[:count]
    # transformers' LengthGroupedSampler: megabatches of 50 batches, each sorted by length.
    megabatch = 50 * block.batch
    grouped = np.concatenate([sorted(random_order[i:i + megabatch], key=lambda j: -total[j])
                              for i in range(0, count, megabatch)])

    def tensor(array):
        return torch.from_numpy(np.ascontiguousarray(array).astype("int64"))

    def loss_of(rows):
        if block.is_bart:
            source, target = (int(w) for w in lengths[rows].max(axis=0))
            labels = tensor(data["labels"][rows, :target])
            return model(input_ids=tensor(data["encoder"][rows, :source]),
                         attention_mask=tensor(np.arange(source)[None]
                                               < lengths[rows, :1]),
                         decoder_input_ids=tensor(data["decoder"][rows, :target]),
                         labels=labels.masked_fill(labels == 1, -100)).loss
        width = int(lengths[rows].max())
        tokens = tensor(data["ids"][rows, :width])
        labels = tokens.masked_fill(torch.from_numpy(data["is_target"][rows, :width] == 0), -100)
        return model(input_ids=tokens,
                     attention_mask=tensor(np.arange(width)[None] < lengths[rows][:, None]),
                     labels=labels).loss

    def run(order, steps=None):
        for start in range(0, block.batch * steps if steps else count, block.batch):
            loss = loss_of(order[start:start + block.batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            float(loss)

    return {"random": (lambda steps=None: run(random_order, steps), None),
            "grouped": (lambda steps=None: run(grouped, steps), None),
            "decode": (peft_decoding(block, model, folder, data), None)}


def peft_decoding(block, model, folder, data):
    """One unit: `generate` over the test sources, batches of 10 in their order
    (GPT-2 left-padded, as decoder-only generation needs), with the block's search
    (Hugging Face's default stop for GPT-2: when no beam can improve)."""
    import torch

    tokenizer = tokenizer_for(block, folder)
    end = tokenizer.end_token_id
    if block.is_bart:
        start, pad = tokenizer.start_token_id, tokenizer.pad_token_id
        prompts = [([start] + ids_of(tokenizer, str(s)))[:block.maxima[0] - 1] + [end]
                   for s in data["sources"]]
        search = dict(XSUM_SEARCH, early_stopping=True)
    else:
        pad = end
        prompts = [ids_of(tokenizer, f" {s} ") + [end] for s in data["sources"]]
        search = dict(num_beams=5, max_new_tokens=FLAGS.new_tokens)

    def run(steps=None):
        model.eval()
        with torch.no_grad():
            for first in range(0, len(prompts), DECODE_BATCH):
                batch = prompts[first:first + DECODE_BATCH]
                width = max(len(p) for p in batch)
                if block.is_bart:  # right-padded, as encoders take them
                    ids = [p + [pad] * (width - len(p)) for p in batch]
                    mask = [[1] * len(p) + [0] * (width - len(p)) for p in batch]
                else:
                    ids = [[pad] * (width - len(p)) + p for p in batch]
                    mask = [[0] * (width - len(p)) + [1] * len(p) for p in batch]
                model.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                               do_sample=False, pad_token_id=pad, eos_token_id=end, **search)
        model.train()
    return run


def bart_parity(folder):
    """`(max |logit difference| of the two loaded backbones without prefixes,
    whether PEFT's generate uses its prefix)` on a batch of the workload."""
    import torch

    from kprefix.backbones import build_backbone
    from kprefix.tasks import PrefixBartSeq2SeqLM

    data = dict(np.load(os.path.join(folder, "workload.npz")))
    rows, (source, target) = slice(0, 2), data["lengths"][:2].max(axis=0)
    x = {"encoder_token_ids": data["encoder"][rows, :source],
         "encoder_padding_mask": (np.arange(source)[None] < data["lengths"][rows, :1]),
         "decoder_token_ids": data["decoder"][rows, :target],
         "decoder_padding_mask": (np.arange(target)[None] < data["lengths"][rows, 1:])}
    lm = PrefixBartSeq2SeqLM(build_backbone(os.path.join(folder, "checkpoint"),
                                            dropout=False), prefix_config=None)
    ours = np.asarray(lm(x, training=False))
    model = peft_model(BART, folder).eval()
    inputs = {k: torch.from_numpy(np.asarray(x[k]).astype("int64")) for k in x}
    with torch.no_grad():
        with model.disable_adapter():
            plain = model(input_ids=inputs["encoder_token_ids"],
                          attention_mask=inputs["encoder_padding_mask"],
                          decoder_input_ids=inputs["decoder_token_ids"]).logits.numpy()
        prefixed = model(input_ids=inputs["encoder_token_ids"],
                         attention_mask=inputs["encoder_padding_mask"],
                         decoder_input_ids=inputs["decoder_token_ids"][:, :1]).logits[:, 0]
        generated = model.generate(input_ids=inputs["encoder_token_ids"],
                                   attention_mask=inputs["encoder_padding_mask"],
                                   num_beams=1, do_sample=False, max_length=2, min_length=2,
                                   output_logits=True, return_dict_in_generate=True)
    first = generated.logits[0]
    uses_prefix = bool(torch.allclose(first, prefixed, atol=1e-4))
    mask = x["decoder_padding_mask"]
    return float(np.max(np.abs(ours - plain)[mask])), uses_prefix


def serve(side):
    """Worker: compiles every unit (first step timed), says READY, then times units."""
    block = BLOCKS[FLAGS.models[0]]
    units = (peft_units(block, FLAGS.workload) if side == "peft"
             else kprefix_units(block, FLAGS.workload, side))
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
        started = time.perf_counter()
        units[unit][0]()
        print(f"SECONDS {time.perf_counter() - started}", flush=True)
    print(f"PEAK {peak_mb()}", flush=True)


def start_worker(side, model, folder):
    """This script as one side's process (see `peer_workers.Worker`)."""
    command = [sys.executable, os.path.abspath(__file__), f"--side={side}",
               f"--models={model}", f"--workload={folder}", f"--threads={FLAGS.threads}",
               f"--new_tokens={FLAGS.new_tokens}", f"--size={FLAGS.size}"]
    return Worker(side, command, show_logs=FLAGS.worker_logs)


def measure(model, folder, vocabulary, merges):
    """Runs one block's rounds; returns its JSON block (ratios, medians, parity)."""
    block = BLOCKS[model]
    lengths = write_workload(block, folder, vocabulary, merges)
    examples = len(lengths) // block.batch * block.batch
    workload = np.load(os.path.join(folder, "workload.npz"))
    target_tokens = int(lengths[:examples, 1].sum() if block.is_bart
                        else workload["is_target"][:examples].sum())
    real = lengths.sum(axis=1) if block.is_bart else lengths
    print(f"\n== {block.name}: {FLAGS.size} config (random weights), Deep-share "
          f"P={block.prefix}, batch {block.batch}; {examples} examples of "
          f"{real.mean():.1f} tokens on average (max {real.max()}), {target_tokens} target "
          "tokens", flush=True)
    result = {}
    if FLAGS.check_parity:
        if block.is_bart:
            difference, uses_prefix = bart_parity(folder)
            result["peft_generate_uses_prefix"] = uses_prefix
            print(f"parity: max |logit difference| of the loaded backbones = "
                  f"{difference:.2e}; PEFT's generate uses its prefix: {uses_prefix}",
                  flush=True)
        else:
            from peer_parity import max_logit_difference

            difference = max_logit_difference(
                "deep_share", backbone="gpt2_small_random" if FLAGS.size == "small"
                else "gpt2_tiny", length=block.prefix, mlp_hidden=block.mlp_hidden)
            print(f"parity: max |logit difference| kprefix vs PEFT = {difference:.2e}",
                  flush=True)
        result["parity_max_logit_difference"] = difference
        if not difference < 1e-4:
            sys.exit(f"kprefix and PEFT compute different logits ({difference:.2e}).")
    workers = {side: start_worker(side, model, folder) for side in UNITS}
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
    rates = {f"{s.split('_')[0]}_{u}": examples / statistics.median(v)
             for (s, u), v in seconds.items() if u != "decode"}
    decoded = len(workload["sources"])
    decode = {s: decoded / statistics.median(seconds[s, "decode"]) for s in ("kprefix", "peft")}
    first = {side: w.info["first_step_s"] for side, w in workers.items()}
    result.update({
        "examples": examples,
        "train_ratio": rates["kprefix_bucketed"] / rates["peft_random"],
        "train_ratio_grouped": rates["kprefix_bucketed"] / rates["peft_grouped"],
        "decode_ratio": decode["kprefix"] / decode["peft"],
        "first_step_ratio": first["peft"] / first["kprefix"],
        "peak_memory_ratio": peaks["peft"] / peaks["kprefix"],
        "bucketing_gain": rates["kprefix_bucketed"] / rates["kprefix_fixed"],
        "examples_per_s": rates,
        "target_tokens_per_s": {k: v * target_tokens / examples for k, v in rates.items()},
        "decoded_sources": decoded,
        "decoded_sources_per_s": decode,
        "first_step_s": first,
        "peak_mb": peaks,
        "kprefix_shapes": {"bucketed": workers["kprefix"].info["bucketed_shapes"],
                           "fixed": workers["kprefix_fixed"].info["fixed_shapes"]},
        # High-water marks after each unit's first pass: what training alone
        # needs, before the decoding.
        "peak_mb_after_unit": {side: {u: w.info[f"{u}_peak_mb"] for u in UNITS[side]}
                               for side, w in workers.items()},
        "seconds": {f"{s}_{u}": v for (s, u), v in seconds.items()},
    })
    print(f"median over {FLAGS.rounds} rounds, real examples/s (target tokens/s):")
    for name, rate in rates.items():
        print(f"  {name:18} {rate:8.2f} ({result['target_tokens_per_s'][name]:8.1f})")
    print(f"decoding of {decoded} test sources, sources/s: kprefix {decode['kprefix']:.2f}, "
          f"PEFT {decode['peft']:.2f}")
    print(f"time to the first training step (process start to its end): "
          f"kprefix {first['kprefix']:.1f}s, PEFT {first['peft']:.1f}s")
    print(f"peak memory: kprefix {peaks['kprefix']:.0f} MB (fixed shape, its own process: "
          f"{peaks['kprefix_fixed']:.0f} MB), PEFT {peaks['peft']:.0f} MB")
    print(json.dumps({k: round(v, 3) for k, v in result.items()
                      if k.endswith(("ratio", "gain", "grouped"))}), flush=True)
    return result


def main(argv):
    del argv
    unknown = set(FLAGS.models) - set(BLOCKS)
    if unknown or not FLAGS.models:
        raise app.UsageError(f"--models takes gpt2 and/or bart; got {FLAGS.models}.")
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
    try:
        vocabulary, merges = learn_tokenizer_files()
        print(f"CPU: {cpu_model()}, {os.cpu_count()} logical cores; {FLAGS.threads} threads "
              f"per side; BPE of {len(merges)} merges", flush=True)
        blocks = {BLOCKS[m].name: measure(m, os.path.join(folder, m), vocabulary, merges)
                  for m in FLAGS.models}
    finally:
        shutil.rmtree(folder)
    results = {"cpu": cpu_model(), "rounds": FLAGS.rounds, "size": FLAGS.size, **blocks}
    if "gpt2_e2e" in blocks:  # the headline ratios are the GPT-2 E2E row's
        results.update({k: v for k, v in blocks["gpt2_e2e"].items()
                        if k.endswith(("ratio", "gain", "grouped"))})
    if FLAGS.json_output:
        with open(FLAGS.json_output, "w") as out:
            json.dump(results, out, indent=1)


if __name__ == "__main__":
    app.run(main)
