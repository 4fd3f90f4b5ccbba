"""The paper's comparison on E2E with the GPT-2 pretrained here, by training-set fraction.

Every run is `python -m kprefix.launch --task=table_to_text --dataset=e2e`
with `--backbone=<preset dir>` in its own workdir, through the sweep's run
plan and selection rule (`kprefix.sweep`): per variant, a learning rate x
weight decay grid trained on `--e2e_grid_fraction` of the training set with one
seed and scored (BLEU) on the first validation inputs (a one-point grid is not
run: there is nothing to select); the best point then
runs with every seed on each training fraction and is scored on the first test
inputs with the official-faithful E2E scorer (`kprefix.metrics.e2e`).

A fraction keeps the first `round(fraction * 4,862)` training inputs (MRs)
with all their references (`--max_train_examples`), the same subset for every
seed and variant. Every run trains for about the same number of optimizer
steps (`TextProtocol.train_steps`): small fractions run several epochs, large
ones one epoch capped at that many batches (`--max_steps_per_epoch`), so the
fractions differ in how much data they see, not in compute. Layout:

    <runs_dir>/e2e/<variant>/grid/lr<lr>_wd<wd>/results.json
    <runs_dir>/e2e/<variant>/selection.json
    <runs_dir>/e2e/<variant>/train<pct>/final/seed<seed>/results.json

Example:

>>> [v.name for v in TEXT_VARIANTS][:2]
['deep_share-deep', 'deep_share-shallow']
>>> schedule(pairs=420, batch_size=16, train_steps=100)
{'epochs': 4, 'max_steps_per_epoch': 0}
>>> schedule(pairs=42061, batch_size=16, train_steps=100)
{'epochs': 1, 'max_steps_per_epoch': 100}
"""

import dataclasses
import json
import math
import os

from kprefix import sweep
from kprefix.replicate.comparison import Variant

TEXT_VARIANTS = tuple(
    Variant(f"{variant}-{placement}", (("method", "prefix"), ("prefix_variant", variant),
                                       ("prefix_placement", placement)))
    for variant in ("deep_share", "simple_share", "no_share")
    for placement in ("deep", "shallow")
)
# Does pretraining transfer? Deep-share on the same architecture with random weights.
RANDOM_DEEP_SHARE = Variant("deep_share-deep-random_backbone",
                            TEXT_VARIANTS[0].launch_flags, backbone="random")
SPLITS = sweep.SplitPlan("train", "validation", "train", "test")
METRIC = "BLEU"


@dataclasses.dataclass(frozen=True)
class TextProtocol:
    """Grid, seeds, fractions, budgets and shared launch flags of the E2E comparison."""

    learning_rates: tuple
    weight_decays: tuple
    seeds: tuple
    grid_seed: int
    fractions: tuple  # of the training inputs, e.g. (0.01, 0.05, 0.2, 1.0)
    grid_fraction: float
    train_steps: int  # optimizer steps of every run (about)
    batch_size: int
    validation_examples: int  # validation inputs the grid is scored on (0: all)
    test_examples: int  # test inputs the seed runs are scored on (0: all)
    launch_args: tuple  # --name=value flags every launch gets


def schedule(pairs, batch_size, train_steps):
    """`--epochs` and `--max_steps_per_epoch` that train about `train_steps` steps on
    `pairs` training pairs: whole epochs when an epoch is shorter, else one capped epoch."""
    per_epoch = pairs // batch_size
    if per_epoch < 1:
        raise ValueError(f"{pairs} training pairs make no batch of {batch_size}; use a larger "
                         "fraction or a smaller batch.")
    if per_epoch >= train_steps:
        return {"epochs": 1, "max_steps_per_epoch": train_steps}
    return {"epochs": max(1, round(train_steps / per_epoch)), "max_steps_per_epoch": 0}


def fraction_label(fraction):
    """'train1pct', 'train100pct', 'train0.5pct'."""
    percent = fraction * 100
    text = f"{percent:g}"
    return f"train{text}pct"


def training_subset(fraction, references_per_input):
    """`(inputs, pairs)` of the first `fraction` of the training inputs."""
    inputs = max(1, round(fraction * len(references_per_input)))
    return inputs, sum(references_per_input[:inputs])


def variant_launch_args(protocol, variant, presets):
    return [*protocol.launch_args, f"--backbone={presets[variant.backbone]}",
            f"--batch_size={protocol.batch_size}",
            *(f"--{k}={v}" for k, v in variant.launch_flags)]


