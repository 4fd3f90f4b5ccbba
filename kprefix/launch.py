"""Train, evaluate and export a prefix-tuned model: the main entry point.

    python -m kprefix.launch --flagfile=configs/quickstart.cfg
    python -m kprefix.launch --flagfile=configs/quickstart.cfg \\
        --backbone=vit_base_patch16_224_imagenet21k --dataset=vtab/cifar100

Flags may come from flagfiles and be overridden on the command line; see
`--helpfull`. The run writes, under `--workdir`: `checkpoints/` (one per
epoch; a restarted run resumes from the newest), `tensorboard/`, `export/`
(the folded SavedModel) and `results.json` (final metrics and every flag).

The chief holds `run.lock` while it runs and records the run's settings in
`run_config.json`; a restart must use the same settings (a larger
`--epochs` is allowed). Exit status: 0 done, 1 failed or diverged (then
`results.json` says `"status": "diverged"`), 42 stopped by SIGTERM after
saving a checkpoint (rerun to resume).
"""

import os
import sys

from absl import app, flags

from kprefix import checkpoints, train, workdir
from kprefix.prefix.config import (ACTIVATIONS, DROPOUT_SITES, INITIALIZERS, MLP_INITIALIZERS,
                                   POSITION_OFFSETS, VARIANTS, PrefixConfig)

FLAGS = flags.FLAGS

flags.DEFINE_enum("task", "image_classification",
                  ["image_classification", "table_to_text", "summarization"],
                  "What to train: a ViT classifier, GPT-2 table-to-text (E2E, WebNLG) or "
                  "BART summarization (XSUM).")

# Model.
flags.DEFINE_string("backbone", "vit_tiny",
                    "Built-in config (vit_tiny, vit_b16_random, ...), keras-hub preset "
                    "name, or local preset directory.")
flags.DEFINE_enum("prefix_variant", "deep_share", VARIANTS, "Key/value sharing structure.")
flags.DEFINE_string("prefix_placement", "deep",
                    "'shallow' (first layer), 'deep' (all layers) or comma-separated "
                    "layer indices.")
flags.DEFINE_integer("prefix_length", 10, "Prefix vectors per attention layer.")
flags.DEFINE_integer("prefix_mlp_hidden", 48, "Deep-share MLP hidden width.")
flags.DEFINE_enum("prefix_mlp_activation", "tanh", ACTIVATIONS, "Deep-share MLP activation.")
flags.DEFINE_bool("prefix_share_across_layers", False,
                  "Deep-share: one P' and first MLP layer for all layers.")
flags.DEFINE_integer("prefix_embedding_dim", None,
                     "Width of P' (Deep-share) or p (one-layer share); default hidden size.")
flags.DEFINE_enum("prefix_key_activation", "tanh", ACTIVATIONS, "one_layer_share s1.")
flags.DEFINE_enum("prefix_value_activation", "sigmoid", ACTIVATIONS, "one_layer_share s2.")
flags.DEFINE_enum("prefix_init", "xavier_uniform", INITIALIZERS,
                  "Prefix initializer. 'word' (No-share, GPT-2): the frozen backbone's own "
                  "per-layer keys/values for --prefix_init_text, as Li & Liang's init_shallow; "
                  "the prefix length is then that text's token count (--prefix_length is unused).")
flags.DEFINE_string("prefix_init_text", "summarize",
                    "Text whose keys/values start a --prefix_init=word prefix (tokenized with a "
                    "leading space, as add_prefix_space=True).")
flags.DEFINE_enum("prefix_position_offset", "0", POSITION_OFFSETS,
                  "GPT-2: '0' real tokens take positions 0, 1, ...; 'P' they start at the "
                  "prefix length, as in Li & Liang's code (the prefix is Hugging Face past).")
flags.DEFINE_float("prefix_init_scale", 0.02, "Std of the 'normal' prefix initializer.")
flags.DEFINE_float("prefix_dropout", 0.0, "Dropout on generated prefixes in training.")
flags.DEFINE_enum("prefix_dropout_site", "output", DROPOUT_SITES,
                  "Where prefix dropout acts: 'output' (on the key and value prefixes, one mask "
                  "each) or 'prompt' (Simple-share: on the prompt before the LayerNorm, one mask "
                  "for key and value, as the reference; other variants as 'output').")
