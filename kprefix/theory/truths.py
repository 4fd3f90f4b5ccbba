"""Ground-truth mixing measures ``G* = sum_j exp(b*_j) delta_{q*_j}``.

Two kinds (``TRUTH_KINDS``):

* ``random``: ``L*`` prompt experts drawn at random, kept well apart (distinct
  gates, locations at least ``min_separation`` apart, values ``|C pV*|``
  bounded away from 0).
* ``proof``: the configuration behind the proof of Theorem 4.1.  There, the
  non-shared model is fooled by two prompt experts with the *same* key prompt,
  equal weights and value prompts ``pV ± delta``: their sum contributes
  ``exp((B pK)^T X) (w1 C pV1 + w2 C pV2)``, so only the total weight and the
  weighted mean value are visible in the regression function.  The
  ``nonshared`` truth is exactly that pair.  A shared prompt cannot give two
  experts one key with two values, so for the shared settings the analogue
  is the same pair geometry in ``p``: ``p ± delta u`` with equal weights.
  Remaining experts (when ``L* > 2``) are drawn as in ``random``.

Example:
    >>> import numpy as np
    >>> from kprefix.theory.settings import WorldConfig, make_world, make_model
    >>> model = make_model("nonshared", make_world(WorldConfig()))
    >>> truth = make_truth("proof", model, num_experts=2, seed=0, half_gap=0.5)
    >>> bool(np.allclose(truth.params[0, :2], truth.params[1, :2]))  # one key
    True
    >>> float(abs(truth.params[0, 2] - truth.params[1, 2]))  # values 2 delta apart
    1.0
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kprefix.theory.model import PrefixMoEModel

TRUTH_KINDS = ("random", "proof")


@dataclasses.dataclass(frozen=True)
class MixingMeasure:
    biases: np.ndarray  # (L,) weights exp(b)
    params: np.ndarray  # (L, m)

    @property
    def num_experts(self) -> int:
        return len(self.biases)


def _draw_bias(rng: np.random.Generator) -> float:
    return float(rng.uniform(-0.5, 0.5))


def _draw_params(rng: np.random.Generator, model: PrefixMoEModel) -> np.ndarray:
    return rng.normal(size=model.prompts.num_params)


def _acceptable(
    model: PrefixMoEModel,
    params: np.ndarray,
    min_separation: float,
    min_value: float,
    close_pair_allowed: bool = False,
) -> bool:
    """Whether the experts are well separated, in location and in gate, with visible values.

    With ``close_pair_allowed`` the first two experts (the ``proof`` pair) may be close.
    """
    key_prompts, values, key_jacobians, value_gradients = model.prompts.keys_and_values(params)
    if np.any(np.abs(values) < min_value) or np.any(np.abs(params) > 2.5):
        return False
    # Saturated activations would make the prompt nearly invisible in the data.
    if np.min(np.linalg.svd(key_jacobians, compute_uv=False)) < 0.3:
        return False
    if np.min(np.linalg.norm(value_gradients, axis=1)) < 0.1:
        return False
    locations = model.prompts.location(params)
    gate_vectors = key_prompts @ model.key_projection.T
    for i in range(len(params)):
        for j in range(i):
            if close_pair_allowed and (i, j) == (1, 0):
                continue
            if np.linalg.norm(locations[i] - locations[j]) < min_separation:
                return False
            if np.linalg.norm(gate_vectors[i] - gate_vectors[j]) < 0.5:
                return False
    return True


def make_truth(
    kind: str,
    model: PrefixMoEModel,
    num_experts: int,
    seed: int,
    half_gap: float = 0.5,
    min_separation: float = 1.0,
    min_value: float = 0.3,
) -> MixingMeasure:
    """A ground truth of ``kind`` for ``model``'s setting with ``num_experts`` prompt experts.

    ``half_gap`` is the ``delta`` of the ``proof`` pair.
    """
    if kind not in TRUTH_KINDS:
        raise ValueError(f"unknown truth kind {kind!r}; choose from {', '.join(TRUTH_KINDS)}")
    if kind == "proof" and num_experts < 2:
        raise ValueError("the proof truth needs at least 2 prompt experts")
    name_code = sum(ord(ch) for ch in model.prompts.name + kind)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7002, name_code]))
    for _ in range(100000):
        biases = np.array([_draw_bias(rng) for _ in range(num_experts)])
        params = np.array([_draw_params(rng, model) for _ in range(num_experts)])
        if kind == "proof":
            biases[1] = biases[0]
            if model.prompts.name == "nonshared":
                value_index = model.prompts.prompt_dim
                params[1] = params[0]
                params[0, value_index] += half_gap
                params[1, value_index] -= half_gap
            else:
                direction = rng.normal(size=model.prompts.num_params)
                direction *= half_gap / np.linalg.norm(direction)
                params[1] = params[0] - direction
                params[0] = params[0] + direction
        if _acceptable(model, params, min_separation, min_value, close_pair_allowed=kind == "proof"):
            return MixingMeasure(biases, params)
    raise RuntimeError("could not draw a well-separated ground truth; relax min_separation")
