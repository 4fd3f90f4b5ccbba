"""The prefix mixture-of-experts regression model of the paper's equations (10)-(11).

    f_G(X) = [ sum_j exp(X^T A_j X + c_j) eta_j^T X + sum_j' exp((B pK_j')^T X + b_j') C pV_j' ]
             / [ sum_j exp(X^T A_j X + c_j)          + sum_j' exp((B pK_j')^T X + b_j') ]

The N pre-trained experts (``A_j, c_j, eta_j``) and the projections ``B`` and
``C`` are known; the mixing measure ``G = sum_j' exp(b_j') delta_{q_j'}`` is
unknown, where ``q_j'`` are the expert parameters of a
:class:`~kprefix.theory.prompts.PromptParameterization`.

A mixing measure is stored as ``biases`` ``(L,)`` and ``params`` ``(L, m)``, or
flattened (for the optimizer) as one row ``[b_j', q_j']`` per prompt expert.

Example:
    >>> import numpy as np
    >>> from kprefix.theory.prompts import SharedLinearPrompts
    >>> experts = PretrainedExperts(np.zeros((1, 2, 2)), np.zeros(1), np.zeros((1, 2)))
    >>> model = PrefixMoEModel(experts, np.eye(2), SharedLinearPrompts(2, np.array([1.0, 0.0])))
    >>> inputs = np.zeros((1, 2))
    >>> # one pre-trained expert (output 0) and one prompt expert (output 2), equal gates
    >>> model.regression(inputs, np.array([0.0]), np.array([[2.0, 5.0]])).tolist()
    [1.0]
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import numpy as np
from scipy.special import logsumexp

from kprefix.theory.prompts import PromptParameterization


@dataclasses.dataclass(frozen=True)
class PretrainedExperts:
    """Known pre-trained experts: gates ``X^T A_j X + c_j`` and outputs ``eta_j^T X``."""

    gate_matrices: np.ndarray  # (N, d, d)
    gate_biases: np.ndarray  # (N,)
    expert_weights: np.ndarray  # (N, d)

    @property
    def input_dim(self) -> int:
        return self.expert_weights.shape[1]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Samples plus the per-sample quantities that do not depend on ``G``.

    ``log_pretrained_mass`` is ``log sum_j exp(X^T A_j X + c_j)`` and
    ``pretrained_output`` the pre-trained experts' softmax average of
    ``eta_j^T X``; ``projected_inputs`` is ``(X B)^T`` (``(d_p, n)``, samples
    along the fast axis) so that the prompt gates are ``pK^T projected_inputs + b``.
    """

    inputs: np.ndarray
    responses: np.ndarray
    projected_inputs: np.ndarray
    log_pretrained_mass: np.ndarray
    pretrained_output: np.ndarray

    @property
    def size(self) -> int:
        return self.inputs.shape[0]

    def head(self, size: int) -> "Dataset":
        """The first ``size`` samples (nested samples across sample sizes)."""
        return Dataset(
            inputs=self.inputs[:size],
            responses=self.responses[:size],
            projected_inputs=np.ascontiguousarray(self.projected_inputs[:, :size]),
            log_pretrained_mass=self.log_pretrained_mass[:size],
            pretrained_output=self.pretrained_output[:size],
        )