flags.DEFINE_enum("prefix_mlp_init", "glorot", MLP_INITIALIZERS,
                  "Deep-share MLP initializer: 'glorot' (Keras Dense) or 'torch_linear' "
                  "(PyTorch nn.Linear default: kernel and bias uniform +-1/sqrt(fan_in)).")
flags.DEFINE_enum("head_init", "glorot", ["glorot", "kaiming_normal_fan_out"],
                  "Classifier head initializer: 'glorot' or the reference's "
                  "'kaiming_normal_fan_out' (normal, std sqrt(2/classes); bias -log(99)).")
flags.DEFINE_bool("backbone_dropout", True,
                  "Keep the frozen backbone's own dropout in training; false builds it with "
                  "every dropout rate 0 (the reference's eval-mode GPT-2 and ViT). Prefix "
                  "dropout is --prefix_dropout.")

# Data.
flags.DEFINE_string("dataset", "digits",
                    "Images: 'digits', 'vtab/<task>' or 'fgvc/<dataset>'; "
                    "text: 'e2e', 'webnlg' or 'xsum'.")
flags.DEFINE_string("train_split", None, "Training split (default per dataset family).")
flags.DEFINE_string("eval_split", None, "Evaluation split (default per dataset family).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (local or gs://).")
flags.DEFINE_string("manual_dir", None, "Folder of manually downloaded archives.")
flags.DEFINE_bool("drop_remainder", True,
                  "Drop the last partial training batch; false keeps it (PyTorch drop_last=False), "
                  "padded to the batch size with zero-weight rows so shapes stay static.")
flags.DEFINE_string("split_file", None,
                    "FGVC: VPT's released split (a folder with train.json and val.json, each "
                    "mapping image path to class) or one JSON file with 'train' and 'val' lists. "
                    "Default: a fixed-seed 10% hold-out of the official train split.")
flags.DEFINE_enum("image_normalization", "imagenet", ["imagenet", "preset"],
                  "Images (vtab/, fgvc/): normalize with the ImageNet mean and std, as the "
                  "VPT protocol does, or with the --backbone preset's own image converter.")
flags.DEFINE_string("text_data_dir", None,
                    "Folder holding e2e/, webnlg2017/ and xsum/ (default: $KPREFIX_SHARED_DATA, "
                    "else ../shared/data).")
flags.DEFINE_enum("e2e_source_format", "reference", ["reference", "raw"],
                  "E2E input: 'reference' Li & Liang's 'name : X | Type : Y' source with "
                  "tokenized targets (their src1_*.txt), framed ' src <eos> tgt <eos>'; 'raw' "
                  "the challenge MR 'name[X], eatType[Y]' with untokenized targets.")
flags.DEFINE_enum("webnlg_source_format", "reference", ["reference", "raw"],
                  "WebNLG input: 'reference' Li & Liang's ' | s : p : o' (underscores kept, "
                  "training on lexicalisations marked good), framed as E2E; 'raw' 's : p : o | "
                  "...' with underscores as spaces, all lexicalisations.")
flags.DEFINE_integer("max_train_examples", 0, "Text: use only the first N inputs (0: all).")
flags.DEFINE_integer("max_eval_examples", 0, "Text: evaluate the first N inputs (0: all).")
flags.DEFINE_integer("source_length", 64, "Text: source tokens (XSUM: 512).")
flags.DEFINE_integer("target_length", 64, "Text: target tokens in training.")

# Decoding.
flags.DEFINE_integer("num_beams", 5, "Beam width (1: greedy).")
flags.DEFINE_integer("max_new_tokens", 100, "Most generated tokens (XSUM: 61, max length 62).")
flags.DEFINE_integer("min_new_tokens", 5, "Fewest generated tokens before the end token.")
flags.DEFINE_float("length_penalty", 1.0, "Score = log-prob / length ** length_penalty.")
flags.DEFINE_enum("length_normalization", "generated", ["generated", "full"],
                  "Beam score length: 'generated' tokens (end included) or the 'full' sequence "
                  "with prompt/start tokens and without the end token (transformers 3.2).")
