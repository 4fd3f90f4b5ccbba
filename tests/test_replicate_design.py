"""The replication's design: grids extended past their edges, the sample-efficiency
plan and the statistics of its gap (checked against NumPy and SciPy)."""

import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from kprefix import sweep
from kprefix.replicate import comparison, grid_extension, sample_efficiency
from kprefix.replicate.statistics import log_size_trend


def test_log_size_trend_matches_numpy_least_squares_and_scipy_interval():
    rng = np.random.RandomState(0)
    sizes = np.repeat([50, 100, 200, 400, 800, 1000], [10, 10, 10, 5, 5, 5])
    gaps = 0.09 - 0.012 * np.log2(sizes) + rng.normal(0, 0.02, len(sizes))
    trend = log_size_trend(sizes.tolist(), gaps.tolist())
    slope, intercept = np.polyfit(np.log2(sizes), gaps, 1)
    reference = stats.linregress(np.log2(sizes), gaps)
    half = stats.t.ppf(0.975, len(sizes) - 2) * reference.stderr
    assert trend["slope_per_doubling"] == pytest.approx(slope)
    assert trend["intercept_at_one"] == pytest.approx(intercept)
    assert trend["standard_error"] == pytest.approx(reference.stderr)
    assert trend["ci95"] == pytest.approx([slope - half, slope + half])
    assert trend["n"] == 45 and trend["sizes"] == [50, 100, 200, 400, 800, 1000]
    with pytest.raises(ValueError, match="one size"):
        log_size_trend([100, 100, 100], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="finite"):
        log_size_trend([50, 100, 200], [0.1, math.nan, 0.3])


def test_gap_by_size_pairs_seeds_and_fits_the_trend_on_every_pair():
    deep = {"50": [0.60, 0.62, 0.58], "100": [0.70, 0.71, 0.69], "1000": [0.90, 0.91]}
    none = {"50": [0.50, 0.55, 0.50], "100": [0.66, 0.66, 0.66], "1000": [0.89, 0.90]}
    curves = {"location_x": {
        "deep_share-deep": {n: {"values": v} for n, v in deep.items()},
        "no_share-deep": {n: {"values": v} for n, v in none.items()}}}
    gap = sample_efficiency.gap_by_size(curves, "location_x", "deep")
    assert list(gap["by_size"]) == ["50", "100", "1000"]
    assert gap["by_size"]["50"]["mean"] == pytest.approx(np.mean(np.subtract(deep["50"],
                                                                              none["50"])))
    assert gap["by_size"]["50"]["paired"]
    sizes = [50] * 3 + [100] * 3 + [1000] * 2
    gaps = [a - b for n in ("50", "100", "1000") for a, b in zip(deep[n], none[n])]
    assert gap["trend"]["slope_per_doubling"] == pytest.approx(
        np.polyfit(np.log2(sizes), gaps, 1)[0])
    assert "widens as data shrinks" in gap["sentence"]
    assert sample_efficiency.gap_by_size(curves, "location_x", "shallow") is None


def test_matched_schedule_keeps_the_optimizer_steps_of_the_full_runs():
    for size in (50, 100, 200, 400, 800):
        schedule = sample_efficiency.matched_schedule(size, 1000, 32, 5, 1)
        steps = schedule["epochs"] * (size // 32)
        assert abs(steps - 5 * (1000 // 32)) <= size // 32 / 2 + 1
    with pytest.raises(ValueError, match="no batch"):
        sample_efficiency.matched_schedule(20, 1000, 32, 5, 1)
    with pytest.raises(ValueError, match="one per size"):
        sample_efficiency.seeds_by_size([50, 100], [1, 2, 3], [3])


def test_next_beyond_follows_the_axis_spacing_and_zero_is_no_edge():
    assert grid_extension.next_beyond([0.1, 1], "upper") == 10.0
    assert grid_extension.next_beyond([0.1, 1], "lower") == 0.01
    assert grid_extension.next_beyond([0.5, 1, 2], "upper") == 4.0
    assert grid_extension.edges([0.1, 1], [0, 0.001], 0.1, 0) == ["learning_rate lower"]
    assert grid_extension.edges([1], [0], 1, 0) == []  # one value: nothing was searched
    with pytest.raises(ValueError, match="natural lower end"):
        grid_extension.next_beyond([0, 0.001], "lower")


def _fake_grid(best_learning_rate):
    """`run_all` that writes each grid run's validation accuracy, peaked at
    `best_learning_rate` (weight decay 0 best), and counts the runs."""
    ran = []

    def run_all(runs):
        for run in runs:
            if run.is_finished():
                continue
            own = dict(run.flags)
            lr, wd = float(own["learning_rate"]), float(own["weight_decay"])
            accuracy = 0.9 - 0.1 * abs(math.log10(lr / best_learning_rate)) - wd
            os.makedirs(run.workdir, exist_ok=True)
            with open(run.results_path, "w") as f:
                json.dump({"eval_accuracy": accuracy}, f)
            ran.append((lr, wd))

    return run_all, ran


@pytest.mark.parametrize("extensions, at_edge, learning_rate",
                         [(0, True, 1.0), (1, True, 10.0), (3, False, 100.0), (5, False, 100.0)])
def test_a_selection_on_the_upper_edge_extends_the_grid_until_it_is_interior(
        tmp_path, extensions, at_edge, learning_rate):
    protocol = comparison.Protocol(learning_rates=(0.1, 1), weight_decays=(0, 0.001),
                                   seeds=(1,), grid_seed=1, launch_args=(),
                                   grid_extensions=extensions)
    run_all, ran = _fake_grid(best_learning_rate=100)
    best, grid = comparison.select_with_extensions(
        str(tmp_path), sweep.SPLIT_PLANS["minivtab"], protocol, run_all)
    made = min(extensions, 3)  # interior once 1000 has run
    assert best.learning_rate == learning_rate and best.weight_decay == 0
    assert grid["at_grid_edge"] is at_edge and grid["grid_extensions"] == made
    assert grid["edges"] == (["learning_rate upper"] if at_edge else [])
    assert grid["grid"]["learning_rates"] == [0.1, 1, 10.0, 100.0, 1000.0][:2 + made]
    assert len(ran) == len(set(ran)) == 2 * (2 + made)  # no point runs twice
    assert len(grid["grid_results"]) == len(ran)
    selection = json.loads((tmp_path / "selection.json").read_text())
    assert selection["learning_rate"] == learning_rate
