"""Plotly figures of attention heads: importance (layers x heads), similarity (heads x
heads) and one head's attention pattern (tokens x tokens). Pure plotly and numpy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from explorer.look.heads import AttentionPattern, HeadScores

SCORES = "Viridis"
SIMILARITY = "RdBu_r"  # -1 blue, 0 white, 1 red, as the neuron similarity heatmaps
ATTENTION = "Blues"


def layer_label(module: str) -> str:
    """``bert.encoder.layer.3.attention.self`` -> ``layer 3``; other names as they are."""
    parts = module.split(".")
    numbers = [p for p in parts if p.isdigit()]
    return f"layer {numbers[-1]}" if numbers else module


def importance(table: HeadScores) -> go.Figure:
    """Attentions (rows, first layer on top) by heads (columns), coloured by score; the
    hover says the layer, the head, its score and its rank in its attention (rank 1 is
    removed first by a heads plan of this criterion)."""
    scores = table.scores
    ranks = np.argsort(np.argsort(np.nan_to_num(scores, nan=np.inf), axis=1, kind="stable"),
                       axis=1, kind="stable") + 1
    rows = [layer_label(m) for m in table.modules]
    heads = list(range(scores.shape[1]))
    custom = np.dstack([np.broadcast_to(np.array(table.modules)[:, None], scores.shape),
                        ranks.astype(str)])
    fig = go.Figure(go.Heatmap(
        z=scores, x=heads, y=rows, colorscale=SCORES, customdata=custom,
        colorbar={"title": {"text": table.criterion}},
        hovertemplate="%{y} (%{customdata[0]})<br>head %{x}: score %{z:.4g}<br>"
                      "rank %{customdata[1]} in its attention (1 goes first)<extra></extra>"))
    fig.update_xaxes(title_text="head", dtick=1)
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(title={"text": f"Head importance by {table.criterion}"},
                      height=120 + 28 * len(rows), margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def similarity(matrix: np.ndarray, module: str) -> go.Figure:
    """The heads x heads cosine similarity of one attention's heads' outputs."""
    n = len(matrix)
    fig = go.Figure(go.Heatmap(
        z=matrix, x=list(range(n)), y=list(range(n)), colorscale=SIMILARITY, zmin=-1, zmax=1,
        colorbar={"title": {"text": "cosine"}},
        hovertemplate="head %{y} and head %{x}: cosine %{z:.4f}<extra></extra>"))
    fig.update_xaxes(title_text="head", dtick=1, constrain="domain")
    fig.update_yaxes(title_text="head", dtick=1, autorange="reversed", scaleanchor="x",
                     constrain="domain")
    fig.update_layout(title={"text": f"{layer_label(module)}: how alike the heads' outputs "
                                     "are"}, height=460,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def pattern(result: AttentionPattern, tokens: Sequence[str], module: str) -> go.Figure:
    """Head ``result.head``'s attention on one sentence: row = the token that looks
    (query), column = the token looked at (key); ``tokens`` label the kept positions."""
    labels = [f"{t} ·{p}" for t, p in zip(tokens, result.positions, strict=True)]
    fig = go.Figure(go.Heatmap(
        z=result.probabilities, x=labels, y=labels, colorscale=ATTENTION, zmin=0, zmax=1,
        colorbar={"title": {"text": "attention"}},
        hovertemplate="%{y} looks at %{x}: %{z:.3f}<extra></extra>"))
    fig.update_xaxes(title_text="looked at (key)", tickangle=-45, type="category")
    fig.update_yaxes(title_text="looking (query)", autorange="reversed", type="category")
    fig.update_layout(title={"text": f"{layer_label(module)}, head {result.head}: where each "
                                     "token looks"}, height=520,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig
