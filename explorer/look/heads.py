"""Attention heads up close: how important each head is, how alike two heads are, and where
one head looks in one sentence.

* :func:`head_scores` gathers each attention's per-head scores by a head criterion
  (``l1``, ``taylor``, ``random``: :mod:`explorer.criteria.transformer`) from the shared
  :class:`~explorer.masks.ScoreCache`, as a heads plan ranks them: an (attentions, heads)
  table, drawn as a heatmap of layers by heads.
* :func:`head_similarity` compares the heads of one attention by what they *write*: head
  h's output is its context vectors (columns ``[h*d, (h+1)*d)`` of the output projection's
  input) times its ``d`` columns of the output projection, a vector in the hidden space per
  token. Two heads are alike when these vectors, flattened over every non-padding token of
  the validation set, have a cosine similarity near 1 (Michel et al. 2019 find many heads
  redundant; this shows which pairs). The projection matters: each head's context vectors
  live in a basis of its own, so comparing raw context coordinates of two heads would
  compare unrelated axes, while the projected outputs share the hidden space the residual
  stream adds them into. Streamed: one batch of outputs and a (heads, heads) sum are held,
  never the whole set's.
* :func:`attention_pattern` is one head's attention probabilities on one sentence,
  ``softmax(q k^T / sqrt(d))`` over the keys that are not padding, recomputed from the
  attention's input and the query and key weights (so the figure shows what the head
  computes, not what a library reports): (tokens, tokens), padding rows and columns dropped.

Nothing here writes into the shared model: the hooks that read an attention's input go on
a private copy and are removed in a ``finally``. Padding is what
:meth:`~explorer.bundle.ModelBundle.real_tokens` says it is (a ``pad_id``); a model
without one counts every token.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.bundle import ModelBundle
from explorer.criteria.from_data import private_copy
from explorer.data import ValidationSet
from explorer.errors import DataError
from explorer.groups import HeadGroup
from explorer.masks import ScoreCache

BATCH_SIZE = 64  # sentences per batch of head_similarity (minilm: ~19 MB of head outputs)


@dataclass(frozen=True)
class HeadScores:
    """Per-head scores of every attention by one criterion.

    ``attentions`` names each row (the attention's unit name, its query layer); ``modules``
    its self-attention module; ``scores`` (attentions, max heads) float64, NaN past the
    heads of an attention that has fewer. Within a row, lower scores go first in a plan.
    """

    criterion: str
    attentions: tuple[str, ...]
    modules: tuple[str, ...]
    scores: np.ndarray


def head_scores(bundle: ModelBundle, cache: ScoreCache, criterion: str) -> HeadScores:
    """Each attention's head scores by ``criterion`` (computed once per cache).

    Raises:
        DataError: the model has no attention heads.
        ExplorerError: the criterion needs what the cache lacks (``taylor``: labels).
    """
    groups = _heads_of(bundle)
    scores = np.full((len(groups), max(g.heads for g in groups)), np.nan)
    for row, group in enumerate(groups):
        scores[row, :group.heads] = cache.get("heads", criterion, group.name)[0].double().numpy()
    return HeadScores(criterion, tuple(g.name for g in groups), tuple(g.module for g in groups),
                      scores)


def head_similarity(bundle: ModelBundle, data: ValidationSet, attention: str,
                    batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(heads, heads) cosine similarity of the heads' outputs of ``attention`` (its unit
    name) over ``data``'s non-padding tokens, in ``batch_size`` sentences at a time; 1 on
    the diagonal (0 for a head whose output is zero everywhere)."""
    group = bundle.head_group(attention)
    weight = bundle.params()[bundle.layer(group.output).weight].detach().double()
    per_head = weight.T.reshape(group.heads, group.head_dim, -1)  # (H, d, hidden)
    gram = torch.zeros(group.heads, group.heads, dtype=torch.float64)

    def add(x: torch.Tensor, context: torch.Tensor) -> None:
        tokens = context[_real_tokens(bundle, x, context.shape[:-1])].double()  # (T, H * d)
        outputs = torch.einsum("thd,hdo->tho",
                               tokens.unflatten(-1, (group.heads, group.head_dim)), per_head)
        gram.add_(torch.einsum("tho,tgo->hg", outputs, outputs))

    _stream_input(bundle, data.x, group.output, batch_size, add)
    norms = gram.diagonal().sqrt()
    scale = torch.outer(norms, norms)
    similarity = torch.where(scale > 0, gram / scale, 0.0)
    similarity.diagonal().copy_((norms > 0).double())  # exactly 1, not 1 - rounding
    return similarity.numpy()


@dataclass(frozen=True)
class AttentionPattern:
    """One head's attention on one sentence: ``probabilities`` (tokens, tokens), row i the
    weights query token i gives each key token (each row sums to 1), padding dropped;
    ``positions`` (tokens,) where each kept token sits in the input row."""

    attention: str
    head: int
    positions: np.ndarray
    probabilities: np.ndarray


def attention_pattern(bundle: ModelBundle, row: torch.Tensor, attention: str,
                      head: int) -> AttentionPattern:
    """Head ``head`` of ``attention`` (its unit name) on the one sample ``row``
    (``bundle.input_shape``).

    Raises:
        DataError: ``head`` is not one of the attention's heads.
    """
    group = bundle.head_group(attention)
    if not 0 <= head < group.heads:
        raise DataError(f"{group.module} has heads 0 to {group.heads - 1}; got head {head}.")
    x = row.reshape(1, *bundle.input_shape)
    caught: list[torch.Tensor] = []
    _stream_input(bundle, x, group.module, 1, lambda _x, hidden: caught.append(hidden))
    params, rows = bundle.params(), group.rows(head)
    query, key = (F.linear(caught[0][0].double(),
                           params[bundle.layer(name).weight].detach()[rows].double(),
                           _bias(bundle, name, rows))
                  for name in group.layers[:2])
    keep = _real_tokens(bundle, x, caught[0].shape[:-1])[0]
    scores = (query @ key.T / math.sqrt(group.head_dim))[keep][:, keep]
    return AttentionPattern(attention, head, keep.nonzero().flatten().numpy(),
                            torch.softmax(scores, dim=-1).numpy())


def _heads_of(bundle: ModelBundle) -> tuple[HeadGroup, ...]:
    if not bundle.heads:
        raise DataError(f"{bundle.name} has no attention heads.")
    return bundle.heads


def _bias(bundle: ModelBundle, layer: str, rows: slice) -> torch.Tensor | None:
    name = bundle.layer(layer).bias
    return None if name is None else bundle.params()[name].detach()[rows].double()


def _real_tokens(bundle: ModelBundle, x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Which positions (``shape``: batch, tokens) hold a token, not padding."""
    tokens = bundle.real_tokens(x)
    return torch.ones(shape, dtype=torch.bool) if tokens is None or x.shape != shape else tokens


def _stream_input(bundle: ModelBundle, x: torch.Tensor, module: str, batch_size: int,
                  step: Callable[[torch.Tensor, torch.Tensor], None]) -> None:
    """Run ``x`` through a private copy of the model in batches; ``step(batch, input)``
    gets each batch with the first input of ``module`` in it (B, tokens, features)."""
    model = private_copy(bundle)
    seen: list[torch.Tensor] = []

    def record(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        seen.append((args[0] if args else kwargs["hidden_states"]).detach())

    hook = model.get_submodule(module).register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                batch = x[start:start + batch_size]
                seen.clear()
                model(batch)
                step(batch, seen[0])
    finally:
        hook.remove()
