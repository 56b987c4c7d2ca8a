"""Importance criteria: how to score what may be removed. Lowest scores go first.

A criterion is an object with a ``granularity`` and one method,
``score(layer, ctx) -> Tensor``: for ``weights``, one score per weight entry (the weight's
shape); for ``neurons``, one score per output neuron / channel, shape (out,). Criteria are
registered by the names the plan JSON, the CLI and the app share.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from explorer.errors import PlanError
from explorer.graph import Layer

if TYPE_CHECKING:
    from explorer.bundle import ModelBundle
    from explorer.data import ValidationSet


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may look at: the model's parameters and the validation data.

    Both are shared and read-only. ``data`` is None where no data is loaded; a criterion
    that needs it says so with a :class:`PlanError`.
    """

    bundle: ModelBundle
    data: ValidationSet | None = None

    def weight(self, layer: Layer) -> torch.Tensor:
        return self.bundle.params()[layer.weight].detach()


class Criterion(Protocol):
    name: str
    granularity: str

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor: ...


@dataclass(frozen=True)
class Magnitude:
    """|w|: the smallest weights matter least (Han et al. 2015); what ``l1_unstructured`` uses."""

    name: str = "magnitude"
    granularity: str = "weights"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        return ctx.weight(layer).abs()


@dataclass(frozen=True)
class NeuronNorm:
    """The Lp norm of each neuron's incoming weights (Li et al. 2017 use L1 for filters)."""

    name: str
    p: int
    granularity: str = "neurons"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        w = ctx.weight(layer).flatten(1)
        return w.abs().sum(1) if self.p == 1 else w.pow(2).sum(1).sqrt()


@dataclass(frozen=True)
class Random:
    """Uniform random scores, seeded by the layer's name: the control every criterion must beat."""

    granularity: str
    name: str = "random"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(layer.name.encode()))
        shape = layer.weight_shape if self.granularity == "weights" else (layer.neurons,)
        return torch.rand(shape, generator=gen)


REGISTRY: dict[tuple[str, str], Criterion] = {
    (c.granularity, c.name): c
    for c in (
        Magnitude(),
        Random("weights"),
        NeuronNorm("l1", 1),
        NeuronNorm("l2", 2),
        Random("neurons"),
    )
}


def criterion(granularity: str, name: str) -> Criterion:
    """The registered criterion ``name`` for ``granularity``."""
    try:
        return REGISTRY[(granularity, name)]
    except KeyError:
        names = [n for g, n in REGISTRY if g == granularity]
        raise PlanError(
            f"No criterion {name!r} for {granularity}; choose one of: {', '.join(names)}."
        ) from None
