"""Figures for the Latency page: where the time goes per layer beside where the FLOPs go."""

from __future__ import annotations

import plotly.graph_objects as go

from explorer.export.latency import Latency
from explorer.ui.charts.style import DENSE, KEPT, compact


def layer_shares(result: Latency) -> go.Figure:
    """Grouped bars per prunable layer: its share (%) of the fastest pruned form's forward
    time (measured) and of the plan's effective FLOPs (theoretical)."""
    names = [la.name for la in result.layers]
    fig = go.Figure()
    fig.add_bar(x=names, y=[la.time_share * 100 for la in result.layers], name="time",
                marker_color=KEPT, customdata=[la.pruned_ms for la in result.layers],
                hovertemplate="%{x}: %{y:.1f}% of the time (%{customdata:.3f} ms)"
                              "<extra></extra>")
    fig.add_bar(x=names, y=[la.flops_share * 100 for la in result.layers], name="FLOPs",
                marker_color=DENSE,
                hovertemplate="%{x}: %{y:.1f}% of the FLOPs<extra></extra>")
    fig.update_layout(barmode="group", title=f"Where the time goes ({result.form} form) and "
                      "where the FLOPs go", xaxis={"title": "layer", "type": "category"},
                      yaxis={"title": "share (%)"})
    return compact(fig, 360)
