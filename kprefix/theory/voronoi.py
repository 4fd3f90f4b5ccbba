"""Voronoi losses between a fitted mixing measure and the true one (Section 4).

The atoms of a fitted measure ``G = sum_i exp(b_i) delta_{theta_i}`` are
distributed to the Voronoi cells of the true atoms ``theta*_j``:
``A_j = {i : |theta_i - theta*_j| <= |theta_i - theta*_l| for all l}`` (ties go
to the smaller ``j``).  A loss adds, per cell, the weighted parameter errors and
the mass term ``|sum_{i in A_j} exp(b_i) - exp(b*_j)|``:

* non-shared (Theorem 4.1), for an order ``r >= 1``:
  ``D1,r = sum_j sum_{i in A_j} exp(b_i) (|dpK_ij|^r + |dpV_ij|^r) + mass``;
* shared (Theorems 4.2 and 4.3):
  ``D = sum_{|A_j|=1} sum_i exp(b_i) |dp_ij| + sum_{|A_j|>1} sum_i exp(b_i) |dp_ij|^2 + mass``.

Example (two fitted atoms share the cell of the first true atom, so their
errors are squared; the second true atom's cell is empty):
    >>> import numpy as np
    >>> shared_voronoi_loss(np.log([1.0, 1.0]), np.array([[0.1], [-0.2]]),
    ...                     np.log([2.0, 1.0]), np.array([[0.0], [5.0]]))
    1.05
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from kprefix.theory.prompts import PromptParameterization


def voronoi_cells(fitted_locations: np.ndarray, true_locations: np.ndarray) -> List[np.ndarray]:
    """Indices of the fitted atoms in the Voronoi cell of each true atom."""
    fitted_locations = np.atleast_2d(fitted_locations)
    true_locations = np.atleast_2d(true_locations)
    distances = np.linalg.norm(fitted_locations[:, None, :] - true_locations[None, :, :], axis=2)
    nearest = np.argmin(distances, axis=1)
    return [np.flatnonzero(nearest == j) for j in range(len(true_locations))]


def voronoi_loss(
    fitted_biases: np.ndarray,
    fitted_locations: np.ndarray,
    true_biases: np.ndarray,
    true_locations: np.ndarray,
    groups: Sequence[slice],
    single_atom_exponent: float,
    multi_atom_exponent: float,
) -> float:
    """General Voronoi loss.

    Args:
      fitted_biases, true_biases: ``b_i`` and ``b*_j`` (the weights are ``exp(b)``).
      fitted_locations, true_locations: ``(L, k)`` and ``(L*, k)`` atom coordinates.
      groups: column groups whose Euclidean norms are raised to the exponent
        separately (``pK`` and ``pV`` for D1,r; the whole ``p`` otherwise).
      single_atom_exponent, multi_atom_exponent: exponent for cells that hold
        one fitted atom and several fitted atoms.
    """
    fitted_weights = np.exp(np.asarray(fitted_biases, dtype=float))
    true_weights = np.exp(np.asarray(true_biases, dtype=float))
    fitted_locations = np.atleast_2d(np.asarray(fitted_locations, dtype=float))
    true_locations = np.atleast_2d(np.asarray(true_locations, dtype=float))
    total = 0.0
    for j, cell in enumerate(voronoi_cells(fitted_locations, true_locations)):
        exponent = single_atom_exponent if len(cell) == 1 else multi_atom_exponent
        for i in cell:
            difference = fitted_locations[i] - true_locations[j]
            total += fitted_weights[i] * sum(
                np.linalg.norm(difference[group]) ** exponent for group in groups
            )
        total += abs(fitted_weights[cell].sum() - true_weights[j])
    return float(total)


def nonshared_voronoi_loss(fitted_biases, fitted_locations, true_biases, true_locations, prompt_dim: int, order: float) -> float:
    """``D1,r`` of Theorem 4.1; locations are ``(pK, pV-coordinate)`` rows."""
    groups = (slice(0, prompt_dim), slice(prompt_dim, None))
    return voronoi_loss(fitted_biases, fitted_locations, true_biases, true_locations, groups, order, order)


def shared_voronoi_loss(fitted_biases, fitted_locations, true_biases, true_locations) -> float:
    """The loss of Theorems 4.2 (``D2``) and 4.3 (``D3``); locations are ``p`` rows."""
    return voronoi_loss(
        fitted_biases, fitted_locations, true_biases, true_locations, (slice(None),), 1.0, 2.0
    )


def losses_for_setting(
    prompts: PromptParameterization,
    fitted_biases: np.ndarray,
    fitted_params: np.ndarray,
    true_biases: np.ndarray,
    true_params: np.ndarray,
    nonshared_orders: Sequence[float] = (1.0, 2.0),
) -> Dict[str, float]:
    """The Voronoi loss(es) of the setting of ``prompts``, keyed by a display name."""
    fitted_locations = prompts.location(fitted_params)
    true_locations = prompts.location(true_params)
    if prompts.name == "nonshared":
        return {
            f"D1,r={order:g}": nonshared_voronoi_loss(
                fitted_biases, fitted_locations, true_biases, true_locations, prompts.prompt_dim, order
            )
            for order in nonshared_orders
        }
    name = "D2" if prompts.name == "shared_linear" else "D3"
    return {name: shared_voronoi_loss(fitted_biases, fitted_locations, true_biases, true_locations)}
