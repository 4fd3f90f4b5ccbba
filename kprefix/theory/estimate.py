"""Least-squares estimation of the mixing measure (the paper's equations (12), (15), (16)).

``fit_least_squares`` minimises ``(1/2n) sum_i (Y_i - f_G(X_i))^2`` over
mixing measures with ``L`` atoms inside a box (the compact parameter space the
theorems assume) from several starting points, with scipy's trust-region
reflective least-squares solver and the analytic Jacobian of
:meth:`PrefixMoEModel.predict_with_jacobian`.  Each start is first run on a
subsample (cheap screening); the best screened solutions (by full-data
objective, at most one per basin) are then polished on all samples and the
best polished one is the estimate.  The final projected gradient sup-norm is
reported so that convergence can be checked.

Example:
    >>> import numpy as np
    >>> from kprefix.theory.settings import WorldConfig, make_world, make_model
    >>> from kprefix.theory.truths import make_truth
    >>> from kprefix.theory.model import sample_inputs
    >>> model = make_model("shared_linear", make_world(WorldConfig()))
    >>> truth = make_truth("random", model, num_experts=2, seed=0)
    >>> inputs = sample_inputs(np.random.default_rng(0), 500, 2)
    >>> data = model.make_dataset(inputs, model.regression(inputs, truth.biases, truth.params))
    >>> starts = initial_guesses(model, truth, 2, np.random.default_rng(1), 1, 0, 0.1)
    >>> fit = fit_least_squares(model, data, starts, ParameterBox())
    >>> bool(np.allclose(fit.params, truth.params, atol=1e-6))
    True
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import List, Sequence, Tuple

import numpy as np
from scipy.optimize import least_squares

from kprefix.theory.model import Dataset, PrefixMoEModel
from kprefix.theory.truths import MixingMeasure


@dataclasses.dataclass(frozen=True)
class ParameterBox:
    """The compact parameter space: ``b`` in ``[bias_min, bias_max]``, every ``|q_k| <= param_bound``."""

    bias_min: float = -12.0
    bias_max: float = 6.0
    param_bound: float = 5.0

    def bounds(self, model: PrefixMoEModel, num_experts: int) -> Tuple[np.ndarray, np.ndarray]:
        num_params = model.prompts.num_params
        lower_row = np.r_[self.bias_min, np.full(num_params, -self.param_bound)]
        upper_row = np.r_[self.bias_max, np.full(num_params, self.param_bound)]
        return np.tile(lower_row, num_experts), np.tile(upper_row, num_experts)


@dataclasses.dataclass(frozen=True)
class Fit:
    biases: np.ndarray
    params: np.ndarray
    objective: float  # (1/2n) sum of squared residuals
    gradient_norm: float  # sup-norm of the projected gradient of the objective
    evaluations: int  # Jacobian evaluations (screening plus polishing) of the chosen start
    start_index: int  # which starting point gave the estimate
    start_objectives: Tuple[float, ...]  # full-data objective of each start after screening


def objective(model: PrefixMoEModel, data: Dataset, flat: np.ndarray) -> float:
    """``(1/2n) |f_G(X) - Y|^2`` for a flattened mixing measure."""
    residual = model.predict(data, *model.unflatten(flat)) - data.responses
    return 0.5 * float(np.mean(residual**2))


def objective_and_gradient(model: PrefixMoEModel, data: Dataset, flat: np.ndarray) -> Tuple[float, np.ndarray]:
    """``(1/2n) |f_G(X) - Y|^2`` and its gradient in the flat layout.

    Example:
        >>> from kprefix.theory.settings import WorldConfig, make_world, make_model
        >>> model = make_model("shared_linear", make_world(WorldConfig()))
        >>> data = model.make_dataset(np.zeros((3, 2)), np.zeros(3))
        >>> value, gradient = objective_and_gradient(model, data, np.zeros(3))
        >>> gradient.shape
        (3,)
    """
    prediction, jacobian = model.predict_with_jacobian(data, flat)
    residual = prediction - data.responses
    return 0.5 * float(np.mean(residual**2)), jacobian.T @ residual / data.size


def projected_gradient_norm(gradient: np.ndarray, flat: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> float:
    """Sup-norm of the gradient after removing components that push out of an active bound."""
    return float(np.max(np.abs(flat - np.clip(flat - gradient, lower, upper))))


def initial_guesses(
    model: PrefixMoEModel,
    truth: MixingMeasure,
    num_experts: int,
    rng: np.random.Generator,
    num_near: int,
    num_random: int,
    perturbation: float,
) -> List[np.ndarray]:
    """Starting points: ``num_near`` perturbations of the truth and ``num_random`` random draws.

    With more fitted experts than true ones, near starts alternate between
    the two ways an over-specified fit can sit at the truth: splitting a true
    expert into copies that share its weight (even starts; a different expert
    each time), and adding an expert of small weight at a random place (odd
    starts).
    """
    starts = []
    for index in range(num_near):
        biases, params = list(truth.biases), list(truth.params)
        for extra in range(num_experts - truth.num_experts):
            if index % 2 == 0:
                split = (index // 2 + extra) % truth.num_experts
                biases[split] -= np.log(2.0)
                biases.append(biases[split])
                params.append(params[split])
            else:
                biases.append(np.log(0.05))
                params.append(rng.normal(size=model.prompts.num_params))
        noise = perturbation * rng.normal(size=(num_experts, model.params_per_expert))
        starts.append(model.flatten(biases[:num_experts], params[:num_experts]) + noise.ravel())
    for _ in range(num_random):
        biases = rng.uniform(-1.0, 1.0, size=num_experts)
        params = rng.normal(size=(num_experts, model.prompts.num_params))
        starts.append(model.flatten(biases, params))
    return starts


def compress_least_squares(jacobian: np.ndarray, residual: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """A ``(P+1)``-row residual and Jacobian with the same ``J^T J``, ``J^T r`` and ``|r|``.

    scipy's trust-region reflective method sees the ``n``-row problem only
    through those quantities (and the column norms of ``J``, which follow from
    ``J^T J``), so handing it this small factor gives the same iterates while
    replacing an SVD of an ``n x P`` matrix by an eigendecomposition of a
    ``P x P`` one.  Directions with no curvature (``J v = 0``) carry no part of
    ``J^T r`` and are left out of the factor.

    >>> rng = np.random.default_rng(0)
    >>> jacobian, residual = rng.normal(size=(50, 3)), rng.normal(size=50)
    >>> small_residual, small_jacobian = compress_least_squares(jacobian, residual)
    >>> small_jacobian.shape, bool(np.isclose(small_residual @ small_residual, residual @ residual))
    ((4, 3), True)
    >>> bool(np.allclose(small_jacobian.T @ small_residual, jacobian.T @ residual))
    True
    """
    num_params = jacobian.shape[1]
    gram = jacobian.T @ jacobian
    gradient = jacobian.T @ residual
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    kept = eigenvalues > 1e-14 * max(eigenvalues[-1], np.finfo(float).tiny)
    roots = np.sqrt(np.where(kept, eigenvalues, 0.0))
    small_jacobian = np.zeros((num_params + 1, num_params))
    small_jacobian[:num_params] = roots[:, None] * eigenvectors.T
    coordinates = np.zeros(num_params)
    coordinates[kept] = (eigenvectors.T @ gradient)[kept] / roots[kept]
    remainder = np.sqrt(max(float(residual @ residual - coordinates @ coordinates), 0.0))
    return np.r_[coordinates, remainder], small_jacobian


def _solve(model, data, start, lower, upper, max_evaluations, tolerance):
    """One bounded trust-region least-squares run on ``data``.

    The objective is about ``s^2 / 2`` and its statistical resolution is
    ``s^2 / n``, so a relative decrease of ``tolerance / n`` per step is
    ``tolerance / 2`` of that resolution: below it, further steps cannot
    change the estimate in a way the data could tell apart.
    """
    scale = 1.0 / np.sqrt(data.size)  # so that scipy's cost is the (1/2n) objective
    step_tolerance = tolerance / data.size
    # scipy asks for the Jacobian at points whose residuals it has just computed
    # (trial steps are rarely rejected), so both come from one evaluation.
    last = {}

    def residuals(flat):
        prediction, jacobian_matrix = model.predict_with_jacobian(data, flat)
        small_residual, small_jacobian = compress_least_squares(
            scale * jacobian_matrix, scale * (prediction - data.responses)
        )
        last.update(point=flat.copy(), jacobian=small_jacobian)
        return small_residual

    def jacobian(flat):
        if not np.array_equal(last.get("point"), flat):
            residuals(flat)
        return last["jacobian"]

    return least_squares(
        residuals, np.clip(start, lower + 1e-9, upper - 1e-9), jac=jacobian,
        bounds=(lower, upper), method="trf", x_scale="jac",
        ftol=step_tolerance, xtol=step_tolerance, gtol=1e-12, max_nfev=max_evaluations,
    )


def same_basin(model: PrefixMoEModel, first: np.ndarray, second: np.ndarray, tolerance: float = 0.05) -> bool:
    """Whether two flattened measures agree up to relabelling their atoms.

    >>> from kprefix.theory.settings import WorldConfig, make_world, make_model
    >>> model = make_model("shared_linear", make_world(WorldConfig()))
    >>> same_basin(model, np.array([0., 1, 2, 5, 6, 7]), np.array([5., 6, 7, 0, 1, 2.01]))
    True
    """
    rows_first = np.reshape(first, (-1, model.params_per_expert))
    rows_second = np.reshape(second, (-1, model.params_per_expert))
    return any(
        np.max(np.abs(rows_first - rows_second[list(order)])) < tolerance
        for order in itertools.permutations(range(len(rows_second)))
    )


def fit_least_squares(
    model: PrefixMoEModel,
    data: Dataset,
    starts: Sequence[np.ndarray],
    box: ParameterBox = ParameterBox(),
    screen_size: int = 1000,
    screen_evaluations: int = 60,
    max_evaluations: int = 120,
    polish_candidates: int = 2,
    direct_starts: Sequence[int] = (),
    tolerance: float = 1e-3,
) -> Fit:
    """The least-squares estimate from the best of ``starts``.

    Every start is first optimised with at most ``screen_evaluations``
    function evaluations on the first ``screen_size`` samples (all of them
    when ``n <= screen_size``).  On a subsample, neighbouring local minima
    can swap order, so the ``polish_candidates`` screened solutions with the
    smallest full-data objective that are not relabellings of each other
    are each polished on all samples with at most ``max_evaluations``; the
    best polished one is the estimate.  A subsample can also lead every
    start into a basin that is worse on all samples, so the starts listed in
    ``direct_starts`` are in addition run on all samples without screening.
    A run stops when a step lowers the objective by less than
    ``tolerance / n`` relative to it (scipy's ``ftol`` and ``xtol``).
    """
    if not starts:
        raise ValueError("need at least one starting point")
    num_experts = len(starts[0]) // model.params_per_expert
    lower, upper = box.bounds(model, num_experts)
    subsample = data if data.size <= screen_size else data.head(screen_size)
    screened = [_solve(model, subsample, start, lower, upper, screen_evaluations, tolerance) for start in starts]
    start_objectives = tuple(objective(model, data, result.x) for result in screened)
    candidates: List[int] = []
    for index in np.argsort(start_objectives):
        if len(candidates) == polish_candidates:
            break
        if not any(same_basin(model, screened[index].x, screened[chosen].x) for chosen in candidates):
            candidates.append(int(index))
    finished = []
    for index in candidates:
        solution, evaluations = screened[index].x, int(screened[index].njev)
        # Screening on all samples that converged needs no polishing.
        if subsample is not data or screened[index].status == 0:
            polished = _solve(model, data, solution, lower, upper, max_evaluations, tolerance)
            solution, evaluations = polished.x, evaluations + int(polished.njev)
        finished.append((objective(model, data, solution), index, solution, evaluations))
    if subsample is not data:
        for index in direct_starts:
            result = _solve(model, data, starts[index], lower, upper, max_evaluations, tolerance)
            finished.append((objective(model, data, result.x), index, result.x, int(result.njev)))
    final_objective, best, solution, evaluations = min(finished, key=lambda item: item[0])
    _, gradient = objective_and_gradient(model, data, solution)
    biases, params = model.unflatten(solution)
    return Fit(
        biases=biases.copy(),
        params=params.copy(),
        objective=final_objective,
        gradient_norm=projected_gradient_norm(gradient, solution, lower, upper),
        evaluations=evaluations,
        start_index=best,
        start_objectives=start_objectives,
    )