flags.DEFINE_integer("no_repeat_ngram_size", 0,
                     "Never generate an n-gram already in the sequence (0: off).")
flags.DEFINE_enum("early_stopping", "heuristic", ["heuristic", "exact", "first"],
                  "When a beam input is done: Hugging Face's bound, an exact bound, or 'first' "
                  "= as soon as num_beams hypotheses finished (transformers early_stopping=True).")
flags.DEFINE_bool("force_end_at_max_length", False,
                  "The last token within the length limit is the end token, with log-prob 0, "
                  "as transformers 3.2 BART generation forces it.")
flags.DEFINE_integer("eval_batch_size", 16, "Inputs decoded together.")

# Optimization.
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"], "SGD+momentum (vision) or AdamW.")
flags.DEFINE_float("learning_rate", 0.1,
                   "Base learning rate (SGD: scaled by batch_size/256).")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (see --weight_decay_mode).")
flags.DEFINE_enum("weight_decay_mode", "decoupled", ["coupled", "decoupled"],
                  "'decoupled': Keras's weight decay; 'coupled' (SGD): wd*w is added to the "
                  "gradient before momentum, as torch.optim.SGD(weight_decay=wd).")
flags.DEFINE_float("clip_norm", 0.0,
                   "Clip all gradients together to this global norm (torch clip_grad_norm_); "
                   "0: off.")
flags.DEFINE_enum("schedule_unit", "step", ["step", "epoch"],
                  "'step': the learning rate changes every step; 'epoch' (SGD): warm-up and "
                  "cosine advance once per epoch, epoch 0 at rate 0, as the reference scheduler.")
flags.DEFINE_integer("batch_size", 64, "Global batch size, over all replicas.", lower_bound=1)
flags.DEFINE_integer("epochs", 30, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs (SGD).")
flags.DEFINE_integer("warmup_steps", 100, "Linear warm-up steps (AdamW).")
flags.DEFINE_integer("seed", 0, "Seed of initializers and data order.")

# Hardware.
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy; prefix variables stay float32.")
flags.DEFINE_bool("jit_compile", True, "Compile the train step with XLA.")

# Outputs.
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs, exports go.")
flags.DEFINE_bool("export", True, "Fold the prefixes and write a SavedModel.")
flags.DEFINE_integer("checkpoint_every_steps", 0,
                     "Also checkpoint every N training steps, mid-epoch (0: only at epoch "
                     "ends); a restart resumes from the exact step.", lower_bound=0)

# Flags a restart may change; every other flag must equal the recorded one
# (see kprefix.workdir.check_run_config). `epochs` may only grow.
RESTART_MAY_CHANGE = {
    "workdir", "export", "strategy", "tpu", "jit_compile", "checkpoint_every_steps",
    "tfds_data_dir", "manual_dir", "text_data_dir", "eval_split", "max_eval_examples",
    "eval_batch_size", "num_beams", "max_new_tokens", "min_new_tokens", "length_penalty",
    "length_normalization", "no_repeat_ngram_size", "early_stopping", "force_end_at_max_length",
}


def prefix_config_from_flags():
    """The `PrefixConfig` the flags describe; errors name the flag."""
    placement = FLAGS.prefix_placement
    if placement not in ("shallow", "deep"):
        try:
            placement = tuple(int(i) for i in placement.split(","))
        except ValueError:
            raise app.UsageError(
                f"--prefix_placement={placement!r}: use 'shallow', 'deep' or "
                "comma-separated layer indices like '0,1,5'."
            ) from None
    length, init_token_ids = FLAGS.prefix_length, ()
    if FLAGS.prefix_init == "word":
        from kprefix.tasks.tokenizers import load_tokenizer, prefix_init_token_ids

        try:
            init_token_ids = prefix_init_token_ids(load_tokenizer(FLAGS.backbone),
                                                   FLAGS.prefix_init_text)
        except ValueError as error:
            raise app.UsageError(f"--prefix_init=word: {error}") from None
        length = len(init_token_ids)
    try:
        return PrefixConfig(
            variant=FLAGS.prefix_variant,
            placement=placement,
            length=length,
            mlp_hidden=FLAGS.prefix_mlp_hidden,
            mlp_activation=FLAGS.prefix_mlp_activation,
            share_across_layers=FLAGS.prefix_share_across_layers,
            embedding_dim=FLAGS.prefix_embedding_dim,
            key_activation=FLAGS.prefix_key_activation,
            value_activation=FLAGS.prefix_value_activation,
            initializer=FLAGS.prefix_init,
            init_scale=FLAGS.prefix_init_scale,
            dropout=FLAGS.prefix_dropout,
            mlp_init=FLAGS.prefix_mlp_init,
            dropout_site=FLAGS.prefix_dropout_site,
            init_token_ids=init_token_ids,
            position_offset=FLAGS.prefix_position_offset,
        )
    except ValueError as error:
        raise app.UsageError(f"Bad prefix flags: {error}") from None


def _launch_flags():
    return {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules[__name__])}


