"""Train, evaluate and export a prefix-tuned model: the main entry point.

    python -m kprefix.launch --flagfile=configs/quickstart.cfg
    python -m kprefix.launch --flagfile=configs/quickstart.cfg \\
        --backbone=vit_base_patch16_224_imagenet21k --dataset=vtab/cifar100
    kprefix-launch --config=vtab/deep_cifar100 --prefix_variant=no_share

Flags may come from flagfiles (`--flagfile=PATH`, or `--config=NAME` for a
config installed with kprefix) and be overridden on the command line; see
`--helpfull`. The run writes, under `--workdir`: `checkpoints/` (every epoch
and every `--checkpoint_every_steps` steps; a restarted run resumes at the
newest good one, mid-epoch too), `tensorboard/`, `export/` (the folded
SavedModel) and `results.json` (final metrics and every flag).

The chief holds `run.lock` while it runs and records the run's settings in
`run_config.json`; a restart must use the same settings (a larger
`--epochs` is allowed). Exit status: 0 done, 1 failed or diverged (then
`results.json` says `"status": "diverged"`), 42 stopped by SIGTERM after
saving a checkpoint (rerun to resume).
"""

import os
import sys

from absl import app, flags

from kprefix import cli, logs, methods
from kprefix.flag_help import group
from kprefix.prefix import flags as prefix_flags

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None,
                    "Name of a config installed with kprefix, read like a flagfile: "
                    "'quickstart', 'vtab/deep_cifar100', 'nlg/e2e', ... (configs/NAME.cfg).")
flags.DEFINE_enum("task", "image_classification",
                  ["image_classification", "table_to_text", "summarization"],
                  "What to train: a ViT classifier, GPT-2 table-to-text (E2E, WebNLG) or "
                  "BART summarization (XSUM).")

group("Model")
flags.DEFINE_string("backbone", "vit_tiny",
                    "Built-in config (vit_tiny, vit_b16_random, ...), keras-hub preset "
                    "name, or local preset directory.")
flags.DEFINE_enum("method", "prefix", list(methods.METHODS),
                  "What trains: 'prefix' (the --prefix_* flags), 'linear' (the head alone), "
                  "'finetune' (everything), 'partial' (the top --partial_layers blocks), 'lora' "
                  "(--lora_rank), 'vpt' (--vpt_length prompt tokens, --prefix_placement "
                  "shallow/deep) or 'adapter' (--adapter_dim, --adapter_style). Text tasks: "
                  f"{', '.join(methods.TEXT_METHODS)}.")
flags.DEFINE_integer("partial_layers", 1,
                     "--method=partial: blocks trained at the top of each stack, with the final "
                     "norm (VPT's Partial-1: 1; Li & Liang's FT-top2: 2).", lower_bound=1)
flags.DEFINE_integer("lora_rank", 8,
                     "--method=lora: rank of the query and value updates (keras-hub "
                     "enable_lora; alpha = rank).", lower_bound=1)
flags.DEFINE_integer("vpt_length", 50,
                     "--method=vpt: prompt tokens per block; 0 takes --prefix_length (the paper's "
                     "P, which matches VPT's prompt length).", lower_bound=0)
flags.DEFINE_integer("adapter_dim", 8, "--method=adapter: bottleneck width.", lower_bound=1)
flags.DEFINE_enum("adapter_style", "pfeiffer", ["pfeiffer", "houlsby"],
                  "--method=adapter: 'pfeiffer' after each MLP (VPT's Adapter), 'houlsby' "
                  "after each attention and MLP sub-block.")
# The --prefix_* flags, one per PrefixConfig field (kprefix/prefix/config.py).
prefix_flags.define_prefix_flags()
flags.DEFINE_string("prefix_init_text", "summarize",
                    "Text whose keys/values start a --prefix_init=word prefix (tokenized with a "
                    "leading space, as add_prefix_space=True).")
flags.DEFINE_enum("head_init", "glorot", ["glorot", "kaiming_normal_fan_out"],
                  "Classifier head initializer: 'glorot' or the reference's "
                  "'kaiming_normal_fan_out' (normal, std sqrt(2/classes); bias -log(99)).")
flags.DEFINE_bool("backbone_dropout", True,
                  "Keep the frozen backbone's own dropout in training; false builds it with "
                  "every dropout rate 0 (the reference's eval-mode GPT-2 and ViT). Prefix "
                  "dropout is --prefix_dropout.")

group("Data")
flags.DEFINE_string("dataset", "digits",
                    "Images: 'digits', 'minivtab/<task>' (rendered offline), 'vtab/<task>' or "
                    "'fgvc/<dataset>'; "
                    "text: 'e2e', 'webnlg' or 'xsum'.")
