"""Hyperparameter sweep: (prefix length x) learning-rate x weight-decay grid, selection, seeds.

The paper's vision protocol (after VPT), for one task and one variant:

1. *grid*: train every (learning rate, weight decay) pair on the tuning
   split and evaluate on the validation split (VTAB-1k: train800 -> val200;
   FGVC: train -> val), with one seed (`--grid_seed`); with
   `--prefix_lengths=1,5,10,50,100,200` every length too, as VPT selects its
   prompt length on validation data;
2. *selection*: the point with the highest validation accuracy wins; ties go
   to the smaller learning rate, then to the larger weight decay (the more
   conservative setting), then to the shorter prefix; a diverged run (NaN)
   counts as the worst;
3. *final*: retrain the winner with every seed of `--seeds` on the final
   split and test (VTAB-1k: train800val200 -> test; FGVC: train -> test, as
   VPT reports FGVC, the val hold-out staying out of training).

The grid's weight decays are PyTorch's coupled ones, so every run gets
`--weight_decay_mode=coupled` unless the launch flags set another mode.

Every run is `python -m kprefix.launch` with the sweep's flagfile(s) plus
the run's own flags, in its own workdir; a run whose `results.json` exists
is skipped, so an interrupted sweep restarts where it stopped. Layout:

    <sweep_dir>/<family>-<task>/<variant>-<placement>/
        grid/[len<P>_]lr<lr>_wd<wd>/results.json
        selection.json
        final/seed<seed>/results.json

Locally the runs go one after another:

    python -m kprefix.sweep --flagfile=configs/vtab/deep_cifar100.cfg \\
        --prefix_variant=no_share --sweep_dir=runs/paper

On a cluster, `--print_commands` prints one command per unfinished run;
once the grid is done, `--phase=final --print_commands` selects and prints
the seed runs. Every argument that is not a sweep flag (below) goes to
every launch unchanged; write launch flags as `--name=value`.

Example of the selection rule:

>>> from kprefix.sweep import GridResult, select_best
>>> select_best([GridResult(10.0, 1e-4, 0.71), GridResult(5.0, 0.0, 0.71),
...              GridResult(5.0, 1e-3, 0.71), GridResult(1.0, 0.0, 0.65)])
GridResult(learning_rate=5.0, weight_decay=0.001, accuracy=0.71, prefix_length=None)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys

from absl import app, flags

from kprefix import cli
from kprefix.cli.flagfiles import FlagfileError, expand_flagfiles
from kprefix.methods import run_family

DEFAULT_LEARNING_RATES = ("50", "25", "10", "5", "2.5", "1", "0.5", "0.25", "0.1", "0.05")
# VPT's grid for the methods that change backbone weights (its fine-tuning,
# Partial and Adapter baselines); prompts, prefixes and the linear probe take
# the default grid above.
FINETUNING_LEARNING_RATES = ("0.005", "0.001", "0.0005", "0.0001")
FINETUNING_METHODS = ("finetune", "partial", "lora", "adapter")
DEFAULT_WEIGHT_DECAYS = ("0.01", "0.001", "0.0001", "0")
DEFAULT_SEEDS = ("42", "44", "82", "100", "800")
# Accuracies closer than this are a tie (float32 metrics of equal counts).
TIE_TOLERANCE = 1e-6

FLAGS = flags.FLAGS


def define_flags():
    """The sweep's own flags; defined only when it runs, so importing stays free of them."""
    flags.DEFINE_string("sweep_dir", "runs/sweeps",
                        "Root of the sweep's runs; each task and variant gets its own folder.")
    flags.DEFINE_list("learning_rates", list(DEFAULT_LEARNING_RATES),
                      "Grid of base learning rates (SGD: scaled by batch/256 in the launch). "
                      "Default for --method=finetune, partial, lora and adapter: "
                      f"{','.join(FINETUNING_LEARNING_RATES)}.")
    flags.DEFINE_list("weight_decays", list(DEFAULT_WEIGHT_DECAYS), "Grid of weight decays.")
    flags.DEFINE_list("prefix_lengths", [],
                      "Grid of prefix lengths, e.g. 1,5,10,50,100,200 (empty: the flagfile's "
                      "--prefix_length only).")
    flags.DEFINE_integer("grid_seed", 42, "Seed of the grid runs.")
    flags.DEFINE_list("seeds", list(DEFAULT_SEEDS), "Seeds of the final runs.")
    flags.DEFINE_enum("phase", "all", ["all", "grid", "final"],
                      "'grid': grid runs only; 'final': select on the finished grid, then the "
                      "seed runs; 'all': both.")
    flags.DEFINE_bool("print_commands", False,
                      "Print one launch command per unfinished run instead of running it.")
    flags.DEFINE_string("launcher", "python -m kprefix.launch",
                        "Command that runs one training run (e.g. 'srun python -m kprefix.launch'); "
                        "a leading 'python' runs as this interpreter locally.")


