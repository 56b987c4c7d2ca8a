"""Criteria computed from the weights alone: magnitude, neuron norms, redundancy, random.

They need no validation data, so they work for an architecture-only model too. The shape
every criterion has is in :mod:`explorer.criteria.base`; those that need data are in
:mod:`explorer.criteria.from_data`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from explorer.graph import Layer

if TYPE_CHECKING:
    from explorer.criteria.base import ScoreContext


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


def incoming(layer: Layer, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Each neuron's incoming weights as one row, its bias appended: (neurons, fan_in [+ 1]).

    A convolution's (out, in, kh, kw) weight gives rows of in * kh * kw entries.
    """
    rows = params[layer.weight].detach().flatten(1)
    if layer.bias is None:
        return rows
    return torch.cat([rows, params[layer.bias].detach()[:, None]], dim=1)


def cosine_matrix(rows: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every pair of rows (n, d) -> (n, n); a zero row has cosine 0."""
    unit = F.normalize(rows.double(), dim=1)
    return unit @ unit.T


@dataclass(frozen=True)
class Redundancy:
    """Neurons whose incoming weights nearly duplicate a stronger neuron's go first.

    After Srinivas & Babu 2015 ("Data-free Parameter Pruning for Deep Neural Networks",
    BMVC, arXiv:1507.06149), who remove a neuron whose weights duplicate another's and fold
    it into that twin. With ``v_i`` the incoming weights of neuron i with its bias appended
    (:func:`incoming`, shape (neurons, fan_in + 1))::

        score_i = 1 - max_{j stronger than i} cos(v_i, v_j)

    "Stronger" means a larger norm ``||v_j||``; between equal norms the lower index is the
    stronger, so of two exact duplicates the later one scores 0 and goes first. The
    strongest neuron has no stronger one: its score is 2 (as if its best cosine were -1).
    Scores lie in [0, 2], shape (neurons,). Memory: a (neurons, neurons) matrix.
    A plan's ``merge`` option folds each removed neuron into its twin instead of dropping
    it (see :mod:`explorer.masks`).
    """

    name: str = "redundancy"
    granularity: str = "neurons"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        rows = incoming(layer, ctx.bundle.params()).double()
        norms = rows.norm(dim=1)
        index = torch.arange(len(norms))
        stronger = (norms[None, :] > norms[:, None]) | (
            (norms[None, :] == norms[:, None]) & (index[None, :] < index[:, None])
        )
        cos = cosine_matrix(rows).masked_fill(~stronger, -1.0)
        return (1 - cos.max(dim=1).values).float()


@dataclass(frozen=True)
class Random:
    """Uniform random scores, seeded by the layer's name: the control every criterion must beat."""

    granularity: str
    name: str = "random"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(layer.name.encode()))
        if self.granularity in ("heads", "blocks"):  # ``layer`` is a HeadGroup or a Block
            shape = (layer.heads,) if self.granularity == "heads" else (1,)
        else:
            shape = layer.weight_shape if self.granularity == "weights" else (layer.neurons,)
        return torch.rand(shape, generator=gen)


