"""How the unknown prompt parameters of one prompt expert become a key and a value.

Every prompt expert j' of the prefix mixture-of-experts model (the paper's
equation (11)) contributes a gate ``exp((B pK)^T X + b)`` and a scalar output
``C pV``.  The three settings of Section 4 differ only in how the unknown
parameters ``q`` of an expert determine ``pK`` and ``pV``:

* ``nonshared``: ``q = (pK, t)`` with ``pV = t * C^T / |C|``.  Because ``C``
  maps the value prompt to a scalar, only the component of ``pV`` along
  ``C^T`` changes the regression function; the component in the null space
  of ``C`` cannot be estimated from any amount of data.  We therefore
  estimate ``pV`` inside the row space of ``C`` (one coordinate ``t``), so
  ``|pV - pV'| = |t - t'|``.
* ``shared_linear``: ``q = p`` with ``pK = pV = p`` (Theorem 4.2).
* ``shared_onelayer``: ``q = p`` with ``pK = s1(W1 p)``, ``pV = s2(W2 p)``
  (Theorem 4.3).  ``W1`` and ``W2`` are known, as in the paper, whose mixing
  measure only carries ``(b, p)``.  ``tanh``/``sigmoid`` satisfy the paper's
  assumptions A.1 and A.2; the ``identity`` activation violates A.2.

Each parameterization maps a batch of expert parameters to keys, scalar values
and their derivatives; :mod:`kprefix.theory.model` turns those into the
regression function and its Jacobian.

Example:
    >>> import numpy as np
    >>> param = SharedLinearPrompts(prompt_dim=2, value_projection=np.array([1.0, 2.0]))
    >>> keys, values, _, _ = param.keys_and_values(np.array([[0.5, -1.0]]))
    >>> keys.tolist(), values.tolist()
    ([[0.5, -1.0]], [-1.5])
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Tuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Activation:
    """An element-wise activation with its first derivative."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    derivative: Callable[[np.ndarray], np.ndarray]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


ACTIVATIONS: Dict[str, Activation] = {
    "tanh": Activation("tanh", np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": Activation(
        "sigmoid", _sigmoid, lambda z: _sigmoid(z) * (1.0 - _sigmoid(z))
    ),
    "identity": Activation("identity", lambda z: z, np.ones_like),
}


