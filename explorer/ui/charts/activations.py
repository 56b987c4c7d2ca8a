"""The Activations page's figures, drawn from :class:`~explorer.look.stats.ActivationStats`.

Everything arrives pre-reduced (a fixed-size histogram, one number per neuron), so a figure
stays a few kB whatever the data set. Pure plotly: no Streamlit here.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.look.stats import ActivationStats
from explorer.ui.charts.style import KEPT, PRUNED
from explorer.ui.charts.weights import LEGEND


def distribution(stats: ActivationStats, title: str, log_counts: bool = False) -> go.Figure:
    """Histogram of every activation value of one layer (all images, neurons, positions)."""
    hist = stats.histogram
    lo, hi = hist.edges[:-1], hist.edges[1:]
    fig = go.Figure(go.Bar(
        x=(lo + hi) / 2, y=hist.counts, width=hi - lo, name="activations",
        marker={"color": KEPT, "line": {"width": 0}},
        customdata=np.stack([lo, hi], axis=1),
        hovertemplate="a in %{customdata[0]:.3g} - %{customdata[1]:.3g}<br>%{y:,} values"
                      "<extra></extra>",
    ))
    fig.update_xaxes(title_text="activation value")
    fig.update_yaxes(title_text="values per bin", type="log" if log_counts else "linear")
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=320, bargap=0,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    return fig


def per_neuron(stats: ActivationStats, title: str) -> go.Figure:
    """Mean |activation| and APoZ of each neuron, by index; dead neurons in another colour."""
    neurons = np.arange(stats.mean_abs.size)
    dead = np.zeros(neurons.size, dtype=bool)
    dead[stats.dead] = True
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("Mean |activation| per neuron",
                                        "APoZ: fraction of zero outputs per neuron"))
    for row, values, fmt in ((1, stats.mean_abs, ".4g"), (2, stats.apoz, ".1%")):
        for name, colour, part in (("alive", KEPT, ~dead), ("dead", PRUNED, dead)):
            if not part.any():
                continue
            fig.add_bar(x=neurons[part], y=values[part], name=name, legendgroup=name,
                        marker={"color": colour, "line": {"width": 0}}, showlegend=row == 1,
                        hovertemplate=f"neuron %{{x}}<br>%{{y:{fmt}}}<extra></extra>",
                        row=row, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=2, col=1)
    fig.update_xaxes(title_text="neuron", row=2, col=1)
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=460, bargap=0.1,
                      barmode="overlay", margin={"l": 10, "r": 10, "t": 80, "b": 10},
                      legend=LEGEND)
    return fig
