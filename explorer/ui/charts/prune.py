"""The Prune page's figures: what each layer keeps, and the plans tried so far vs their cost."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.metrics import Metrics
from explorer.plan import Plan
from explorer.ui.charts.style import DENSE, KEPT, PRUNED, compact
from explorer.ui.format import compressed_bytes, describe


def per_layer(metrics: Metrics) -> go.Figure:
    """Sparsity, remaining parameters and FLOPs (dense vs effective) per prunable layer."""
    names = [la.name for la in metrics.layers]
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "Weights removed (%)", "Parameters (nonzero / all)", "FLOPs per sample"))
    fig.add_bar(x=names, y=[la.sparsity * 100 for la in metrics.layers], name="removed %",
                marker_color=PRUNED, row=1, col=1)
    fig.add_bar(x=names, y=[la.params for la in metrics.layers], name="all params",
                marker_color=DENSE, row=1, col=2)
    fig.add_bar(x=names, y=[la.nonzero_params for la in metrics.layers], name="nonzero",
                marker_color=KEPT, row=1, col=2)
    fig.add_bar(x=names, y=[la.flops_dense for la in metrics.layers], name="dense FLOPs",
                marker_color=DENSE, row=1, col=3)
    fig.add_bar(x=names, y=[la.flops_effective for la in metrics.layers],
                name="effective FLOPs", marker_color=KEPT, row=1, col=3)
    fig.update_yaxes(range=[0, 100], row=1, col=1)
    fig.update_layout(barmode="overlay")
    return compact(fig, 320)


def tradeoff(history: list[tuple[Plan, Metrics]], current: Plan, dense: Metrics) -> go.Figure:
    """Every evaluated plan: accuracy vs FLOPs and vs size; the current one highlighted."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=(
        "Accuracy vs FLOPs per sample", "Accuracy vs size (bytes)"))
    plans = [p for p, _ in history]
    points = [m for _, m in history]
    text = [describe(p) for p in plans]
    for col, xs, dense_x in (
        (1, [m.flops["effective"] for m in points], dense.flops["dense"]),
        (2, [compressed_bytes(m) for m in points], dense.size_bytes["dense"]),
    ):
        fig.add_scatter(x=xs, y=[m.accuracy * 100 for m in points], mode="markers",
                        marker={"color": KEPT, "size": 7, "opacity": 0.6}, text=text,
                        hovertemplate="%{text}<br>x %{x:,}<br>acc %{y:.2f}%<extra></extra>",
                        name="evaluated plans", showlegend=col == 1, row=1, col=col)
        mine = [i for i, p in enumerate(plans) if p == current]
        if mine:
            fig.add_scatter(x=[xs[mine[0]]], y=[points[mine[0]].accuracy * 100],
                            mode="markers", marker={"color": PRUNED, "size": 14,
                                                    "symbol": "star"},
                            name="current plan", showlegend=col == 1, row=1, col=col)
        fig.add_scatter(x=[dense_x], y=[dense.accuracy * 100], mode="markers",
                        marker={"color": "black", "size": 10, "symbol": "diamond"},
                        name="dense model", showlegend=col == 1, row=1, col=col)
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text="accuracy (%)", row=1, col=1)
    return compact(fig, 340)