def _with(run, **extra):
    return dataclasses.replace(run, flags=(*run.flags, *((k, str(v)) for k, v in extra.items())))


def _sized(run, fraction, references_per_input, protocol, eval_examples):
    inputs, pairs = training_subset(fraction, references_per_input)
    return _with(run, max_train_examples=inputs, max_eval_examples=eval_examples,
                 **schedule(pairs, protocol.batch_size, protocol.train_steps))


def read_score(run):
    """The run's E2E BLEU (0-1); NaN for a diverged run."""
    with open(run.results_path) as f:
        payload = json.load(f)
    value = payload.get("scores", {}).get(METRIC)
    return math.nan if value is None else float(value)


def run_text_variant(runs_dir, variant, protocol, presets, references_per_input, pool):
    """Grid, selection and the seed runs on every fraction of one variant, through
    `pool` (a `LaunchPool`); returns `{"bleu": {fraction label: [per-seed BLEU]},
    "learning_rate", "weight_decay", "validation_bleu", "train_seconds"}`."""
    exp_dir = os.path.join(runs_dir, "e2e", variant.name)
    args = variant_launch_args(protocol, variant, presets)
    grid = [_sized(run, protocol.grid_fraction, references_per_input, protocol,
                   protocol.validation_examples)
            for run in sweep.grid_runs(exp_dir, SPLITS, protocol.learning_rates,
                                       protocol.weight_decays, protocol.grid_seed,
                                       weight_decay_mode="decoupled")]
    if len(grid) == 1:
        # One grid point: nothing to select, so no validation run.
        results = [sweep.GridResult(protocol.learning_rates[0], protocol.weight_decays[0],
                                    math.nan)]
    else:
        pool.run_all(grid, args)
        results = [sweep.GridResult(float(dict(run.flags)["learning_rate"]),
                                    float(dict(run.flags)["weight_decay"]), read_score(run))
                   for run in grid]
    best = sweep.select_best(results)
    sweep.write_selection(exp_dir, best, results)
    outcome = {"bleu": {}, "seeds": list(protocol.seeds), "learning_rate": best.learning_rate,
               "weight_decay": best.weight_decay,
               "validation_bleu": None if math.isnan(best.accuracy) else best.accuracy,
               "train_seconds": {}}
    finals = {fraction_label(fraction): [
        _sized(run, fraction, references_per_input, protocol, protocol.test_examples)
        for run in sweep.final_runs(os.path.join(exp_dir, fraction_label(fraction)), SPLITS,
                                    best, protocol.seeds, weight_decay_mode="decoupled")]
        for fraction in protocol.fractions}
    pool.run_all([run for runs in finals.values() for run in runs], args)
    for label, runs in finals.items():
        outcome["bleu"][label] = [read_score(run) for run in runs]
        outcome["train_seconds"][label] = [_train_seconds(run) for run in runs]
    return outcome


def run_training_length(runs_dir, variant, protocol, presets, references_per_input, pool,
                        selection, steps):
    """Validation BLEU of `variant` (with its `selection`, the grid's seed) trained on
    the whole training set for each number of optimizer `steps`: E2E's learning
    curve. Returns `{"variant", "fraction", "seed", "steps", "validation_examples",
    "validation_bleu": {steps: BLEU}}`. Layout: `<runs_dir>/e2e/<variant>/steps<N>/`."""
    exp_dir = os.path.join(runs_dir, "e2e", variant.name)
    best = sweep.GridResult(selection["learning_rate"], selection["weight_decay"], math.nan)
    on_validation = sweep.SplitPlan("train", "validation", "train", "validation")
    runs = {}
    for count in steps:
        run, = sweep.final_runs(os.path.join(exp_dir, f"steps{count}"), on_validation, best,
                                [protocol.grid_seed], weight_decay_mode="decoupled")
        runs[count] = _sized(run, 1.0, references_per_input,
                             dataclasses.replace(protocol, train_steps=count),
                             protocol.validation_examples)
    pool.run_all(list(runs.values()), variant_launch_args(protocol, variant, presets))
    return {"variant": variant.name, "fraction": fraction_label(1.0),
            "seed": protocol.grid_seed, "steps": list(steps),
            "validation_examples": protocol.validation_examples or 547,
            "validation_bleu": {str(count): read_score(run) for count, run in runs.items()}}


def _train_seconds(run):
    with open(run.results_path) as f:
        return json.load(f).get("train_seconds")
