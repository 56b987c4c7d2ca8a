"""Criteria for a transformer's own units: attention heads and whole blocks.

For heads, ``score(group, ctx)`` takes a :class:`~explorer.groups.HeadGroup` (not a layer)
and returns (heads,): ``l1`` needs the weights alone, ``taylor`` the labelled validation
set. For blocks, ``score(block, ctx)`` takes a :class:`~explorer.groups.Block` and returns
(1,): ``influence`` needs the validation inputs (no labels). ``random``
(:class:`explorer.criteria.from_weights.Random`) needs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from explorer.criteria.from_data import (
    BATCH_SIZE,
    mean_gradient_x_activation,
    needs_data,
    needs_labels,
    private_copy,
)

if TYPE_CHECKING:
    from explorer.criteria.base import ScoreContext
    from explorer.groups import Block, HeadGroup


@dataclass(frozen=True)
class HeadNorm:
    """The L1 norm of everything one head owns: its rows of the query, key and value weights
    and its columns of the output projection (biases left out). Every head of an attention
    owns as many weights, so this ranks heads as their mean |w| does."""

    name: str = "l1"
    granularity: str = "heads"

    def score(self, group: HeadGroup, ctx: ScoreContext) -> torch.Tensor:
        params, dim = ctx.bundle.params(), group.head_dim
        total = torch.zeros(group.heads, dtype=torch.float64)
        for la in group.layers[:3]:
            rows = params[ctx.bundle.layer(la).weight].detach().abs().double()
            total += rows.view(group.heads, dim, -1).sum((1, 2))
        out = params[ctx.bundle.layer(group.output).weight].detach().abs().double()
        total += out.view(out.shape[0], group.heads, dim).sum((0, 2))
        return total.float()


@dataclass(frozen=True)
class HeadTaylor:
    """Head importance from a gate's gradient (Michel, Levy & Neubig 2019, "Are Sixteen
    Heads Really Better than One?", arXiv:1905.10650).

    A gate xi_h multiplying head h's output (1 in the model) has the gradient
    ``dL/dxi_h = sum over tokens and the head's features of c * dL/dc``, c being the
    output projection's input (the heads' outputs side by side). The score is
    ``E_x |dL(x)/dxi_h|``: per sentence, the absolute value, then the mean over the
    validation set, with ``L`` the cross-entropy against the true labels. Taken with
    captum's ``LayerGradientXActivation`` on the output projection's input, on a private
    copy of the model.
    """

    name: str = "taylor"
    granularity: str = "heads"

    def score(self, group: HeadGroup, ctx: ScoreContext) -> torch.Tensor:
        data = needs_labels(ctx, self.name)
        model = private_copy(ctx.bundle)

        def per_sample(product: torch.Tensor) -> torch.Tensor:  # (N, tokens, heads x dim)
            per_head = product.flatten(1, -2).unflatten(-1, (group.heads, group.head_dim))
            return per_head.sum((1, 3)).abs()

        return mean_gradient_x_activation(model, model.get_submodule(group.output), data,
                                          per_sample, at_input=True)


@dataclass(frozen=True)
class BlockInfluence:
    """Block influence (Men et al. 2024, "ShortGPT: Layers in Large Language Models are
    More Redundant Than You Expect", arXiv:2403.03853): ``BI = 1 - E[cos(x_in, x_out)]``,
    the mean over the validation set's tokens of the cosine similarity between a token's
    hidden state entering the block and leaving it. A block that barely turns its input
    has a low BI and is dropped first. Padding tokens are left out where the model says
    which they are (:meth:`~explorer.bundle.ModelBundle.real_tokens`); otherwise every
    token counts. In a residual
    CNN block a "token" is one position of the feature map, its state the channels there.
    """

    name: str = "influence"
    granularity: str = "blocks"

    def score(self, block: Block, ctx: ScoreContext) -> torch.Tensor:
        data = needs_data(ctx, self.name)
        model = private_copy(ctx.bundle)
        seen: list[torch.Tensor] = []

        def record(_, args, output):  # a token's state: its features (channels of an image)
            dim = 1 if output.dim() == 4 else -1
            seen.append(F.cosine_similarity(args[0].double(), output.double(), dim=dim))

        hook = model.get_submodule(block.name).register_forward_hook(record)
        total, count = 0.0, 0
        try:
            with torch.no_grad():
                for start in range(0, len(data), BATCH_SIZE):
                    x = data.x[start:start + BATCH_SIZE]
                    seen.clear()
                    model(x)
                    cosine = seen[0]
                    tokens = ctx.bundle.real_tokens(x)
                    if tokens is not None and cosine.shape == x.shape:
                        cosine = cosine[tokens]
                    total += float(cosine.sum())
                    count += cosine.numel()
        finally:
            hook.remove()
        return torch.tensor([1 - total / max(count, 1)], dtype=torch.float32)
