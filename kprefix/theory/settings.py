"""The known part of the simulated model and the named prompt settings.

A :class:`World` holds everything the paper treats as known: the pre-trained
experts, the projections ``B`` (key, ``d x d_p``) and ``C`` (value, to a
scalar) and, for the one-layer setting, the weights ``W1`` and ``W2``.  It is
drawn once from a seed so every setting, truth and repetition sees the same
pre-trained model.

Settings (``SETTINGS``):

* ``nonshared``: separate ``pK`` and ``pV`` (Theorem 4.1);
* ``shared_linear``: ``pK = pV = p`` (Theorem 4.2);
* ``shared_onelayer``: ``pK = tanh(W1 p)``, ``pV = sigmoid(W2 p)``
  (Theorem 4.3; both activations satisfy A.1 and A.2);
* ``shared_onelayer_linear``: ``pK = W1 p``, ``pV = W2 p`` (identity
  activation, which violates A.2).

Example:
    >>> world = make_world(WorldConfig(input_dim=2, prompt_dim=2, num_pretrained_experts=2, seed=0))
    >>> model = make_model("shared_onelayer", world)
    >>> model.prompts.name, model.params_per_expert
    ('shared_onelayer', 3)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kprefix.theory.model import PretrainedExperts, PrefixMoEModel
from kprefix.theory.prompts import NonSharedPrompts, SharedLinearPrompts, SharedOneLayerPrompts

SETTINGS = ("nonshared", "shared_linear", "shared_onelayer", "shared_onelayer_linear")

# Human-readable descriptions used in reports.
SETTING_DESCRIPTIONS = {
    "nonshared": "non-shared pK, pV (Thm 4.1)",
    "shared_linear": "shared, pK = pV = p (Thm 4.2)",
    "shared_onelayer": "shared, tanh(W1 p) / sigmoid(W2 p) (Thm 4.3)",
    "shared_onelayer_linear": "shared, W1 p / W2 p: linear activation, violates A.2",
}


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    input_dim: int = 2
    prompt_dim: int = 2
    num_pretrained_experts: int = 2
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class World:
    experts: PretrainedExperts
    key_projection: np.ndarray  # B, (d, d_p)
    value_projection: np.ndarray  # C, (d_p,)
    key_weights: np.ndarray  # W1, (d_p, d_p)
    value_weights: np.ndarray  # W2, (d_p, d_p)


def _well_conditioned(rng: np.random.Generator, rows: int, cols: int, scale: float) -> np.ndarray:
    """A random matrix with condition number below 3, so every prompt direction is visible."""
    while True:
        matrix = rng.normal(size=(rows, cols))
        singular_values = np.linalg.svd(matrix, compute_uv=False)
        if singular_values[-1] > 0 and singular_values[0] / singular_values[-1] < 3.0:
            return scale * matrix / singular_values[0]


def make_world(config: WorldConfig) -> World:
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7001]))
    d, d_p, n_experts = config.input_dim, config.prompt_dim, config.num_pretrained_experts
    raw = rng.normal(scale=0.7, size=(n_experts, d, d))
    experts = PretrainedExperts(
        gate_matrices=0.5 * (raw + raw.transpose(0, 2, 1)),
        gate_biases=rng.normal(scale=0.3, size=n_experts),
        expert_weights=rng.normal(size=(n_experts, d)),
    )
    value_projection = rng.normal(size=d_p)
    value_projection *= 1.5 / np.linalg.norm(value_projection)
    return World(
        experts=experts,
        key_projection=_well_conditioned(rng, d, d_p, 2.0),
        value_projection=value_projection,
        key_weights=_well_conditioned(rng, d_p, d_p, 1.5),
        value_weights=_well_conditioned(rng, d_p, d_p, 1.5),
    )


def make_model(setting: str, world: World) -> PrefixMoEModel:
    """The regression model of ``setting`` on the known ``world``."""
    d_p = world.key_projection.shape[1]
    if setting == "nonshared":
        prompts = NonSharedPrompts(d_p, world.value_projection)
    elif setting == "shared_linear":
        prompts = SharedLinearPrompts(d_p, world.value_projection)
    elif setting in ("shared_onelayer", "shared_onelayer_linear"):
        activations = ("tanh", "sigmoid") if setting == "shared_onelayer" else ("identity", "identity")
        prompts = SharedOneLayerPrompts(
            d_p, world.value_projection, world.key_weights, world.value_weights, *activations
        )
    else:
        raise ValueError(f"unknown setting {setting!r}; choose from {', '.join(SETTINGS)}")
    return PrefixMoEModel(world.experts, world.key_projection, prompts)
