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

The flags are generated from `kprefix.RunConfig`, and the run is
`kprefix.run(config)` (`kprefix.runs.launcher`), so Python gets the same run
without flags. Every flag, the data, the backbone and the workdir are
checked before the first write; then the chief holds `run.lock` while it
runs and records the run's settings in `run_config.json`; a restart must use
the same settings (a larger `--epochs` is allowed). An error is one line on
stderr (`--verbosity` adds the traceback). Exit status: 0 done, 2 usage
error (nothing written), 1 failed or diverged (then `results.json` says
`"status": "diverged"`), 42 stopped by SIGTERM after saving a checkpoint
(rerun to resume).
"""

import sys

from absl import app, flags

from kprefix import cli
from kprefix.cli import option_flags, tensorflow_logs
from kprefix.runs.config import RunConfig

FLAGS = flags.FLAGS

flags.DEFINE_string("config", None,
                    "Name of a config installed with kprefix, read like a flagfile: "
                    "'quickstart', 'vtab/deep_cifar100', 'nlg/e2e', ... (configs/NAME.cfg).")
option_flags.define_flags(RunConfig)


def run_config_from_flags(flag_values=FLAGS):
    """The `RunConfig` the parsed flags describe; errors name the flag.

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
        derived = {"prefix.init_token_ids": tokens, "prefix.length": len(tokens)}
    try:
        return option_flags.record_from_flags(RunConfig, flag_values, **derived)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def main(argv):
    """Checks everything, then (first write) locks the workdir, trains, evaluates, exports."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    config = run_config_from_flags()
    tensorflow_logs.import_tensorflow_quietly(FLAGS.verbosity if FLAGS["verbosity"].present
                                              else None)
    from kprefix.runs import checkpoints, launcher, train

    try:
        launcher.run(config, config_name=FLAGS.config)
    except train.Diverged as error:
        _fail(f"training diverged: {error}")
    except train.Preempted as error:
        _fail(str(error), code=train.Preempted.exit_code)
    except checkpoints.CheckpointError as error:
        _fail(str(error))


def _fail(message, code=1):
    print(f"Error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def console_main():
    """The `kprefix-launch` console script."""
    cli.run(main)


if __name__ == "__main__":
    console_main()
