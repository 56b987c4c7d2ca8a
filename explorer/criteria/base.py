"""What every criterion is: a name, a granularity and ``score(layer, ctx)``; and what it sees.

``score(layer, ctx) -> Tensor`` gives, for ``weights``, one score per weight entry (the
weight's shape); for ``neurons``, one score per output neuron / channel, shape (out,).
Lowest scores go first. :class:`ScoreContext` is all a criterion may look at.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

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