class SweepError(Exception):
    """A sweep cannot go on; the message says what to do."""


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """The splits of the grid runs and of the final runs of a dataset family."""

    grid_train: str
    grid_eval: str
    final_train: str
    final_eval: str


SPLIT_PLANS = {
    "vtab": SplitPlan("train800", "val200", "train800val200", "test"),
    "fgvc": SplitPlan("train", "val", "train", "test"),
    "minivtab": SplitPlan("train800", "val200", "train800val200", "test"),
}


@dataclasses.dataclass(frozen=True)
class GridResult:
    """Validation accuracy of one grid point (`prefix_length` None: the flagfile's)."""

    learning_rate: float
    weight_decay: float
    accuracy: float
    prefix_length: int | None = None


@dataclasses.dataclass(frozen=True)
class Run:
    """One launch: its workdir and the flags that set it apart."""

    workdir: str
    flags: tuple[tuple[str, str], ...]

    @property
    def results_path(self) -> str:
        return os.path.join(self.workdir, "results.json")

    def is_finished(self) -> bool:
        return os.path.exists(self.results_path)

    def command(self, launcher: str, launch_args) -> list[str]:
        """Launcher, the sweep's launch arguments, then this run's flags (which win)."""
        own = [f"--{name}={value}" for name, value in self.flags]
        return [*shlex.split(launcher), *launch_args, *own, f"--workdir={self.workdir}"]


def _number(value: float) -> str:
    """Short, exact text of a grid value: 50.0 -> '50', 0.0001 -> '0.0001'."""
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def parse_numbers(values, flag_name: str) -> list[float]:
    """Floats of a list flag; the error names the flag."""
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        raise app.UsageError(
            f"--{flag_name}={','.join(values)}: use comma-separated numbers, e.g. 10,1,0.1."
        ) from None
    if not numbers:
        raise app.UsageError(f"--{flag_name} is empty: give at least one value.")
    return numbers


def launch_flag_values(args) -> flags.FlagValues:
    """`kprefix.launch`'s flags parsed from `args` into their own `FlagValues`
    (the global flags are left alone); unset flags keep their defaults.

    Flagfiles and `--config=` expand as for a launch (`kprefix.cli.flagfiles`:
    nested includes relative to the including file); the last setting wins.

    >>> launch_flag_values(["--config=nlg/e2e"]).text_loss
    'sequence_sum'
    """
    from kprefix import launch  # defines the launch flags (and imports no TensorFlow)

    values = flags.FlagValues()
    for flag in FLAGS.get_flags_for_module(launch):
        values[flag.name] = copy.deepcopy(flag)
    try:
        argv = expand_flagfiles(["sweep", *args], keep_config=True)
        rest = values(argv, known_only=False)
    except (flags.Error, FlagfileError) as error:
        raise SweepError(f"Bad launch flags: {error}") from None
    if len(rest) > 1:
        raise SweepError(f"Unexpected argument {rest[1]!r}: write launch flags as --name=value.")
    return values


def read_flag_args(args) -> dict:
    """Launch flag values that `args` set (see `launch_flag_values`), with the
    flags' types.

    >>> read_flag_args(["--dataset=vtab/dtd", "--prefix_length=5", "--noexport"])
    {'dataset': 'vtab/dtd', 'export': False, 'prefix_length': 5}
    """
    values = launch_flag_values(args)
    return {name: values[name].value for name in sorted(values) if values[name].present}


def experiment_dir(sweep_dir: str, launch_values) -> str:
    """`<sweep_dir>/<family>-<task>/<run family>` of the launch flags: e.g.
    `deep_share-deep`, `vpt-shallow`, `partial-1`, `finetune`."""
    dataset = launch_values.get("dataset", "")
    family = dataset.split("/")[0]
    if family not in SPLIT_PLANS or "/" not in dataset:
        raise SweepError(
            f"--dataset={dataset!r}: a sweep needs 'vtab/<task>', 'fgvc/<dataset>' or "
            "'minivtab/<task>'; "
            "pass a flagfile such as configs/vtab/deep_cifar100.cfg."
        )
    family = "-".join(part.replace(",", "_") for part in run_family(launch_values) if part)
    return os.path.join(sweep_dir, dataset.replace("/", "-"), family)