class PrefixMoEModel:
    """Regression function ``f_G`` and its Jacobian with respect to ``G``."""

    def __init__(
        self,
        experts: PretrainedExperts,
        key_projection: np.ndarray,
        prompts: PromptParameterization,
    ):
        self.experts = experts
        self.key_projection = np.asarray(key_projection, dtype=float)  # B: (d, d_p)
        self.prompts = prompts
        expected = (experts.input_dim, prompts.prompt_dim)
        if self.key_projection.shape != expected:
            raise ValueError(f"key_projection must have shape {expected}, got {self.key_projection.shape}")

    @property
    def params_per_expert(self) -> int:
        """Length of one row ``[b, q]`` of a flattened mixing measure."""
        return 1 + self.prompts.num_params

    def flatten(self, biases: np.ndarray, params: np.ndarray) -> np.ndarray:
        return np.column_stack([np.asarray(biases, float), np.asarray(params, float)]).ravel()

    def unflatten(self, flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(flat, dtype=float).reshape(-1, self.params_per_expert)
        return rows[:, 0], rows[:, 1:]

    def pretrained_terms(self, inputs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``log sum_j exp(X^T A_j X + c_j)`` and the pre-trained experts' mixture output."""
        gate_logits = (
            np.einsum("ni,jik,nk->nj", inputs, self.experts.gate_matrices, inputs)
            + self.experts.gate_biases
        )
        log_mass = logsumexp(gate_logits, axis=1)
        weights = np.exp(gate_logits - log_mass[:, None])
        outputs = inputs @ self.experts.expert_weights.T
        return log_mass, np.sum(weights * outputs, axis=1)

    def make_dataset(self, inputs: np.ndarray, responses: np.ndarray) -> Dataset:
        inputs = np.asarray(inputs, dtype=float)
        log_mass, pretrained_output = self.pretrained_terms(inputs)
        return Dataset(
            inputs=inputs,
            responses=np.asarray(responses, dtype=float),
            projected_inputs=np.ascontiguousarray((inputs @ self.key_projection).T),
            log_pretrained_mass=log_mass,
            pretrained_output=pretrained_output,
        )

    def _gates(self, data: Dataset, biases: np.ndarray, key_prompts: np.ndarray):
        """Softmax weights of the pre-trained block ``(n,)`` and of each prompt expert ``(L, n)``."""
        prompt_logits = key_prompts @ data.projected_inputs + biases[:, None]
        shift = np.maximum(data.log_pretrained_mass, prompt_logits.max(axis=0))
        pretrained_weight = np.exp(data.log_pretrained_mass - shift)
        prompt_weights = np.exp(prompt_logits - shift)
        normalizer = pretrained_weight + prompt_weights.sum(axis=0)
        prompt_weights /= normalizer
        return pretrained_weight / normalizer, prompt_weights

    def predict(self, data: Dataset, biases: np.ndarray, params: np.ndarray) -> np.ndarray:
        """``f_G`` at the samples of ``data``."""
        key_prompts, values, _, _ = self.prompts.keys_and_values(params)
        pretrained_weight, prompt_weights = self._gates(data, np.asarray(biases, float), key_prompts)
        return pretrained_weight * data.pretrained_output + values @ prompt_weights

    def regression(self, inputs: np.ndarray, biases: np.ndarray, params: np.ndarray) -> np.ndarray:
        """``f_G(X)`` for raw inputs ``(n, d)``."""
        data = self.make_dataset(inputs, np.zeros(len(inputs)))
        return self.predict(data, biases, params)

    def predict_with_jacobian(self, data: Dataset, flat: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """``f_G`` at the samples and its Jacobian ``(n, L * (1 + m))`` in the flat layout.

        With softmax weights ``w_j'`` of the prompt experts,
        ``d f / d b_j' = w_j' (C pV_j' - f)`` and
        ``d f / d q_j' = w_j' (C pV_j' - f) (X B) dpK_j'/dq + w_j' d(C pV_j')/dq``.
        """
        biases, params = self.unflatten(flat)
        key_prompts, values, key_jacobians, value_gradients = self.prompts.keys_and_values(params)
        pretrained_weight, prompt_weights = self._gates(data, biases, key_prompts)
        prediction = pretrained_weight * data.pretrained_output + values @ prompt_weights
        # Rows of the transposed Jacobian, samples along the fast axis.
        bias_rows = prompt_weights * (values[:, None] - prediction)  # (L, n)
        num_experts, _, num_params = key_jacobians.shape
        key_directions = (
            key_jacobians.transpose(0, 2, 1).reshape(num_experts * num_params, -1) @ data.projected_inputs
        ).reshape(num_experts, num_params, data.size)
        jacobian_t = np.empty((num_experts, 1 + num_params, data.size))
        jacobian_t[:, 0, :] = bias_rows
        jacobian_t[:, 1:, :] = bias_rows[:, None, :] * key_directions
        jacobian_t[:, 1:, :] += prompt_weights[:, None, :] * value_gradients[:, :, None]
        return prediction, jacobian_t.reshape(-1, data.size).T


def sample_inputs(rng: np.random.Generator, size: int, input_dim: int) -> np.ndarray:
    """i.i.d. inputs from the uniform distribution on ``[-1, 1]^d`` (bounded, as required)."""
    return rng.uniform(-1.0, 1.0, size=(size, input_dim))
