"""Slopes, bootstrap intervals and the written outputs."""

import numpy as np
import pytest

from kprefix.theory import experiment, report


def _records(loss_of, sizes=(1000, 4000, 16000), repetitions=6):
    return [
        {"setting": "shared_linear", "truth": "random", "specification": "over", "num_fitted": 3,
         "sample_size": n, "repetition": r, "losses": {"D2": loss_of(n, r)},
         "gradient_norm": 1e-9 * (r + 1), "objective_gain": 2.0}
        for n in sizes for r in range(repetitions)
    ]


def test_slope_of_an_exact_power_law():
    rows = report.summarize(_records(lambda n, r: (1 + r) * n ** -0.5), bootstrap_samples=100)
    assert rows[0]["slope"] == pytest.approx(-0.5)
    assert rows[0]["slope_ci"] == pytest.approx([-0.5, -0.5])
    assert rows[0]["loss_at_largest_n"] == pytest.approx(3.5 * 16000 ** -0.5)
    assert rows[0]["max_gradient_norm"] == pytest.approx(6e-9)


def test_bootstrap_interval_covers_a_noisy_rate():
    rng = np.random.default_rng(0)
    noise = {(n, r): rng.lognormal(sigma=0.5) for n in (1000, 4000, 16000) for r in range(30)}
    rows = report.summarize(_records(lambda n, r: noise[(n, r)] * n ** -0.25, repetitions=30), bootstrap_samples=500)
    low, high = rows[0]["slope_ci"]
    assert low < rows[0]["slope"] < high
    assert high - low > 0.01
    assert low < -0.25 < high


def test_flat_loss_has_zero_slope():
    rows = report.summarize(_records(lambda n, r: 2.0 + r), bootstrap_samples=50)
    assert rows[0]["slope"] == pytest.approx(0.0, abs=1e-12)


def test_markdown_table_lists_every_row():
    rows = report.summarize(_records(lambda n, r: n ** -0.5), bootstrap_samples=20)
    table = report.markdown_table(rows)
    assert "| shared_linear | random | over (3) | D2 | -0.50 | [-0.50, -0.50] |" in table


def test_log_spaced_sample_sizes():
    sizes = experiment.log_spaced_sample_sizes(1000, 100000, 8)
    assert sizes[0] == 1000 and sizes[-1] == 100000 and len(sizes) == 8
    ratios = np.diff(np.log(sizes))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-3)