def _length_flags(length):
    return () if length is None else (("prefix_length", str(length)),)


def grid_runs(exp_dir, plan: SplitPlan, learning_rates, weight_decays, seed,
              prefix_lengths=(None,), weight_decay_mode="coupled") -> list[Run]:
    """One run per (prefix length, learning rate, weight decay), tuning -> validation split.

    A length of None keeps the launch flags' `--prefix_length` (and the
    workdir has no `len<P>_` part).
    """
    return [
        Run(
            os.path.join(exp_dir, "grid", ("" if length is None else f"len{length}_")
                         + f"lr{_number(lr)}_wd{_number(wd)}"),
            (*_length_flags(length),
             ("learning_rate", _number(lr)), ("weight_decay", _number(wd)),
             ("weight_decay_mode", weight_decay_mode), ("seed", str(seed)),
             ("train_split", plan.grid_train), ("eval_split", plan.grid_eval),
             ("export", "false")),
        )
        for length in prefix_lengths
        for lr in learning_rates
        for wd in weight_decays
    ]


def final_runs(exp_dir, plan: SplitPlan, best: GridResult, seeds,
               weight_decay_mode="coupled") -> list[Run]:
    """One run per seed with the selected hyperparameters, final split -> test."""
    return [
        Run(
            os.path.join(exp_dir, "final", f"seed{seed}"),
            (*_length_flags(best.prefix_length),
             ("learning_rate", _number(best.learning_rate)),
             ("weight_decay", _number(best.weight_decay)),
             ("weight_decay_mode", weight_decay_mode), ("seed", str(seed)),
             ("train_split", plan.final_train), ("eval_split", plan.final_eval)),
        )
        for seed in seeds
    ]


def select_best(results) -> GridResult:
    """Highest accuracy; ties: smaller learning rate, larger weight decay, shorter prefix."""
    if not results:
        raise SweepError("No grid results to select from.")

    def accuracy(result):
        return -math.inf if math.isnan(result.accuracy) else result.accuracy

    top = max(accuracy(r) for r in results)
    tied = [r for r in results if accuracy(r) >= top - TIE_TOLERANCE]
    return min(tied, key=lambda r: (r.learning_rate, -r.weight_decay,
                                     0 if r.prefix_length is None else r.prefix_length))


def read_grid_results(runs) -> list[GridResult]:
    """The grid's validation results; names every unfinished run if some are missing."""
    missing = [run.workdir for run in runs if not run.is_finished()]
    if missing:
        raise SweepError(
            f"{len(missing)} of {len(runs)} grid runs have no results.json yet "
            f"(first: {missing[0]}); finish them with --phase=grid, then select."
        )
    results = []
    for run in runs:
        with open(run.results_path) as f:
            payload = json.load(f)
        own = dict(run.flags)
        # A diverged run (`"status": "diverged"`) has no accuracy: it ranks last.
        accuracy = payload.get("eval_accuracy")
        length = own.get("prefix_length")
        results.append(GridResult(float(own["learning_rate"]), float(own["weight_decay"]),
                                  math.nan if accuracy is None else float(accuracy),
                                  None if length is None else int(length)))
    return results


def write_selection(exp_dir, best: GridResult, results, default_length=None) -> str:
    """Writes `selection.json` (the winner, the rule and the whole grid).

    `prefix_length` is the selected length, or `default_length` (the launch
    flags' length) when lengths were not swept.
    """
    path = os.path.join(exp_dir, "selection.json")
    os.makedirs(exp_dir, exist_ok=True)
    payload = {
        "learning_rate": best.learning_rate,
        "weight_decay": best.weight_decay,
        "prefix_length": (best.prefix_length if best.prefix_length is not None
                          else None if default_length is None else int(default_length)),
        "prefix_length_swept": best.prefix_length is not None,
        "validation_accuracy": best.accuracy,
        "rule": "highest validation accuracy; ties: smaller learning rate, then larger "
                "weight decay, then shorter prefix",
        "grid": [dataclasses.asdict(r) for r in results],
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    return path


def run_locally(run: Run, command, env=None) -> None:
    """Runs one launch (in `env`, default this process's environment), its output
    in `<workdir>/launch.log`; raises on failure."""
    if command[0] == "python":
        command = [sys.executable, *command[1:]]
    os.makedirs(run.workdir, exist_ok=True)
    log_path = os.path.join(run.workdir, "launch.log")
    print(f"[sweep] {shlex.join(command)}", flush=True)
    with open(log_path, "w") as log:
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    check=False).returncode
    if returncode != 0 or not run.is_finished():
        with open(log_path) as log:
            tail = log.read()[-3000:]
        raise SweepError(f"Run failed (exit {returncode}); log {log_path}:\n{tail}")


