"""Importance criteria: how to score what may be removed. Lowest scores go first.

Every criterion is registered here under the name the plan JSON, the CLI and the app share
(:data:`explorer.plan.CRITERIA` lists them; a test holds the two equal). What a criterion
is and sees: :mod:`explorer.criteria.base`; those computed from the weights alone:
:mod:`explorer.criteria.from_weights`; those that need validation data:
:mod:`explorer.criteria.from_data`; Wanda (|w| times its input's norm):
:mod:`explorer.criteria.wanda`; attention heads and
transformer blocks: :mod:`explorer.criteria.transformer`.
"""

from __future__ import annotations

from explorer.criteria.base import Criterion
from explorer.criteria.from_data import APoZ, MeanActivation, Taylor, WeightTaylor
from explorer.criteria.from_weights import Magnitude, NeuronNorm, Random, Redundancy
from explorer.criteria.transformer import BlockInfluence, HeadNorm, HeadTaylor
from explorer.criteria.wanda import Wanda
from explorer.errors import PlanError, short
from explorer.plan import criterion_names

REGISTRY: dict[tuple[str, str], Criterion] = {
    (c.granularity, c.name): c
    for c in (
        Magnitude(),
        Wanda(),
        WeightTaylor(),
        Random("weights"),
        NeuronNorm("l1", 1),
        NeuronNorm("l2", 2),
        MeanActivation(),
        APoZ(),
        Redundancy(),
        Taylor(),
        Random("neurons"),
        HeadNorm(),
        HeadTaylor(),
        Random("heads"),
        BlockInfluence(),
        Random("blocks"),
    )
}


def criterion(granularity: str, name: str) -> Criterion:
    """The registered criterion ``name`` for ``granularity``."""
    try:
        return REGISTRY[(granularity, name)]
    except KeyError:
        names = criterion_names(granularity)  # raises for an unknown granularity
        raise PlanError(
            f"No criterion {short(name)} for {granularity}; choose one of: {', '.join(names)}."
        ) from None
