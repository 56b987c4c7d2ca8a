"""Wanda: a weight's magnitude times the norm of the input feature it multiplies.

Sun, Liu, Bair & Kolter 2023, "A Simple and Effective Pruning Approach for Large Language
Models" (arXiv:2306.11695): the score of weight W[i, j] is ``|W[i, j]| * ||X_j||_2``, where
X_j is input feature j over every token (here: every image and position) of the data. A
weight is unimportant if it is small *or* its input is small.

The input features are the columns of the matrix a layer multiplies: a linear layer's
``in_features`` (every leading dimension of its input counts as a token, bar the padding of
token-id inputs, :meth:`~explorer.bundle.ModelBundle.real_tokens`); a convolution's
unfolded patches, one feature per (input channel, kernel row, kernel column), summed over
every output position with the layer's stride, padding and dilation, exactly as ``F.unfold``
lays them out. Norms come from one streamed pass of the exported program per layer (the
value entering the layer's node), batch by batch.

Comparison groups: the paper compares weights within each output row. An N:M plan does
exactly that (its groups lie within a row). An unstructured plan ranks the scores as it ranks
every criterion: within the layer (per-layer scope) or across layers (global scope); the
paper's Sec. 5 ablates per-layer groups as a (weaker, for LLMs) alternative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from explorer.activations import default_batch
from explorer.criteria.from_data import needs_data
from explorer.graph import Layer

if TYPE_CHECKING:
    from explorer.bundle import ModelBundle
    from explorer.criteria.base import ScoreContext


@dataclass(frozen=True)
class Wanda:
    """|W| * ||X_j||_2 per weight entry, the weight's shape (Sun et al. 2023)."""

    name: str = "wanda"
    granularity: str = "weights"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        data = needs_data(ctx, self.name)
        norms = input_norms(ctx.bundle, layer, data.x)
        return ctx.weight(layer).abs() * norms.to(torch.float32)


def input_norms(bundle: ModelBundle, layer: Layer, x: torch.Tensor) -> torch.Tensor:
    """||X_j||_2 of every input feature of ``layer`` over inputs ``x`` (N, *input_shape),
    shaped to broadcast against the weight: (1, in) for a linear layer, (out, in / groups,
    kh, kw) for a convolution (a grouped one sees only its group's channels). float64."""
    program = bundle.program
    node = program.nodes[program.index_of(layer.node)]
    where = program.index_of(node.args[0].name)
    total = None
    batch = default_batch(bundle)
    for start in range(0, x.shape[0], batch):
        inputs = x[start : start + batch]
        _, state = program.run(inputs, keep=True)
        value = state.values[where].double()
        del state
        tokens = bundle.real_tokens(inputs)
        if layer.kind == "linear" and tokens is not None and value.shape[:2] == tokens.shape:
            value = value * tokens[..., None]  # a padding position's features count 0
        part = _squares(layer, node.args, value)
        total = part if total is None else total + part
    norms = total.sqrt()
    if layer.kind == "linear":
        return norms[None, :]
    out, per_group = layer.weight_shape[:2]
    groups = norms.shape[0] // per_group
    by_group = norms.unflatten(0, (groups, per_group))  # (groups, in / groups, kh, kw)
    return by_group.repeat_interleave(out // groups, dim=0)


def _squares(layer: Layer, args: tuple, value: torch.Tensor) -> torch.Tensor:
    """Sum of squares of each input feature over one batch: (in,) for a linear layer,
    (in, kh, kw) for a convolution (each kernel offset summed over the output positions)."""
    if layer.kind == "linear":
        return value.pow(2).flatten(0, -2).sum(0)
    kh, kw = layer.weight_shape[2:]
    stride, padding, dilation = (_pair(args, i, d) for i, d in ((3, 1), (4, 0), (5, 1)))
    padded = F.pad(value.pow(2), (padding[1], padding[1], padding[0], padding[0]))
    rows = (padded.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    cols = (padded.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = value.new_zeros((value.shape[1], kh, kw))
    for i in range(kh):
        for j in range(kw):
            top, left = i * dilation[0], j * dilation[1]
            window = padded[:, :, top : top + stride[0] * (rows - 1) + 1 : stride[0],
                            left : left + stride[1] * (cols - 1) + 1 : stride[1]]
            out[:, i, j] = window.sum((0, 2, 3))
    return out


def _pair(args: tuple, index: int, default: int) -> tuple[int, int]:
    """Argument ``index`` of an ``aten.conv2d`` node (stride, padding, dilation) as a pair."""
    value = args[index] if len(args) > index else default
    if isinstance(value, int):
        return value, value
    return (int(value[0]), int(value[-1])) if len(value) else (default, default)
