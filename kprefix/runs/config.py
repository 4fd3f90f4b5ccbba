"""`RunConfig`: every setting of a training run, and the choices each setting offers.

`python -m kprefix.launch` generates its flags from these records
(`kprefix.cli.option_flags`) and runs `kprefix.run(config)` with the record
its flags describe; a notebook or another program builds the record itself
and gets the same run, with no flag parsing:

    import kprefix
    results = kprefix.run(kprefix.RunConfig(dataset="digits", epochs=2,
                                            workdir="runs/notebook"))

The choices of each setting are declared once, here, with the option that
selects them; the code that interprets them (`kprefix.runs.train`,
`kprefix.runs.optimizers`, `kprefix.tasks.decoding`, ...) imports them from
here, so that reading a configuration never imports TensorFlow.

Example:

>>> from kprefix.prefix import PrefixConfig
>>> config = RunConfig(dataset="digits", prefix=PrefixConfig(length=4), epochs=2)
>>> config.flag_values()["prefix_length"], config.flag_values()["epochs"]
(4, 2)
>>> RunConfig(epochs=0)
Traceback (most recent call last):
...
ValueError: epochs must be at least 1; got 0.
>>> settings = DecodingSettings(num_beams=4, max_new_tokens=20)
>>> arguments = settings.gpt2_arguments(end_token_id=2, banned_token_ids=[7])
>>> arguments["num_beams"], arguments["max_new_tokens"], arguments["pad_token_id"]
(4, 20, 2)
>>> settings.bart_arguments(end_token_id=2, pad_token_id=1)["max_length"]
21
"""

import dataclasses
import math
from typing import Optional

from kprefix.data.nlg_e2e import SOURCE_FORMATS
from kprefix.experiments import TASKS
from kprefix.methods import TEXT_METHODS, MethodConfig
from kprefix.options import check_fields, flag_dict, nested, option
from kprefix.prefix.config import PrefixConfig

# Choices interpreted by kprefix.runs.train, kprefix.runs.optimizers,
# and kprefix.tasks (image_classifier, image_preprocessors, text_loss, decoding)
# (source formats: kprefix.data.nlg_e2e).
STRATEGIES = ("default", "mirrored", "multi_worker_mirrored", "tpu")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adamw")
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
SCHEDULE_UNITS = ("step", "epoch")
LR_DECAYS = ("auto", "cosine", "linear")
TEXT_LOSSES = ("sequence_sum", "token_mean")
HEAD_INITIALIZERS = ("glorot", "kaiming_normal_fan_out")
IMAGE_NORMALIZATIONS = ("imagenet", "preset")
EARLY_STOPPING = ("heuristic", "exact", "first")
LENGTH_NORMALIZATION = ("generated", "full")


def _positive_seconds(name):
    def check(value):
        if value <= 0:
            raise ValueError(f"--{name}={value}: use a positive number of seconds.")
    return check


def _not_blank(value):
    if not str(value).strip():
        raise ValueError("--workdir is empty: name the folder for checkpoints, the export and "
                         "results, e.g. --workdir=runs/quickstart.")