class PromptParameterization:
    """Base class: maps expert parameters ``q`` (one row per expert) to prompts.

    Subclasses define ``num_params`` (the length of ``q``) and
    ``keys_and_values``; ``location`` gives the coordinates in which Voronoi
    cells and prompt errors are measured.
    """

    name = "base"
    num_params: int

    def __init__(self, prompt_dim: int, value_projection: np.ndarray):
        self.prompt_dim = int(prompt_dim)
        self.value_projection = np.asarray(value_projection, dtype=float).reshape(-1)
        if self.value_projection.shape != (self.prompt_dim,):
            raise ValueError(
                f"value_projection must have {self.prompt_dim} entries, "
                f"got shape {self.value_projection.shape}"
            )

    def keys_and_values(
        self, params: np.ndarray
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Key prompts, scalar values and their derivatives.

        Args:
          params: ``(L, num_params)`` expert parameters ``q``.

        Returns:
          ``key_prompts`` ``(L, prompt_dim)``, ``values`` ``(L,)`` (``C pV``),
          ``key_jacobians`` ``(L, prompt_dim, num_params)`` (d pK / d q) and
          ``value_gradients`` ``(L, num_params)`` (d C pV / d q).
        """
        raise NotImplementedError

    def location(self, params: np.ndarray) -> np.ndarray:
        """Coordinates in which the paper measures prompt errors (``(L, k)``)."""
        return np.asarray(params, dtype=float)


class NonSharedPrompts(PromptParameterization):
    """Separate key prompt ``pK`` and value prompt ``pV = t C^T/|C|``.

    Example:
        >>> param = NonSharedPrompts(prompt_dim=2, value_projection=np.array([3.0, 4.0]))
        >>> _, values, _, _ = param.keys_and_values(np.array([[0.0, 0.0, 2.0]]))
        >>> float(values[0])  # C pV = t |C|
        10.0
    """

    name = "nonshared"

    def __init__(self, prompt_dim: int, value_projection: np.ndarray):
        super().__init__(prompt_dim, value_projection)
        self.num_params = self.prompt_dim + 1
        self.value_scale = float(np.linalg.norm(self.value_projection))
        if self.value_scale == 0.0:
            raise ValueError("value_projection must be non-zero")

    def keys_and_values(self, params):
        params = np.atleast_2d(np.asarray(params, dtype=float))
        num_experts = params.shape[0]
        key_prompts = params[:, : self.prompt_dim]
        values = self.value_scale * params[:, self.prompt_dim]
        key_jacobians = np.zeros((num_experts, self.prompt_dim, self.num_params))
        key_jacobians[:, :, : self.prompt_dim] = np.eye(self.prompt_dim)
        value_gradients = np.zeros((num_experts, self.num_params))
        value_gradients[:, self.prompt_dim] = self.value_scale
        return key_prompts, values, key_jacobians, value_gradients


class SharedLinearPrompts(PromptParameterization):
    """``pK = pV = p`` (the simple linear setting of Section 4.2.1)."""

    name = "shared_linear"

    def __init__(self, prompt_dim: int, value_projection: np.ndarray):
        super().__init__(prompt_dim, value_projection)
        self.num_params = self.prompt_dim

    def keys_and_values(self, params):
        params = np.atleast_2d(np.asarray(params, dtype=float))
        num_experts = params.shape[0]
        values = params @ self.value_projection
        key_jacobians = np.broadcast_to(
            np.eye(self.prompt_dim), (num_experts, self.prompt_dim, self.prompt_dim)
        ).copy()
        value_gradients = np.tile(self.value_projection, (num_experts, 1))
        return params.copy(), values, key_jacobians, value_gradients


class SharedOneLayerPrompts(PromptParameterization):
    """``pK = s1(W1 p)``, ``pV = s2(W2 p)`` (Section 4.2.2).

    Example:
        >>> param = SharedOneLayerPrompts(
        ...     prompt_dim=1, value_projection=np.array([1.0]),
        ...     key_weights=np.eye(1), value_weights=np.eye(1),
        ...     key_activation="tanh", value_activation="sigmoid")
        >>> _, values, _, _ = param.keys_and_values(np.array([[0.0]]))
        >>> float(values[0])
        0.5
    """

    name = "shared_onelayer"

    def __init__(
        self,
        prompt_dim: int,
        value_projection: np.ndarray,
        key_weights: np.ndarray,
        value_weights: np.ndarray,
        key_activation: str = "tanh",
        value_activation: str = "sigmoid",
    ):
        super().__init__(prompt_dim, value_projection)
        self.num_params = self.prompt_dim
        self.key_weights = np.asarray(key_weights, dtype=float)
        self.value_weights = np.asarray(value_weights, dtype=float)
        for label, weights in (("key_weights", self.key_weights), ("value_weights", self.value_weights)):
            if weights.shape != (self.prompt_dim, self.prompt_dim):
                raise ValueError(
                    f"{label} must be {self.prompt_dim}x{self.prompt_dim}, got {weights.shape}"
                )
        self.key_activation = ACTIVATIONS[key_activation]
        self.value_activation = ACTIVATIONS[value_activation]

    def keys_and_values(self, params):
        params = np.atleast_2d(np.asarray(params, dtype=float))
        key_pre = params @ self.key_weights.T
        value_pre = params @ self.value_weights.T
        key_prompts = self.key_activation.apply(key_pre)
        values = self.value_activation.apply(value_pre) @ self.value_projection
        key_jacobians = self.key_activation.derivative(key_pre)[:, :, None] * self.key_weights
        value_gradients = (
            self.value_activation.derivative(value_pre) * self.value_projection
        ) @ self.value_weights
        return key_prompts, values, key_jacobians, value_gradients
