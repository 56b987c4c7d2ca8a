"""The Compare page's figure: accuracy vs % removed, one line per criterion (pure plotly)."""

from __future__ import annotations

import plotly.graph_objects as go

from explorer.decide.compare_criteria import Point
from explorer.ui.charts.style import DENSE, basis, estimate_bars

CONTROL = "random"  # drawn dashed and grey: the line every criterion must stay above


def criteria_lines(curves: dict[str, list[Point]], dense_accuracy: float, title: str,
                   noun: str = "images") -> go.Figure:
    """One line per criterion (accuracy % vs % removed; hover: FLOPs per sample and loss).

    The dense model's accuracy is a horizontal dotted reference line. A screened point
    (an estimate on the stratified subset) has error bars for its 95% interval, an open
    marker, and says so on hover with its number of samples (``noun``: images or sentences).
    """
    fig = go.Figure()
    for name, points in curves.items():
        control = name == CONTROL
        fig.add_scatter(
            x=[p.fraction * 100 for p in points], y=[p.accuracy * 100 for p in points],
            customdata=[[p.flops_effective, p.loss, basis(p.samples, p.exact, noun)]
                        for p in points],
            mode="lines+markers", name=name,
            line={"dash": "dash", "color": DENSE} if control else None,
            marker={"symbol": ["circle" if p.exact else "circle-open" for p in points]},
            error_y=estimate_bars([None if p.exact or p.accuracy_ci is None
                                   else (p.accuracy, p.accuracy_ci) for p in points]),
            hovertemplate=(f"<b>{name}</b><br>%{{x:.0f}}% removed<br>accuracy %{{y:.2f}}%"
                           " %{customdata[2]}<br>FLOPs per sample %{customdata[0]:,}"
                           "<br>loss %{customdata[1]:.4f}<extra></extra>"),
        )
    fig.add_hline(y=dense_accuracy * 100, line={"dash": "dot", "color": "black", "width": 1},
                  annotation_text=f"dense {dense_accuracy * 100:.2f}%",
                  annotation_position="bottom left")
    fig.update_layout(
        title=title, height=440, margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "removed (%)", "range": [-2, 100]},
        yaxis={"title": "accuracy (%)", "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.18}, hovermode="closest",
    )
    return fig