@dataclasses.dataclass(frozen=True)
class DecodingSettings:
    """Beam search (or greedy, `num_beams=1`) settings; see each field's help."""

    num_beams: int = option(5, "Beam width (1: greedy).", minimum=1, group="Decoding")
    max_new_tokens: int = option(100, "Most generated tokens (XSUM: 61, max length 62).",
                                 minimum=1)
    min_new_tokens: int = option(5, "Fewest generated tokens before the end token (0: no "
                                 "minimum).", minimum=0)
    length_penalty: float = option(1.0, "Score = log-prob / length ** length_penalty.")
    length_normalization: str = option(
        "generated", "Beam score length: 'generated' tokens (end included) or the 'full' "
        "sequence with prompt/start tokens and without the end token (transformers 3.2).",
        choices=LENGTH_NORMALIZATION)
    no_repeat_ngram_size: int = option(
        0, "Never generate an n-gram already in the sequence (0: off).", minimum=0)
    early_stopping: str = option(
        "heuristic", "When a beam input is done: Hugging Face's bound, an exact bound, or "
        "'first' = as soon as num_beams hypotheses finished (transformers "
        "early_stopping=True).", choices=EARLY_STOPPING)
    force_end_at_max_length: bool = option(
        False, "The last token within the length limit is the end token, with log-prob 0, as "
        "transformers 3.2 BART generation forces it.")

    def __post_init__(self):
        check_fields(self, subject="decoding")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"--min_new_tokens={self.min_new_tokens} exceeds "
                             f"--max_new_tokens={self.max_new_tokens}; lower it.")

    def _common(self, end_token_id, pad_token_id):
        return dict(num_beams=self.num_beams, length_penalty=self.length_penalty,
                    end_token_id=end_token_id, pad_token_id=pad_token_id,
                    length_normalization=self.length_normalization,
                    no_repeat_ngram_size=self.no_repeat_ngram_size,
                    early_stopping=self.early_stopping)

    def gpt2_arguments(self, end_token_id, banned_token_ids=(), pad_token_id=None):
        """Keyword arguments of `generate_gpt2` (pad: the end token, as GPT-2 has no pad)."""
        return dict(self._common(end_token_id, end_token_id if pad_token_id is None
                                 else pad_token_id),
                    max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                    banned_token_ids=list(banned_token_ids))

    def bart_arguments(self, end_token_id, pad_token_id):
        """Keyword arguments of `generate_bart`: lengths count the start token, and
        decoding starts from the end token, as BART's `decoder_start_token_id`."""
        return dict(self._common(end_token_id, pad_token_id),
                    max_length=self.max_new_tokens + 1, min_length=self.min_new_tokens + 1,
                    start_token_ids=[end_token_id],
                    force_end_at_max_length=self.force_end_at_max_length)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of `kprefix.run`; each field is the launch flag of the same name.

    `method` holds `--method` and its options, `prefix` the `--prefix_*`
    flags and `decoding` the decoding flags. `--method=vpt` takes its
    placement from `prefix.placement` and, with `vpt_length=0`, its length
    from `prefix.length`, as the flags do.
    """

    task: str = option(
        "image_classification", "What to train: a ViT classifier, GPT-2 table-to-text (E2E, "
        "WebNLG) or BART summarization (XSUM).", choices=TASKS)
    backbone: str = option(
        "vit_tiny", "Built-in config (vit_tiny, vit_b16_random, ...), keras-hub preset name, or "
        "local preset directory.", group="Model")
    method: MethodConfig = nested(MethodConfig)
    prefix: PrefixConfig = nested(PrefixConfig, flag_prefix="prefix_")
    prefix_init_text: str = option(
        "summarize", "Text whose keys/values start a --prefix_init=word prefix (tokenized with "
        "a leading space, as add_prefix_space=True).")
    head_init: str = option(
        "glorot", "Classifier head initializer: 'glorot' or the reference's "
        "'kaiming_normal_fan_out' (normal, std sqrt(2/classes); bias -log(99)).",
        choices=HEAD_INITIALIZERS)
    backbone_dropout: bool = option(
        True, "Keep the frozen backbone's own dropout in training; false builds it with every "
        "dropout rate 0 (the reference's eval-mode GPT-2 and ViT). Prefix dropout is "
        "--prefix_dropout.")

    dataset: str = option(
        "digits", "Images: 'digits', 'minivtab/<task>' (rendered offline), 'vtab/<task>' or "
        "'fgvc/<dataset>'; text: 'e2e', 'webnlg' or 'xsum'.", group="Data")
    train_split: Optional[str] = option(None, "Training split (default per dataset family).")
    eval_split: Optional[str] = option(None, "Evaluation split (default per dataset family).")
    tfds_data_dir: Optional[str] = option(None, "TFDS data directory (local or gs://).")
    manual_dir: Optional[str] = option(None, "Folder of manually downloaded archives.")
    drop_remainder: bool = option(
        True, "Drop the last partial training batch; false keeps it (PyTorch "
        "drop_last=False), padded to the batch size with zero-weight rows so shapes stay "
        "static.")
    split_file: Optional[str] = option(
        None, "FGVC: 'vpt' (VPT's splits, shipped with kprefix; the FGVC flagfiles' value), "
        "'holdout' (a fixed-seed 10% hold-out of the official train split, also the default), "
        "VPT's released split folder (train.json and val.json, each mapping image path to "
        "class) or one JSON file with 'train' and 'val' lists.")
    image_normalization: str = option(
        "imagenet", "Images (vtab/, fgvc/): normalize with the ImageNet mean and std, as the "
        "VPT protocol does, or with the --backbone preset's own image converter.",
        choices=IMAGE_NORMALIZATIONS)
    text_data_dir: Optional[str] = option(
        None, "Folder holding e2e/, webnlg2017/ and xsum/ (default: $KPREFIX_SHARED_DATA, else "
        "../shared/data).")
    e2e_source_format: str = option(
        "reference", "E2E input: 'reference' Li & Liang's 'name : X | Type : Y' source with "
        "tokenized targets (their src1_*.txt), framed ' src <eos> tgt <eos>'; 'raw' the "
        "challenge MR 'name[X], eatType[Y]' with untokenized targets.", choices=SOURCE_FORMATS)
    webnlg_source_format: str = option(
        "reference", "WebNLG input: 'reference' Li & Liang's ' | s : p : o' (underscores kept, "
        "training on lexicalisations marked good), framed as E2E; 'raw' 's : p : o | ...' with "
        "underscores as spaces, all lexicalisations.", choices=SOURCE_FORMATS)
    max_train_examples: int = option(0, "Text: use only the first N inputs (0: all).",
                                     minimum=0)
    max_eval_examples: int = option(0, "Text: evaluate the first N inputs (0: all).",
                                    minimum=0)
    max_steps_per_epoch: int = option(
        0, "Text: train at most N batches per epoch, the first N of that epoch's shuffled "
        "order (0: every batch); with --epochs=1 a run sees a random subset of a training set "
        "larger than its step budget.", minimum=0)
    source_length: int = option(64, "Text: source tokens (XSUM: 512).", minimum=1)
    target_length: int = option(64, "Text: target tokens in training.", minimum=1)

    decoding: DecodingSettings = nested(DecodingSettings)
    eval_batch_size: int = option(16, "Inputs decoded together.", minimum=1)

    optimizer: str = option("sgd", "SGD+momentum (vision) or AdamW.", choices=OPTIMIZERS,
                            group="Optimization")
    learning_rate: float = option(0.1, "Base learning rate (SGD: scaled by batch_size/256).",
                                  minimum=0)
    weight_decay: float = option(0.0, "Weight decay (see --weight_decay_mode).", minimum=0)
    weight_decay_mode: str = option(
        "decoupled", "'decoupled': Keras's weight decay; 'coupled' (SGD): wd*w is added to the "
        "gradient before momentum, as torch.optim.SGD(weight_decay=wd).",
        choices=WEIGHT_DECAY_MODES)
    adam_epsilon: float = option(
        1e-7, "AdamW's epsilon: Keras's default 1e-7; the reference's PyTorch AdamW uses 1e-8.",
        minimum=0.0)
    text_loss: str = option(
        "auto", "Text: 'sequence_sum' sums each example's target-token losses and averages over "
        "examples (the reference's GPT-2 objective); 'token_mean' averages over all target "
        "tokens of the batch (the reference's BART loss); 'auto': the reference's choice for "
        "--task.", choices=("auto",) + TEXT_LOSSES)
    length_buckets: str = option(
        "auto", "Text: pad each training batch to the smallest of a few lengths that fits it "
        "(one compiled shape per bucket). 'auto': up to 8 from the length quantiles of a fixed "
        "sample of 2,000 training examples; 'none': always the full "
        "--source_length/--target_length; or lengths like 32,64,128 (BART: encoder lengths).")
    clip_norm: float = option(
        0.0, "Clip all gradients together to this global norm (torch clip_grad_norm_); 0: off.",
        minimum=0)
    divergence_factor: float = option(
        1e4, "Stop the run as diverged when the training loss exceeds this many times the "
        "median loss of its first 10 steps, or the trainable weights' norm this many times its "
        "start (at least 1), checked at every checkpoint; NaN and infinity always stop it. 0: "
        "off.", minimum=0)
    schedule_unit: str = option(
        "step", "'step': the learning rate changes every step; 'epoch' (SGD): warm-up and "
        "cosine advance once per epoch, epoch 0 at rate 0, as the reference scheduler.",
        choices=SCHEDULE_UNITS)
    lr_decay: str = option(
        "auto", "Decay after the warm-up: 'auto' is cosine for SGD and linear for AdamW; VPT's "
        "full fine-tuning uses AdamW with 'cosine'.", choices=LR_DECAYS)
    batch_size: int = option(64, "Global batch size, over all replicas.", minimum=1)
    epochs: int = option(30, "Training epochs.", minimum=1)
    warmup_epochs: int = option(1, "Linear warm-up epochs (SGD; 0: none).", minimum=0)
    warmup_steps: int = option(100, "Linear warm-up steps (AdamW; 0: none).", minimum=0)
    seed: int = option(0, "Seed of initializers and data order (0 or more).", minimum=0)

    strategy: str = option("default", "tf.distribute strategy.", choices=STRATEGIES,
                           group="Hardware")
    tpu: str = option("", "TPU name or address for --strategy=tpu.")
    peer_timeout_seconds: float = option(
        300, "--strategy=multi_worker_mirrored: a worker whose peer has not answered for this "
        "long (no heartbeat, or a collective still waiting) exits with an error naming the "
        "peer. Must exceed the slowest healthy step, compilation included.",
        check=_positive_seconds("peer_timeout_seconds"))
    phase_timeout_seconds: float = option(
        3600, "--strategy=multi_worker_mirrored: how long a worker waits for a live peer busy "
        "outside training steps (writing a checkpoint, evaluating, exporting). A dead peer is "
        "still found within --peer_timeout_seconds by its missing heartbeat.",
        check=_positive_seconds("phase_timeout_seconds"))
    precision: str = option("float32", "Keras dtype policy; prefix variables stay float32.",
                            choices=PRECISIONS)
    jit_compile: Optional[bool] = option(
        None, "Compile the train step with XLA. Unset: on for GPUs and TPUs, off on CPUs, "
        "where XLA was measured no faster (it bypasses oneDNN's bfloat16 kernels and adds "
        "compilation before the first step).")

    workdir: str = option("runs/default", "Where checkpoints, logs, exports go.",
                          check=_not_blank, group="Outputs")
    export: bool = option(True, "Fold the prefixes and write a SavedModel.")
    checkpoint_every_steps: int = option(
        0, "Also checkpoint every N training steps, mid-epoch (0: only at epoch ends); a "
        "restart resumes from the exact step.", minimum=0)
    resume_from_unverified: bool = option(
        False, "Checkpoint files without a readable manifest (left by another run, or whose "
        "manifest was removed) stop a run from starting; with this flag each is verified by "
        "loading it into the model: a good one gets its manifest and counts as a checkpoint, "
        "a bad one is reported and left in place.")

    def __post_init__(self):
        for name, value in self.flag_values().items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{name}={value}: use a finite number.")
        check_fields(self)
        if self.task != "image_classification" and self.method.name not in TEXT_METHODS:
            raise ValueError(f"--method={self.method.name} does not apply to --task="
                             f"{self.task}; text tasks take {', '.join(TEXT_METHODS)}.")
        self.method_config  # noqa: B018 - validates VPT's placement, taken from the prefix's

    @property
    def method_config(self):
        """`method`, with VPT's placement and (for `vpt_length=0`) length taken from `prefix`."""
        method, placement = self.method, self.prefix.placement
        if not isinstance(placement, str):
            placement = ",".join(str(layer) for layer in placement)
        return dataclasses.replace(
            method, vpt_placement=method.vpt_placement or placement,
            vpt_length=method.vpt_length or self.prefix.length)

    @property
    def prefix_config(self):
        """The `PrefixConfig` the model gets: `prefix` for `--method=prefix`, else None."""
        return self.prefix if self.method.name == "prefix" else None

    def flag_values(self) -> dict:
        """`{flag name: value}`: the settings as `results.json` records them."""
        return flag_dict(self)

    def recorded_flags(self) -> dict:
        """The settings a restart must repeat (`RESTART_MAY_CHANGE` aside)."""
        return {k: v for k, v in self.flag_values().items() if k not in RESTART_MAY_CHANGE}


# Flags a restart may change; every other flag must equal the recorded one
# (see kprefix.runs.workdir.check_run_config). `epochs` may only grow.
RESTART_MAY_CHANGE = {
    "workdir", "export", "strategy", "tpu", "jit_compile", "checkpoint_every_steps",
    "peer_timeout_seconds", "phase_timeout_seconds", "config", "divergence_factor",
    "resume_from_unverified", "tfds_data_dir", "manual_dir", "text_data_dir", "eval_split",
    "max_eval_examples", "eval_batch_size", "num_beams", "max_new_tokens", "min_new_tokens",
    "length_penalty", "length_normalization", "no_repeat_ngram_size", "early_stopping",
    "force_end_at_max_length",
}
