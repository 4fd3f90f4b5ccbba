"""The prefix MoE regression function and its derivatives."""

import math

import numpy as np
import pytest

from kprefix.theory import estimate, settings
from kprefix.theory.model import sample_inputs

WORLD = settings.make_world(settings.WorldConfig(input_dim=3, prompt_dim=2, num_pretrained_experts=2, seed=3))


def _sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def _prompts_by_hand(setting, q):
    """(pK, pV) of one prompt expert, written out per setting."""
    C = WORLD.value_projection
    if setting == "nonshared":
        key = list(q[:2])
        value = [q[2] * C[k] / math.sqrt(C[0] ** 2 + C[1] ** 2) for k in range(2)]
    elif setting == "shared_linear":
        key, value = list(q), list(q)
    else:
        W1, W2 = WORLD.key_weights, WORLD.value_weights
        key_pre = [sum(W1[a, b] * q[b] for b in range(2)) for a in range(2)]
        value_pre = [sum(W2[a, b] * q[b] for b in range(2)) for a in range(2)]
        if setting == "shared_onelayer":
            key = [math.tanh(z) for z in key_pre]
            value = [_sigmoid(z) for z in value_pre]
        else:
            key, value = key_pre, value_pre
    return key, value


def _regression_by_loops(setting, x, biases, params):
    """Equation (11) evaluated term by term for one input x."""
    experts = WORLD.experts
    B, C = WORLD.key_projection, WORLD.value_projection
    numerator = denominator = 0.0
    for j in range(len(experts.gate_biases)):
        quadratic = sum(x[a] * experts.gate_matrices[j, a, b] * x[b] for a in range(3) for b in range(3))
        gate = math.exp(quadratic + experts.gate_biases[j])
        numerator += gate * sum(experts.expert_weights[j, a] * x[a] for a in range(3))
        denominator += gate
    for bias, q in zip(biases, params):
        key, value = _prompts_by_hand(setting, q)
        projected_key = [sum(B[a, k] * key[k] for k in range(2)) for a in range(3)]
        gate = math.exp(sum(projected_key[a] * x[a] for a in range(3)) + bias)
        numerator += gate * sum(C[k] * value[k] for k in range(2))
        denominator += gate
    return numerator / denominator


def _random_measure(model, rng, num_experts):
    biases = rng.uniform(-1, 1, size=num_experts)
    params = rng.normal(size=(num_experts, model.prompts.num_params))
    return biases, params


@pytest.mark.parametrize("setting", settings.SETTINGS)
def test_regression_matches_term_by_term_evaluation(setting):
    model = settings.make_model(setting, WORLD)
    rng = np.random.default_rng(0)
    biases, params = _random_measure(model, rng, 3)
    inputs = sample_inputs(rng, 25, 3)
    expected = [_regression_by_loops(setting, x, biases, params) for x in inputs]
    np.testing.assert_allclose(model.regression(inputs, biases, params), expected, rtol=1e-12, atol=1e-12)


def test_regression_is_stable_for_large_gates():
    model = settings.make_model("shared_linear", WORLD)
    inputs = np.ones((4, 3))
    values = model.regression(inputs, np.array([800.0]), np.array([[1.0, 2.0]]))
    # The prompt gate dominates completely: f = C p.
    np.testing.assert_allclose(values, WORLD.value_projection @ np.array([1.0, 2.0]))


@pytest.mark.parametrize("setting", settings.SETTINGS)
@pytest.mark.parametrize("num_experts", [2, 3])
def test_jacobian_matches_finite_differences(setting, num_experts):
    model = settings.make_model(setting, WORLD)
    rng = np.random.default_rng(num_experts)
    biases, params = _random_measure(model, rng, num_experts)
    flat = model.flatten(biases, params)
    data = model.make_dataset(sample_inputs(rng, 40, 3), rng.normal(size=40))
    _, jacobian = model.predict_with_jacobian(data, flat)
    step = 1e-6
    numerical = np.empty_like(jacobian)
    for k in range(len(flat)):
        shift = np.zeros_like(flat)
        shift[k] = step
        numerical[:, k] = (
            model.predict(data, *model.unflatten(flat + shift)) - model.predict(data, *model.unflatten(flat - shift))
        ) / (2 * step)
    np.testing.assert_allclose(jacobian, numerical, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("setting", settings.SETTINGS)
def test_objective_gradient_matches_finite_differences(setting):
    model = settings.make_model(setting, WORLD)
    rng = np.random.default_rng(7)
    flat = model.flatten(*_random_measure(model, rng, 3))
    data = model.make_dataset(sample_inputs(rng, 60, 3), rng.normal(size=60))
    _, gradient = estimate.objective_and_gradient(model, data, flat)
    step = 1e-6
    numerical = [
        (estimate.objective_and_gradient(model, data, flat + step * unit)[0]
         - estimate.objective_and_gradient(model, data, flat - step * unit)[0]) / (2 * step)
        for unit in np.eye(len(flat))
    ]
    np.testing.assert_allclose(gradient, numerical, rtol=1e-6, atol=1e-9)


def test_nested_head_keeps_the_first_samples():
    model = settings.make_model("nonshared", WORLD)
    rng = np.random.default_rng(1)
    data = model.make_dataset(sample_inputs(rng, 10, 3), rng.normal(size=10))
    head = data.head(4)
    biases, params = _random_measure(model, rng, 2)
    np.testing.assert_allclose(model.predict(head, biases, params), model.predict(data, biases, params)[:4])
    np.testing.assert_array_equal(head.responses, data.responses[:4])
