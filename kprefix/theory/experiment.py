"""The simulation: fit every setting, truth and specification over sample sizes and repetitions.

For each ``(setting, truth kind, specification, n, repetition)`` the samples
are the first ``n`` of one data set per repetition (nested samples, shared by
all settings, so settings are compared on the same inputs and noise), the
least-squares estimate is computed with ``L = L*`` (``exact``) or
``L = L* + 1`` (``over``) prompt experts, and its Voronoi loss against the
truth is recorded.

Example:
    >>> config = ExperimentConfig(settings=("shared_linear",), truths=("random",),
    ...                           specifications=("exact",), sample_sizes=(200, 400),
    ...                           repetitions=2, workers=1)
    >>> records = run_experiment(config, log=lambda line: None)
    >>> len(records), sorted(records[0]["losses"])
    (4, ['D2'])
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from kprefix.theory import estimate, model, settings, truths, voronoi

SPECIFICATIONS = ("exact", "over")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    settings: Tuple[str, ...] = settings.SETTINGS
    truths: Tuple[str, ...] = truths.TRUTH_KINDS
    specifications: Tuple[str, ...] = SPECIFICATIONS
    sample_sizes: Tuple[int, ...] = (1000, 100000)
    repetitions: int = 20
    noise_std: float = 0.1
    input_dim: int = 2
    prompt_dim: int = 2
    num_pretrained_experts: int = 2
    num_true_prompts: int = 2
    proof_half_gap: float = 0.5
    near_starts: int = 2
    random_starts: int = 2
    start_perturbation: float = 0.3
    screen_size: int = 1000
    screen_evaluations: int = 60
    max_evaluations: int = 100
    polish_candidates: int = 1
    direct_near_start: bool = True
    nonshared_orders: Tuple[float, ...] = (1.0, 2.0)
    workers: int = 2
    seed: int = 0

    def world(self) -> settings.World:
        return settings.make_world(
            settings.WorldConfig(self.input_dim, self.prompt_dim, self.num_pretrained_experts, self.seed)
        )

    def truth(self, setting_model: model.PrefixMoEModel, kind: str) -> truths.MixingMeasure:
        return truths.make_truth(kind, setting_model, self.num_true_prompts, self.seed, self.proof_half_gap)


def log_spaced_sample_sizes(smallest: int, largest: int, count: int) -> Tuple[int, ...]:
    """``count`` integers from ``smallest`` to ``largest``, evenly spaced in log scale.

    >>> log_spaced_sample_sizes(1000, 100000, 3)
    (1000, 10000, 100000)
    """
    return tuple(int(round(size)) for size in np.geomspace(smallest, largest, count))


def repetition_data(config: ExperimentConfig, setting_model: model.PrefixMoEModel,
                    truth: truths.MixingMeasure, repetition: int, size: int) -> model.Dataset:
    """The first ``size`` samples of the data of one repetition.

    All sample sizes of a repetition draw from the same stream, so smaller
    data sets are the first samples of larger ones.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7003, repetition]))
    largest = max(config.sample_sizes)
    inputs = model.sample_inputs(rng, largest, config.input_dim)[:size]
    noise = config.noise_std * rng.standard_normal(largest)[:size]
    responses = setting_model.regression(inputs, truth.biases, truth.params) + noise
    return setting_model.make_dataset(inputs, responses)


Task = Tuple[str, str, str, int, int]  # setting, truth kind, specification, sample size, repetition


