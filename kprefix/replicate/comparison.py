"""The paper's comparison on the mini-VTAB, as launch runs: grid on validation, then seeds.

Every run is `python -m kprefix.launch` with `--backbone=<preset dir>` in its
own workdir, through the sweep's run plan and selection rule
(`kprefix.sweep`): grid `train800 -> val200` with one seed, selection on
validation accuracy, then the seeds `train800val200 -> test`. A selection on
an edge of the grid adds the next value beyond that edge and runs it, up to
`Protocol.grid_extensions` times (`kprefix.replicate.grid_extension`). A run whose
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
from kprefix.replicate import grid_extension


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
    grid_extensions: int = 0  # times a selection on a grid edge extends the grid


def variant_launch_args(protocol, variant, task, presets):
    return [*protocol.launch_args, f"--backbone={presets[variant.backbone]}",
            f"--dataset=minivtab/{task}", *(f"--{k}={v}" for k, v in variant.launch_flags)]


def run_variant(runs_dir, task, variant, protocol, presets, pool):
    """Grid (extended past the edges its selection lands on), selection and seed runs
    of one (task, variant) through `pool` (a `LaunchPool`); returns the per-seed test
    accuracies, the selection and the grid that ran."""
    exp_dir = os.path.join(runs_dir, task, variant.name)
    plan = sweep.SPLIT_PLANS["minivtab"]
    args = variant_launch_args(protocol, variant, task, presets)
    best, grid = select_with_extensions(
        exp_dir, plan, protocol, lambda runs: pool.run_all(runs, args))
    finals = sweep.final_runs(exp_dir, plan, best, protocol.seeds)
    pool.run_all(finals, args)
    accuracies = [final_accuracy(run) for run in finals]
    return {"test_accuracy": accuracies, "seeds": list(protocol.seeds),
            "learning_rate": best.learning_rate, "weight_decay": best.weight_decay,
            "validation_accuracy": best.accuracy, **grid,
            "train_seconds": [_read(run).get("train_seconds") for run in finals]}


def select_with_extensions(exp_dir, plan, protocol, run_all):
    """Runs the grid (`run_all(runs)` runs a list), selects on validation and, while
    the selection lies on a grid edge and extensions are left, runs the grid extended
    past it; writes `selection.json` and returns `(best, grid)`, `grid` holding the
    values that ran, the extensions made, every point's validation accuracy,
    the edges the selection still lies on and `at_grid_edge`."""
    learning_rates, weight_decays = list(protocol.learning_rates), list(protocol.weight_decays)
    extensions = 0
    while True:
        runs = sweep.grid_runs(exp_dir, plan, learning_rates, weight_decays, protocol.grid_seed)
        run_all(runs)
        results = sweep.read_grid_results(runs)
        best = sweep.select_best(results)
        on_edges = grid_extension.edges(learning_rates, weight_decays, best.learning_rate,
                                        best.weight_decay)
        if not on_edges or extensions >= protocol.grid_extensions:
            break
        learning_rates, weight_decays = grid_extension.extend_grid(
            learning_rates, weight_decays, best.learning_rate, best.weight_decay)
        extensions += 1
    sweep.write_selection(exp_dir, best, results)
    return best, {"grid": {"learning_rates": sorted(learning_rates),
                           "weight_decays": sorted(weight_decays)},
                  "grid_extensions": extensions,
                  "grid_results": [{"learning_rate": r.learning_rate,
                                    "weight_decay": r.weight_decay,
                                    "validation_accuracy": r.accuracy} for r in results],
                  "edges": on_edges, "at_grid_edge": bool(on_edges)}


def _read(run):
    with open(run.results_path) as f:
        return json.load(f)


def final_accuracy(run):
    """The run's `eval_accuracy`; NaN for a diverged run."""
    accuracy = _read(run).get("eval_accuracy")
    return float("nan") if accuracy is None else float(accuracy)