def _fail(message, code=1):
    print(f"\nError: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    prefix_config = prefix_config_from_flags()
    try:
        workdir.check_writable(FLAGS.workdir)
    except OSError as error:
        raise app.UsageError(f"--workdir={FLAGS.workdir!r}: {error}") from None
    task = workdir.this_task()
    lock = workdir.WorkdirLock(FLAGS.workdir) if task.is_chief else None
    if lock is not None:
        try:
            lock.acquire()
        except workdir.WorkdirBusy as error:
            _fail(str(error))
        if lock.took_over:
            print(f"Took over the stale lock of pid {lock.took_over.get('pid')} on "
                  f"{lock.took_over.get('host')} (that run is gone).", flush=True)
    try:
        _run(task, prefix_config)
    finally:
        if lock is not None:
            lock.release()


def _run(task, prefix_config):
    flag_values = _launch_flags()
    results_path = os.path.join(FLAGS.workdir, "results.json")
    if task.is_chief:
        recorded = {k: v for k, v in flag_values.items() if k not in RESTART_MAY_CHANGE}
        try:
            grown = workdir.check_run_config(FLAGS.workdir, recorded)
        except workdir.ChangedRunConfig as error:
            raise app.UsageError(str(error)) from None
        if grown:
            print(f"Continuing with more --epochs ({FLAGS.epochs}); the learning-rate "
                  "schedule now spans the new total.", flush=True)
    if FLAGS.task == "image_classification":
        from kprefix.experiments import image_classification as experiment
    else:
        from kprefix.experiments import text_generation as experiment
    try:
        results, summary = experiment.run(FLAGS, prefix_config)
    except train.Diverged as error:
        if task.is_chief:
            workdir.write_json(results_path, {"status": "diverged", "error": str(error),
                                              "diverged_at_step": error.step,
                                              "flags": flag_values})
        _fail(f"training diverged: {error}")
    except train.Preempted as error:
        _fail(str(error), code=train.Preempted.exit_code)
    except checkpoints.CheckpointError as error:
        _fail(str(error))
    if not task.is_chief:
        print(f"Done ({task.name}); the chief wrote the results.", flush=True)
        return
    results["status"] = "completed"
    results["flags"] = flag_values
    workdir.write_json(results_path, results)  # last: its presence means the run finished
    print(
        "\nDone.\n"
        + "".join(f"  {line}\n" for line in summary)
        + f"  results:     {results_path}\n"
        f"  checkpoints: {os.path.join(FLAGS.workdir, 'checkpoints')}\n"
        f"  tensorboard: {os.path.join(FLAGS.workdir, 'tensorboard')}\n"
        + (f"  SavedModel:  {results['export_dir']}\n" if "export_dir" in results else ""),
        flush=True,
    )


if __name__ == "__main__":
    app.run(main)
