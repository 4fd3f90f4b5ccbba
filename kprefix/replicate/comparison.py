"""The paper's comparison on the mini-VTAB, as launch runs: grid on validation, then seeds.

Every run is `python -m kprefix.launch` with `--backbone=<preset dir>` in its
own workdir, through the sweep's run plan and selection rule
(`kprefix.sweep`): grid `train800 -> val200` with one seed, selection on
validation accuracy, then the seeds `train800val200 -> test`. A run whose
`results.json` exists is skipped, so a restarted replication goes on where
it stopped. Layout:

    <runs_dir>/<task>/<variant>/grid/lr<lr>_wd<wd>/results.json
    <runs_dir>/<task>/<variant>/selection.json
    <runs_dir>/<task>/<variant>/final/seed<seed>/results.json

Example:

>>> [v.name for v in VARIANTS][:3]
['deep_share-deep', 'deep_share-shallow', 'simple_share-deep']
>>> VARIANTS[-1].launch_flags
(('method', 'linear'),)
"""

import dataclasses
import json
import os

from kprefix import sweep


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of the comparison: its name, launch flags and which preset it uses."""

    name: str
    launch_flags: tuple
    backbone: str = "pretrained"


VARIANTS = tuple(
    Variant(f"{variant}-{placement}", (("method", "prefix"), ("prefix_variant", variant),
                                       ("prefix_placement", placement)))
    for variant in ("deep_share", "simple_share", "no_share")
    for placement in ("deep", "shallow")
) + (Variant("linear", (("method", "linear"),)),)
# The transfer check: the linear probe on the same architecture with random weights.
RANDOM_LINEAR = Variant("linear-random_backbone", (("method", "linear"),), backbone="random")


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Shared launch settings and the grid of the comparison."""

    learning_rates: tuple
    weight_decays: tuple
    seeds: tuple
    grid_seed: int
    launch_args: tuple  # --name=value flags every launch gets


def variant_launch_args(protocol, variant, task, presets):
    return [*protocol.launch_args, f"--backbone={presets[variant.backbone]}",
            f"--dataset=minivtab/{task}", *(f"--{k}={v}" for k, v in variant.launch_flags)]


def run_variant(runs_dir, task, variant, protocol, presets, pool):
    """Grid, selection and seed runs of one (task, variant) through `pool` (a
    `LaunchPool`); returns the per-seed test accuracies and the selection."""
    exp_dir = os.path.join(runs_dir, task, variant.name)
    plan = sweep.SPLIT_PLANS["minivtab"]
    args = variant_launch_args(protocol, variant, task, presets)
    grid = sweep.grid_runs(exp_dir, plan, protocol.learning_rates, protocol.weight_decays,
                           protocol.grid_seed)
    pool.run_all(grid, args)
    results = sweep.read_grid_results(grid)
    best = sweep.select_best(results)
    sweep.write_selection(exp_dir, best, results)
    finals = sweep.final_runs(exp_dir, plan, best, protocol.seeds)
    pool.run_all(finals, args)
    accuracies = [final_accuracy(run) for run in finals]
    return {"test_accuracy": accuracies, "seeds": list(protocol.seeds),
            "learning_rate": best.learning_rate, "weight_decay": best.weight_decay,
            "validation_accuracy": best.accuracy,
            "train_seconds": [_read(run).get("train_seconds") for run in finals]}


def _read(run):
    with open(run.results_path) as f:
        return json.load(f)


def final_accuracy(run):
    """The run's `eval_accuracy`; NaN for a diverged run."""
    accuracy = _read(run).get("eval_accuracy")
    return float("nan") if accuracy is None else float(accuracy)
