"""Least-squares estimation recovers the truth from noise-free data."""

import numpy as np
import pytest

from kprefix.theory import estimate, settings, truths, voronoi
from kprefix.theory.model import sample_inputs

WORLD = settings.make_world(settings.WorldConfig())


# The non-shared proof truth is not identifiable; the next test covers it.
IDENTIFIABLE = [(setting, kind) for setting in settings.SETTINGS for kind in truths.TRUTH_KINDS
                if (setting, kind) != ("nonshared", "proof")]


@pytest.mark.parametrize("setting, kind", IDENTIFIABLE)
def test_noise_free_fit_recovers_the_truth(setting, kind):
    model = settings.make_model(setting, WORLD)
    truth = truths.make_truth(kind, model, num_experts=2, seed=0)
    inputs = sample_inputs(np.random.default_rng(0), 1500, 2)
    data = model.make_dataset(inputs, model.regression(inputs, truth.biases, truth.params))
    starts = estimate.initial_guesses(model, truth, 2, np.random.default_rng(1), 1, 0, 0.1)
    fit = estimate.fit_least_squares(model, data, starts, max_evaluations=300)
    assert fit.objective < 1e-20
    assert fit.gradient_norm < 1e-9
    np.testing.assert_allclose(fit.biases, truth.biases, atol=1e-7)
    np.testing.assert_allclose(fit.params, truth.params, atol=1e-7)
    losses = voronoi.losses_for_setting(model.prompts, fit.biases, fit.params, truth.biases, truth.params)
    assert max(losses.values()) < 1e-6


def test_nonshared_proof_truth_is_fitted_exactly_but_not_recovered():
    """Two experts with one key: a perfect fit need not be near the truth (Theorem 4.1's construction)."""
    model = settings.make_model("nonshared", WORLD)
    truth = truths.make_truth("proof", model, num_experts=2, seed=0)
    inputs = sample_inputs(np.random.default_rng(0), 1500, 2)
    data = model.make_dataset(inputs, model.regression(inputs, truth.biases, truth.params))
    # Start on the curve of perfect fits: weights 1:3 instead of 1:1, same total and weighted mean value.
    total = np.exp(truth.biases).sum()
    mean_value = np.exp(truth.biases) @ truth.params[:, -1] / total
    biases = np.log([0.25 * total, 0.75 * total])
    params = truth.params.copy()
    params[0, -1] = mean_value + 0.9
    params[1, -1] = mean_value - 0.3
    fit = estimate.fit_least_squares(model, data, [model.flatten(biases, params)])
    assert fit.objective < 1e-20
    losses = voronoi.losses_for_setting(model.prompts, fit.biases, fit.params, truth.biases, truth.params)
    assert losses["D1,r=1"] > 0.1


def test_screening_on_a_subsample_then_polishing_on_all_samples():
    model = settings.make_model("shared_onelayer", WORLD)
    truth = truths.make_truth("random", model, num_experts=2, seed=0)
    rng = np.random.default_rng(3)
    inputs = sample_inputs(rng, 1200, 2)
    responses = model.regression(inputs, truth.biases, truth.params) + 0.1 * rng.normal(size=1200)
    data = model.make_dataset(inputs, responses)
    starts = estimate.initial_guesses(model, truth, 3, np.random.default_rng(4), 2, 1, 0.3)
    fit = estimate.fit_least_squares(model, data, starts, screen_size=300, screen_evaluations=30)
    assert len(fit.start_objectives) == 3
    # The estimate is polished on all samples: it is a stationary point of the full objective
    # and at least as good as every screened start.
    assert fit.gradient_norm < 1e-6
    assert fit.objective <= min(fit.start_objectives) + 1e-15
    assert fit.objective <= estimate.objective(model, data, model.flatten(truth.biases, truth.params))


def test_best_start_wins():
    model = settings.make_model("shared_linear", WORLD)
    truth = truths.make_truth("random", model, num_experts=2, seed=0)
    inputs = sample_inputs(np.random.default_rng(0), 800, 2)
    data = model.make_dataset(inputs, model.regression(inputs, truth.biases, truth.params))
    good = model.flatten(truth.biases, truth.params)
    bad = model.flatten(np.array([-8.0, -8.0]), np.full((2, 2), 4.0))
    fit = estimate.fit_least_squares(model, data, [bad, good], max_evaluations=5)
    assert fit.start_index == 1
    assert fit.start_objectives[0] > fit.start_objectives[1]


def test_projected_gradient_ignores_outward_components_at_bounds():
    lower, upper = np.zeros(2), np.ones(2)
    # First coordinate sits at its lower bound with a gradient pushing further down.
    assert estimate.projected_gradient_norm(np.array([0.5, 1e-3]), np.array([0.0, 0.5]), lower, upper) == pytest.approx(1e-3)
    assert estimate.projected_gradient_norm(np.array([-0.5, 0.0]), np.array([0.0, 0.5]), lower, upper) == pytest.approx(0.5)


def test_compressed_problem_keeps_the_normal_equations_even_when_rank_deficient():
    rng = np.random.default_rng(0)
    jacobian = rng.normal(size=(200, 4))
    jacobian[:, 3] = jacobian[:, 0] - 2 * jacobian[:, 1]  # a direction with no curvature
    residual = rng.normal(size=200)
    small_residual, small_jacobian = estimate.compress_least_squares(jacobian, residual)
    assert small_jacobian.shape == (5, 4)
    np.testing.assert_allclose(small_jacobian.T @ small_jacobian, jacobian.T @ jacobian, atol=1e-10)
    np.testing.assert_allclose(small_jacobian.T @ small_residual, jacobian.T @ residual, atol=1e-10)
    assert small_residual @ small_residual == pytest.approx(residual @ residual, rel=1e-12)


def test_fit_agrees_with_scipy_on_the_uncompressed_problem():
    from scipy.optimize import least_squares

    model = settings.make_model("shared_onelayer", WORLD)
    truth = truths.make_truth("random", model, num_experts=2, seed=0)
    rng = np.random.default_rng(5)
    inputs = sample_inputs(rng, 600, 2)
    data = model.make_dataset(inputs, model.regression(inputs, truth.biases, truth.params) + 0.1 * rng.normal(size=600))
    start = model.flatten(truth.biases, truth.params) + 0.2
    fit = estimate.fit_least_squares(model, data, [start], tolerance=1e-10)
    lower, upper = estimate.ParameterBox().bounds(model, 2)
    reference = least_squares(
        lambda flat: model.predict(data, *model.unflatten(flat)) - data.responses, start,
        jac=lambda flat: model.predict_with_jacobian(data, flat)[1], bounds=(lower, upper),
        method="trf", x_scale="jac", ftol=1e-14, xtol=1e-14, gtol=1e-14,
    )
    np.testing.assert_allclose(model.flatten(fit.biases, fit.params), reference.x, atol=1e-6)


def test_same_basin_ignores_the_order_of_atoms():
    model = settings.make_model("shared_linear", WORLD)
    first = model.flatten(np.array([0.0, 1.0]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    relabelled = model.flatten(np.array([1.0, 0.0]), np.array([[3.0, 4.0], [1.0, 2.0]]))
    moved = model.flatten(np.array([1.0, 0.0]), np.array([[3.0, 4.5], [1.0, 2.0]]))
    assert estimate.same_basin(model, first, relabelled)
    assert not estimate.same_basin(model, first, moved)