flags.DEFINE_string("train_split", None, "Training split (default per dataset family).")
flags.DEFINE_string("eval_split", None, "Evaluation split (default per dataset family).")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data directory (local or gs://).")
flags.DEFINE_string("manual_dir", None, "Folder of manually downloaded archives.")
flags.DEFINE_bool("drop_remainder", True,
                  "Drop the last partial training batch; false keeps it (PyTorch drop_last=False), "
                  "padded to the batch size with zero-weight rows so shapes stay static.")
flags.DEFINE_string("split_file", None,
                    "FGVC: 'vpt' (VPT's splits, shipped with kprefix; the FGVC flagfiles' "
                    "value), 'holdout' (a fixed-seed 10% hold-out of the official train split, "
                    "also the default), VPT's released split folder (train.json and val.json, "
                    "each mapping image path to class) or one JSON file with 'train' and 'val' "
                    "lists.")
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
flags.DEFINE_integer("max_steps_per_epoch", 0,
                     "Text: train at most N batches per epoch, the first N of that epoch's "
                     "shuffled order (0: every batch); with --epochs=1 a run sees a random "
                     "subset of a training set larger than its step budget.", lower_bound=0)
flags.DEFINE_integer("source_length", 64, "Text: source tokens (XSUM: 512).")
flags.DEFINE_integer("target_length", 64, "Text: target tokens in training.")

group("Decoding")
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

group("Optimization")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"], "SGD+momentum (vision) or AdamW.")
flags.DEFINE_float("learning_rate", 0.1,
                   "Base learning rate (SGD: scaled by batch_size/256).")
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (see --weight_decay_mode).")
flags.DEFINE_enum("weight_decay_mode", "decoupled", ["coupled", "decoupled"],
                  "'decoupled': Keras's weight decay; 'coupled' (SGD): wd*w is added to the "
                  "gradient before momentum, as torch.optim.SGD(weight_decay=wd).")
flags.DEFINE_float("adam_epsilon", 1e-7,
                   "AdamW's epsilon: Keras's default 1e-7; the reference's PyTorch AdamW uses 1e-8.",
                   lower_bound=0.0)
flags.DEFINE_enum("text_loss", "auto", ["auto", "sequence_sum", "token_mean"],
                  "Text: 'sequence_sum' sums each example's target-token losses and averages "
                  "over examples (the reference's GPT-2 objective); 'token_mean' averages over "
                  "all target tokens of the batch (the reference's BART loss); 'auto': the "
                  "reference's choice for --task.")
# Length-bucketed text batches (kprefix.data.length_buckets).
flags.DEFINE_string("length_buckets", "auto",
                    "Text: pad each training batch to the smallest of a few lengths that fits it "
                    "(one compiled shape per bucket). 'auto': up to 8 from the training data's "
                    "length quantiles; 'none': always the full --source_length/--target_length; "
                    "or lengths like 32,64,128 (BART: encoder lengths).")
flags.DEFINE_float("clip_norm", 0.0,
                   "Clip all gradients together to this global norm (torch clip_grad_norm_); "
                   "0: off.")
flags.DEFINE_enum("schedule_unit", "step", ["step", "epoch"],
                  "'step': the learning rate changes every step; 'epoch' (SGD): warm-up and "
                  "cosine advance once per epoch, epoch 0 at rate 0, as the reference scheduler.")
flags.DEFINE_enum("lr_decay", "auto", ["auto", "cosine", "linear"],
                  "Decay after the warm-up: 'auto' is cosine for SGD and linear for AdamW; "
                  "VPT's full fine-tuning uses AdamW with 'cosine'.")
flags.DEFINE_integer("batch_size", 64, "Global batch size, over all replicas.", lower_bound=1)
flags.DEFINE_integer("epochs", 30, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs (SGD).")
flags.DEFINE_integer("warmup_steps", 100, "Linear warm-up steps (AdamW).")
flags.DEFINE_integer("seed", 0, "Seed of initializers and data order.")

group("Hardware")
flags.DEFINE_enum("strategy", "default",
                  ["default", "mirrored", "multi_worker_mirrored", "tpu"],
                  "tf.distribute strategy.")
flags.DEFINE_string("tpu", "", "TPU name or address for --strategy=tpu.")
flags.DEFINE_float("peer_timeout_seconds", 300,
                   "--strategy=multi_worker_mirrored: a worker whose peer has not answered "
                   "for this long (no heartbeat, or a collective still waiting) exits with an "
                   "error naming the peer. Must exceed the slowest healthy step, compilation "
                   "included.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy; prefix variables stay float32.")
flags.DEFINE_bool("jit_compile", None,
                  "Compile the train step with XLA. Unset: on for GPUs and TPUs, off on CPUs, "
                  "where XLA was measured no faster (it bypasses oneDNN's bfloat16 kernels and "
                  "adds compilation before the first step).")

group("Outputs")
flags.DEFINE_string("workdir", "runs/default", "Where checkpoints, logs, exports go.")
flags.DEFINE_bool("export", True, "Fold the prefixes and write a SavedModel.")
flags.DEFINE_integer("checkpoint_every_steps", 0,
                     "Also checkpoint every N training steps, mid-epoch (0: only at epoch "
                     "ends); a restart resumes from the exact step.", lower_bound=0)

# Flags a restart may change; every other flag must equal the recorded one
# (see kprefix.workdir.check_run_config). `epochs` may only grow.
RESTART_MAY_CHANGE = {
    "workdir", "export", "strategy", "tpu", "jit_compile", "checkpoint_every_steps",
    "peer_timeout_seconds", "config",
    "tfds_data_dir", "manual_dir", "text_data_dir", "eval_split", "max_eval_examples",
    "eval_batch_size", "num_beams", "max_new_tokens", "min_new_tokens", "length_penalty",
    "length_normalization", "no_repeat_ngram_size", "early_stopping", "force_end_at_max_length",
}


def prefix_config_from_flags(flag_values=FLAGS):
    """The `PrefixConfig` the `--prefix_*` flags describe; errors name the flag.

    `--prefix_init=word` takes its tokens (and so the prefix length) from
    `--prefix_init_text` and the backbone's tokenizer.
    """
    derived = {}
    if flag_values.prefix_init == "word":
        from kprefix.tasks.tokenizers import load_tokenizer, prefix_init_token_ids

        try:
            tokens = prefix_init_token_ids(load_tokenizer(flag_values.backbone),
                                           flag_values.prefix_init_text)
        except ValueError as error:
            raise app.UsageError(f"--prefix_init=word: {error}") from None
        derived = {"init_token_ids": tokens, "length": len(tokens)}
    try:
        return prefix_flags.prefix_config_from_flags(flag_values, **derived)
    except ValueError as error:
        raise app.UsageError(f"Bad prefix flags: {error}") from None


def method_config_from_flags():
    """The `MethodConfig` of `--method` and its options; errors name the flag."""
    if FLAGS.task != "image_classification" and FLAGS.method not in methods.TEXT_METHODS:
        raise app.UsageError(f"--method={FLAGS.method} does not apply to --task={FLAGS.task}; "
                             f"text tasks take {', '.join(methods.TEXT_METHODS)}.")
    try:
        return methods.config_from_flags(FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def _launch_flags():
    return {f.name: f.value for f in FLAGS.get_flags_for_module(sys.modules[__name__])}


def _fail(message, code=1):
    print(f"\nError: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _run_multi_worker(experiment, prefix_config):
    """`experiment.run` as one worker of several: a dead peer ends the run
    with a message naming it (the strategy also makes SIGTERM/SIGINT end a
    blocked worker, see `kprefix.multi_worker`)."""
    from kprefix import multi_worker

    try:
        multi_worker.cluster_from_tf_config()
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        return experiment.run(FLAGS, prefix_config)
    except multi_worker.PEER_FAILURE_ERRORS as error:
        detail = [line for line in str(error).splitlines() if line.strip() and not line.startswith(
            (" ", "\t", "Graph execution error", "Detected at", "The error could be"))]
        print("TensorFlow: " + " ".join(detail[:3]), file=sys.stderr)
        message = multi_worker.describe_peer_failure(error)
        # TensorFlow's exit waits on a shutdown barrier that the dead peer
        # never reaches; give exit handlers a few seconds, then leave.
        multi_worker.exit_after(seconds=5, code=1, message=message)
        sys.exit(message)
    except BaseException as error:
        # Any other failure (preemption included): tell the peers at once
        # (instead of after --peer_timeout_seconds) and leave promptly.
        from kprefix.train import Preempted

        multi_worker.report_failure_to_peers(error)
        multi_worker.exit_after(seconds=5, code=Preempted.exit_code
                                if isinstance(error, Preempted) else 1)
        raise


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    method_config_from_flags()
    prefix_config = prefix_config_from_flags() if FLAGS.method == "prefix" else None
    logs.import_tensorflow_quietly(FLAGS.verbosity if FLAGS["verbosity"].present else None)
    from kprefix import workdir

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
    from kprefix import checkpoints, train, workdir

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
        if FLAGS.strategy == "multi_worker_mirrored":
            results, summary = _run_multi_worker(experiment, prefix_config)
        else:
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


def console_main():
    """The `kprefix-launch` console script."""
    cli.run(main)


if __name__ == "__main__":
    console_main()
