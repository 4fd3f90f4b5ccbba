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

Every flag, the data, the backbone and the workdir are checked before the
first write; then the chief holds `run.lock` while it runs and records the
run's settings in `run_config.json`; a restart must use the same settings (a
larger `--epochs` is allowed). An error is one line on stderr (`--verbosity`
adds the traceback). Exit status: 0 done, 2 usage error (nothing written), 1
failed or diverged (then `results.json` says `"status": "diverged"`), 42
stopped by SIGTERM after saving a checkpoint (rerun to resume).
"""

import math
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
flags.DEFINE_integer("max_train_examples", 0, "Text: use only the first N inputs (0: all).",
                     lower_bound=0)
flags.DEFINE_integer("max_eval_examples", 0, "Text: evaluate the first N inputs (0: all).",
                     lower_bound=0)
flags.DEFINE_integer("max_steps_per_epoch", 0,
                     "Text: train at most N batches per epoch, the first N of that epoch's "
                     "shuffled order (0: every batch); with --epochs=1 a run sees a random "
                     "subset of a training set larger than its step budget.", lower_bound=0)
flags.DEFINE_integer("source_length", 64, "Text: source tokens (XSUM: 512).", lower_bound=1)
flags.DEFINE_integer("target_length", 64, "Text: target tokens in training.", lower_bound=1)

group("Decoding")
flags.DEFINE_integer("num_beams", 5, "Beam width (1: greedy).", lower_bound=1)
flags.DEFINE_integer("max_new_tokens", 100, "Most generated tokens (XSUM: 61, max length 62).",
                     lower_bound=1)
flags.DEFINE_integer("min_new_tokens", 5,
                     "Fewest generated tokens before the end token (0: no minimum).",
                     lower_bound=0)
flags.DEFINE_float("length_penalty", 1.0, "Score = log-prob / length ** length_penalty.")
flags.DEFINE_enum("length_normalization", "generated", ["generated", "full"],
                  "Beam score length: 'generated' tokens (end included) or the 'full' sequence "
                  "with prompt/start tokens and without the end token (transformers 3.2).")
flags.DEFINE_integer("no_repeat_ngram_size", 0,
                     "Never generate an n-gram already in the sequence (0: off).", lower_bound=0)
flags.DEFINE_enum("early_stopping", "heuristic", ["heuristic", "exact", "first"],
                  "When a beam input is done: Hugging Face's bound, an exact bound, or 'first' "
                  "= as soon as num_beams hypotheses finished (transformers early_stopping=True).")
flags.DEFINE_bool("force_end_at_max_length", False,
                  "The last token within the length limit is the end token, with log-prob 0, "
                  "as transformers 3.2 BART generation forces it.")
flags.DEFINE_integer("eval_batch_size", 16, "Inputs decoded together.", lower_bound=1)

group("Optimization")
flags.DEFINE_enum("optimizer", "sgd", ["sgd", "adamw"], "SGD+momentum (vision) or AdamW.")
flags.DEFINE_float("learning_rate", 0.1,
                   "Base learning rate (SGD: scaled by batch_size/256).", lower_bound=0)
flags.DEFINE_float("weight_decay", 0.0, "Weight decay (see --weight_decay_mode).", lower_bound=0)
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
                    "(one compiled shape per bucket). 'auto': up to 8 from the length quantiles "
                    "of a fixed sample of 2,000 training examples; 'none': always the full --source_length/--target_length; "
                    "or lengths like 32,64,128 (BART: encoder lengths).")
flags.DEFINE_float("clip_norm", 0.0,
                   "Clip all gradients together to this global norm (torch clip_grad_norm_); "
                   "0: off.", lower_bound=0)
flags.DEFINE_float("divergence_factor", 1e4,
                   "Stop the run as diverged when the training loss exceeds this many times "
                   "the median loss of its first 10 steps, or the trainable weights' norm this "
                   "many times its start (at least 1), checked at every checkpoint; NaN and "
                   "infinity always stop it. 0: off.", lower_bound=0)
flags.DEFINE_enum("schedule_unit", "step", ["step", "epoch"],
                  "'step': the learning rate changes every step; 'epoch' (SGD): warm-up and "
                  "cosine advance once per epoch, epoch 0 at rate 0, as the reference scheduler.")
flags.DEFINE_enum("lr_decay", "auto", ["auto", "cosine", "linear"],
                  "Decay after the warm-up: 'auto' is cosine for SGD and linear for AdamW; "
                  "VPT's full fine-tuning uses AdamW with 'cosine'.")
flags.DEFINE_integer("batch_size", 64, "Global batch size, over all replicas.", lower_bound=1)
flags.DEFINE_integer("epochs", 30, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("warmup_epochs", 1, "Linear warm-up epochs (SGD; 0: none).", lower_bound=0)
flags.DEFINE_integer("warmup_steps", 100, "Linear warm-up steps (AdamW; 0: none).",
                     lower_bound=0)
flags.DEFINE_integer("seed", 0, "Seed of initializers and data order (0 or more).",
                     lower_bound=0)

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
flags.DEFINE_float("phase_timeout_seconds", 3600,
                   "--strategy=multi_worker_mirrored: how long a worker waits for a live peer "
                   "busy outside training steps (writing a checkpoint, evaluating, exporting). "
                   "A dead peer is still found within --peer_timeout_seconds by its missing "
                   "heartbeat.", lower_bound=0)
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
flags.DEFINE_bool("resume_from_unverified", False,
                  "Checkpoint files without a readable manifest (left by another run, or "
                  "whose manifest was removed) stop a run from starting; with this flag each "
                  "is verified by loading it into the model: a good one gets its manifest and "
                  "counts as a checkpoint, a bad one is reported and left in place.")

# Flags a restart may change; every other flag must equal the recorded one
# (see kprefix.workdir.check_run_config). `epochs` may only grow.
RESTART_MAY_CHANGE = {
    "workdir", "export", "strategy", "tpu", "jit_compile", "checkpoint_every_steps",
    "peer_timeout_seconds", "phase_timeout_seconds", "config", "divergence_factor", "resume_from_unverified",
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


def check_flags():
    """Usage errors for flag values that no single flag's bounds can express.

    Bounds of one flag (`--epochs` at least 1, ...) are declared with the
    flag and checked while parsing; what needs several flags, or the
    environment, is checked here, before anything is loaded or written.
    """
    for flag in FLAGS.get_flags_for_module(sys.modules[__name__]):
        if isinstance(flag.value, float) and not math.isfinite(flag.value):
            raise app.UsageError(f"--{flag.name}={flag.value}: use a finite number.")
    if not FLAGS.workdir.strip():
        raise app.UsageError("--workdir is empty: name the folder for checkpoints, the export "
                             "and results, e.g. --workdir=runs/quickstart.")
    for name in ("peer_timeout_seconds", "phase_timeout_seconds"):
        if FLAGS[name].value <= 0:
            raise app.UsageError(f"--{name}={FLAGS[name].value}: use a positive number of "
                                 "seconds.")
    if FLAGS.min_new_tokens > FLAGS.max_new_tokens:
        raise app.UsageError(f"--min_new_tokens={FLAGS.min_new_tokens} exceeds "
                             f"--max_new_tokens={FLAGS.max_new_tokens}; lower it.")


def check_settings():
    """Every check of the parsed flags that needs no data or model; returns
    the `PrefixConfig` (None for other methods). Raises `app.UsageError`."""
    check_flags()
    method_config_from_flags()
    return prefix_config_from_flags() if FLAGS.method == "prefix" else None


def check_cluster():
    """A usage error for a missing or malformed `TF_CONFIG` where the strategy needs one."""
    if FLAGS.strategy == "multi_worker_mirrored":
        from kprefix import multi_worker

        try:
            multi_worker.cluster_from_tf_config()
        except ValueError as error:
            raise app.UsageError(str(error)) from None


def check_workdir(task):
    """Read-only checks of `--workdir` by the chief.

    Refuses a workdir that a live run holds, settings that differ from the
    ones the run started with, and checkpoint files that no manifest vouches
    for (unless `--resume_from_unverified`). Writes nothing.
    """
    from kprefix import checkpoints, workdir

    if not task.is_chief:
        return
    workdir.WorkdirLock(FLAGS.workdir).check_free()
    try:
        workdir.check_run_config(FLAGS.workdir, _recorded_flags(), record=False)
    except workdir.ChangedRunConfig as error:
        raise app.UsageError(str(error)) from None
    unverified = checkpoints.CheckpointStore(os.path.join(FLAGS.workdir, "checkpoints")).unverified()
    if unverified and not FLAGS.resume_from_unverified:
        names = ", ".join(unverified[:4]) + (f" and {len(unverified) - 4} more"
                                             if len(unverified) > 4 else "")
        raise app.UsageError(
            f"{os.path.join(FLAGS.workdir, 'checkpoints')} holds checkpoint files without a "
            f"readable manifest ({names}); they are not overwritten. Move them away to start "
            "over, or add --resume_from_unverified to verify them by loading.")


def _recorded_flags():
    return {k: v for k, v in _launch_flags().items() if k not in RESTART_MAY_CHANGE}


def main(argv):
    """Checks everything, then (first write) locks the workdir, trains, evaluates, exports."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    prefix_config = check_settings()
    logs.import_tensorflow_quietly(FLAGS.verbosity if FLAGS["verbosity"].present else None)
    check_cluster()
    from kprefix import workdir

    task = workdir.this_task()
    check_workdir(task)
    if FLAGS.task == "image_classification":
        from kprefix.experiments import image_classification as experiment
    else:
        from kprefix.experiments import text_generation as experiment

    def prepare_and_run():
        train_evaluate_export = experiment.prepare(FLAGS, prefix_config)
        # Everything is checked: from here on the run writes.
        try:
            workdir.check_writable(FLAGS.workdir)
        except OSError as error:
            raise app.UsageError(f"--workdir={FLAGS.workdir!r}: {error}") from None
        lock = workdir.WorkdirLock(FLAGS.workdir) if task.is_chief else None
        if lock is not None:
            lock.acquire()
            if lock.took_over:
                print(f"Took over the stale lock of pid {lock.took_over.get('pid')} on "
                      f"{lock.took_over.get('host')} (that run is gone).", flush=True)
        try:
            _run(task, train_evaluate_export)
        finally:
            if lock is not None:
                lock.release()

    if FLAGS.strategy == "multi_worker_mirrored":
        _as_one_of_several_workers(prepare_and_run)
    else:
        prepare_and_run()


def _fail(message, code=1):
    print(f"Error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def _as_one_of_several_workers(run):
    """`run()` as one worker of several: a dead peer ends the run with a
    message naming it (the strategy also makes SIGTERM/SIGINT end a blocked
    worker, see `kprefix.multi_worker`)."""
    from kprefix import multi_worker

    try:
        return run()
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
        code = (Preempted.exit_code if isinstance(error, Preempted)
                else error.code if isinstance(error, SystemExit) and isinstance(error.code, int)
                else 2 if isinstance(error, app.UsageError) else 1)
        multi_worker.exit_after(seconds=5, code=code)
        raise


def _run(task, train_evaluate_export):
    from kprefix import checkpoints, train, workdir

    flag_values = _launch_flags()
    results_path = os.path.join(FLAGS.workdir, "results.json")
    if task.is_chief:
        if workdir.check_run_config(FLAGS.workdir, _recorded_flags()):
            print(f"Continuing with more --epochs ({FLAGS.epochs}); the learning-rate "
                  "schedule now spans the new total.", flush=True)
    try:
        results, summary = train_evaluate_export()
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