def _execute(runs, launch_args, print_only) -> None:
    for run in runs:
        if run.is_finished():
            continue
        command = run.command(FLAGS.launcher, launch_args)
        if print_only:
            print(shlex.join(command))
        else:
            run_locally(run, command)


def sweep(launch_args, sweep_args=()) -> None:
    """Runs (or prints) the phases that `--phase` asks for; see the module doc."""
    launch_values = read_flag_args(launch_args)
    exp_dir = experiment_dir(FLAGS.sweep_dir, launch_values)
    plan = SPLIT_PLANS[launch_values["dataset"].split("/")[0]]
    grid = FLAGS.learning_rates
    if not FLAGS["learning_rates"].present and launch_values.get("method") in FINETUNING_METHODS:
        grid = list(FINETUNING_LEARNING_RATES)
    learning_rates = parse_numbers(grid, "learning_rates")
    weight_decays = parse_numbers(FLAGS.weight_decays, "weight_decays")
    seeds = [int(s) for s in parse_numbers(FLAGS.seeds, "seeds")]
    prefix_lengths = [None]
    if FLAGS.prefix_lengths:
        prefix_lengths = [int(p) for p in parse_numbers(FLAGS.prefix_lengths, "prefix_lengths")]
        if min(prefix_lengths) < 1 or any(float(p) != int(float(p)) for p in FLAGS.prefix_lengths):
            raise SweepError(f"--prefix_lengths={','.join(FLAGS.prefix_lengths)}: use positive "
                             "integers, e.g. 1,5,10,50,100,200.")
    mode = launch_values.get("weight_decay_mode", "coupled")
    grid = grid_runs(exp_dir, plan, learning_rates, weight_decays, FLAGS.grid_seed,
                     prefix_lengths, mode)

    if FLAGS.phase in ("all", "grid"):
        _execute(grid, launch_args, FLAGS.print_commands)
    if FLAGS.phase == "grid":
        return
    if FLAGS.print_commands and FLAGS.phase == "all" and not all(r.is_finished() for r in grid):
        again = [a for a in sweep_args if not a.startswith(("--phase", "--print_commands"))]
        print("# When the grid runs above have finished, select and print the seed runs with:")
        print("# " + shlex.join(["python", "-m", "kprefix.sweep", *again, *launch_args,
                                 "--phase=final", "--print_commands"]))
        return
    results = read_grid_results(grid)
    best = select_best(results)
    path = write_selection(exp_dir, best, results, launch_values.get("prefix_length"))
    chosen_length = "" if best.prefix_length is None else f"prefix_length={best.prefix_length} "
    print(f"# Selected {chosen_length}learning_rate={_number(best.learning_rate)} "
          f"weight_decay={_number(best.weight_decay)} "
          f"({plan.grid_eval} accuracy {best.accuracy:.4f}); written to {path}", flush=True)
    _execute(final_runs(exp_dir, plan, best, seeds, mode), launch_args, FLAGS.print_commands)


_SWEEP_FLAG_NAMES = {"sweep_dir", "learning_rates", "weight_decays", "prefix_lengths",
                     "grid_seed", "seeds",
                     "phase", "print_commands", "launcher", "help", "helpfull", "helpshort"}


def split_arguments(argv):
    """(sweep flags, launch arguments) of a command line, in their order."""
    sweep_args, launch_args = [], []
    for arg in argv:
        name = arg.lstrip("-").partition("=")[0]
        is_sweep = name in _SWEEP_FLAG_NAMES or (
            name.startswith("no") and name[2:] in _SWEEP_FLAG_NAMES)
        (sweep_args if is_sweep else launch_args).append(arg)
    return sweep_args, launch_args


def _parse(argv):
    sweep_args, launch_args = split_arguments(argv[1:])
    FLAGS([argv[0], *sweep_args])
    return [argv[0], sweep_args, launch_args]


def main(argv):
    _, sweep_args, launch_args = argv
    try:
        sweep(launch_args, sweep_args)
    except SweepError as error:
        print(f"kprefix.sweep: {error}", file=sys.stderr)
        sys.exit(1)


def console_main():
    """The `kprefix-sweep` console script."""
    define_flags()
    # Launch flagfiles are passed on to every launch as given, not expanded here.
    cli.run(main, flags_parser=_parse, expand_flagfiles=False)


if __name__ == "__main__":
    console_main()