def run_task(config: ExperimentConfig, task: Task) -> Dict:
    """Fit one data set and measure the estimate's Voronoi loss."""
    setting, kind, specification, size, repetition = task
    started = time.perf_counter()
    setting_model = settings.make_model(setting, config.world())
    truth = config.truth(setting_model, kind)
    data = repetition_data(config, setting_model, truth, repetition, size)
    num_fitted = truth.num_experts + (1 if specification == "over" else 0)
    start_rng = np.random.default_rng(np.random.SeedSequence([
        config.seed, 7004, settings.SETTINGS.index(setting), truths.TRUTH_KINDS.index(kind),
        SPECIFICATIONS.index(specification), size, repetition,
    ]))
    starts = estimate.initial_guesses(
        setting_model, truth, num_fitted, start_rng,
        config.near_starts, config.random_starts, config.start_perturbation,
    )
    fit = estimate.fit_least_squares(
        setting_model, data, starts,
        screen_size=config.screen_size,
        screen_evaluations=config.screen_evaluations,
        max_evaluations=config.max_evaluations,
        polish_candidates=config.polish_candidates,
        # The last near start: for over-specified fits it is the one with a
        # small extra expert, which converges faster than a split expert.
        direct_starts=(config.near_starts - 1,) if config.direct_near_start and config.near_starts else (),
    )
    truth_objective = estimate.objective(setting_model, data, setting_model.flatten(truth.biases, truth.params))
    losses = voronoi.losses_for_setting(
        setting_model.prompts, fit.biases, fit.params, truth.biases, truth.params, config.nonshared_orders
    )
    return {
        "setting": setting,
        "truth": kind,
        "specification": specification,
        "num_fitted": num_fitted,
        "sample_size": size,
        "repetition": repetition,
        "losses": losses,
        "objective": fit.objective,
        # How far below the truth's objective the fit got, in units of s^2/n;
        # a fit stuck in a poor local minimum shows up as a negative value.
        "objective_gain": (truth_objective - fit.objective) * size / config.noise_std**2,
        "gradient_norm": fit.gradient_norm,
        "evaluations": fit.evaluations,
        "start_index": fit.start_index,
        "fitted_biases": fit.biases.tolist(),
        "fitted_params": fit.params.tolist(),
        "seconds": time.perf_counter() - started,
    }


def _run_task_star(args):
    return run_task(*args)


def all_tasks(config: ExperimentConfig) -> List[Task]:
    return [
        (setting, kind, specification, size, repetition)
        for setting in config.settings
        for kind in config.truths
        for specification in config.specifications
        for size in sorted(config.sample_sizes)
        for repetition in range(config.repetitions)
    ]


def _group_line(records: Sequence[Dict], elapsed: float) -> str:
    first = records[0]
    means = ", ".join(
        f"{name}={np.mean([r['losses'][name] for r in records]):.3g}" for name in first["losses"]
    )
    worst_gradient = max(r["gradient_norm"] for r in records)
    return (
        f"[{elapsed:7.1f}s] {first['setting']}/{first['truth']}/{first['specification']} "
        f"n={first['sample_size']}: {len(records)} fits, mean {means}, max |grad|={worst_gradient:.1e}"
    )


def run_experiment(config: ExperimentConfig, log: Callable[[str], None] = print) -> List[Dict]:
    """All fits of ``config``; logs one line per finished (setting, truth, specification, n)."""
    tasks = all_tasks(config)
    started = time.perf_counter()
    pending: Dict[Tuple, List[Dict]] = {}
    records = []

    def collect(record):
        records.append(record)
        key = (record["setting"], record["truth"], record["specification"], record["sample_size"])
        group = pending.setdefault(key, [])
        group.append(record)
        if len(group) == config.repetitions:
            log(_group_line(group, time.perf_counter() - started))
            del pending[key]

    arguments = [(config, task) for task in tasks]
    if config.workers <= 1:
        for argument in arguments:
            collect(_run_task_star(argument))
    else:
        with multiprocessing.get_context("fork").Pool(config.workers) as pool:
            for record in pool.imap_unordered(_run_task_star, arguments, chunksize=1):
                collect(record)
    order = {task: index for index, task in enumerate(tasks)}
    records.sort(key=lambda r: order[(r["setting"], r["truth"], r["specification"], r["sample_size"], r["repetition"])])
    return records
