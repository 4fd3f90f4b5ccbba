"""Voronoi cells and losses, checked against hand-computed values."""

import numpy as np
import pytest

from kprefix.theory import settings, truths, voronoi
from kprefix.theory.model import sample_inputs

WORLD = settings.make_world(settings.WorldConfig())


def test_cells_assign_each_fitted_atom_to_its_nearest_true_atom():
    true_locations = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    fitted = np.array([[0.1, 0.0], [2.9, 0.5], [0.0, -0.2], [1.5, 0.0]])
    cells = voronoi.voronoi_cells(fitted, true_locations)
    # The last atom is equidistant from the first two true atoms: the smaller index wins.
    assert [cell.tolist() for cell in cells] == [[0, 2, 3], [1], []]


def test_shared_loss_hand_computed():
    true_biases = np.log([1.0, 2.0, 0.5])
    true_locations = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    fitted_biases = np.log([0.4, 0.5, 2.5])
    fitted_locations = np.array([[0.1, 0.0], [0.0, -0.2], [3.0, 0.3]])
    # cell 1 holds two atoms (squared errors): 0.4 * 0.1^2 + 0.5 * 0.2^2 = 0.024, mass |0.9 - 1| = 0.1
    # cell 2 holds one atom (plain error): 2.5 * 0.3 = 0.75, mass |2.5 - 2| = 0.5
    # cell 3 is empty: mass |0 - 0.5| = 0.5
    loss = voronoi.shared_voronoi_loss(fitted_biases, fitted_locations, true_biases, true_locations)
    assert loss == pytest.approx(0.024 + 0.1 + 0.75 + 0.5 + 0.5, abs=1e-12)


def test_nonshared_loss_hand_computed_for_both_orders():
    true_biases = np.log([1.0, 1.0])
    true_locations = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 2.0]])  # rows (pK_1, pK_2, pV)
    fitted_biases = np.log([0.5, 0.25, 1.5])
    fitted_locations = np.array([[0.3, 0.4, -0.1], [0.0, 0.0, 0.2], [2.0, 0.1, 1.9]])
    # |dpK| and |dpV| are raised to r separately: atom 1 has |dpK| = 0.5, |dpV| = 0.1.
    # r = 1: 0.5 (0.5 + 0.1) + 0.25 (0 + 0.2) + 1.5 (0.1 + 0.1) + |0.75 - 1| + |1.5 - 1|
    # r = 2: 0.5 (0.25 + 0.01) + 0.25 (0.04) + 1.5 (0.01 + 0.01) + 0.25 + 0.5
    args = (fitted_biases, fitted_locations, true_biases, true_locations, 2)
    assert voronoi.nonshared_voronoi_loss(*args, order=1) == pytest.approx(1.4, abs=1e-12)
    assert voronoi.nonshared_voronoi_loss(*args, order=2) == pytest.approx(0.92, abs=1e-12)


@pytest.mark.parametrize("setting", settings.SETTINGS)
@pytest.mark.parametrize("kind", truths.TRUTH_KINDS)
def test_losses_vanish_at_the_truth(setting, kind):
    model = settings.make_model(setting, WORLD)
    truth = truths.make_truth(kind, model, num_experts=2, seed=0)
    losses = voronoi.losses_for_setting(model.prompts, truth.biases, truth.params, truth.biases, truth.params)
    assert losses and all(value == 0.0 for value in losses.values())


def test_shared_loss_vanishes_when_a_true_atom_is_split_in_place():
    model = settings.make_model("shared_linear", WORLD)
    truth = truths.make_truth("random", model, num_experts=2, seed=0)
    biases = np.r_[truth.biases[0] - np.log(2), truth.biases[0] - np.log(2), truth.biases[1]]
    params = np.vstack([truth.params[0], truth.params[0], truth.params[1]])
    losses = voronoi.losses_for_setting(model.prompts, biases, params, truth.biases, truth.params)
    assert losses["D2"] == pytest.approx(0.0, abs=1e-12)


def test_nonshared_model_cannot_see_a_value_split_that_the_loss_counts():
    """The mechanism behind Theorem 4.1: two atoms with one key and values +-delta around pV*."""
    model = settings.make_model("nonshared", WORLD)
    truth = truths.make_truth("random", model, num_experts=2, seed=0)
    delta = 0.4
    biases = np.r_[truth.biases[0] - np.log(2), truth.biases[0] - np.log(2), truth.biases[1]]
    params = np.vstack([truth.params[0], truth.params[0], truth.params[1]])
    params[0, -1] += delta
    params[1, -1] -= delta
    inputs = sample_inputs(np.random.default_rng(0), 50, WORLD.experts.input_dim)
    np.testing.assert_allclose(
        model.regression(inputs, biases, params), model.regression(inputs, truth.biases, truth.params), rtol=1e-12
    )
    losses = voronoi.losses_for_setting(model.prompts, biases, params, truth.biases, truth.params, (1.0, 2.0))
    weight = np.exp(truth.biases[0])
    assert losses["D1,r=1"] == pytest.approx(weight * delta, rel=1e-9)
    assert losses["D1,r=2"] == pytest.approx(weight * delta**2, rel=1e-9)
