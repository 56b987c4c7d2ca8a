"""The Learn page's figure and table: a lesson's experiment drawn from its plain data.

An experiment returns a :class:`~explorer.lessons.outcome.Chart` (bars or lines, optional
error bars, a marker line, a log axis) and a table of raw numbers with a unit per column;
this module turns them into a plotly figure and rows of text formatted as every other page
formats them (:mod:`explorer.ui.format`). Pure plotly, no Streamlit.
"""

from __future__ import annotations

import plotly.graph_objects as go

from explorer.lessons.outcome import Chart, Column, Outcome, Series
from explorer.ui.charts.compare import CONTROL
from explorer.ui.charts.style import DENSE, KEPT, PRUNED, compact
from explorer.ui.format import count, nbytes, percent

HEIGHT = 380


def _errors(series: Series) -> dict | None:
    if series.error is None:
        return None
    return {"type": "data", "symmetric": False, "thickness": 1, "width": 3,
            "array": [hi - y for y, (_, hi) in zip(series.y, series.error, strict=True)],
            "arrayminus": [y - lo for y, (lo, _) in zip(series.y, series.error, strict=True)]}


def figure(chart: Chart) -> go.Figure:
    """The experiment's figure: one trace per series (the random control dashed grey)."""
    fig = go.Figure()
    for series in chart.series:
        control = {"dash": "dash", "color": DENSE} if series.name == CONTROL else None
        if chart.kind == "bar":
            fig.add_bar(x=list(series.x), y=list(series.y), name=series.name,
                        error_y=_errors(series), marker_color=KEPT)
        else:
            fig.add_scatter(x=list(series.x), y=list(series.y), name=series.name,
                            mode="lines+markers", line=control, error_y=_errors(series))
    if chart.marker is not None:
        fig.add_vline(x=chart.marker, line={"dash": "dot", "color": PRUNED, "width": 2},
                      annotation_text=chart.marker_label, annotation_position="top")
    fig.update_layout(title=chart.title, xaxis={"title": chart.x_title,
                                                "type": "log" if chart.log_x else None},
                      yaxis={"title": chart.y_title, "rangemode": "tozero"}, bargap=0.1)
    return compact(fig, HEIGHT)


def cell(value: object, column: Column) -> str:
    """One table value as the app writes it, in its column's unit."""
    if isinstance(value, str):
        return value
    formats = {"%": percent, "count": count, "bytes": nbytes, "x": lambda v: f"{v:.2f}x",
               "ms": lambda v: f"{v:.1f} ms", "number": lambda v: f"{v:.4f}"}
    return formats.get(column.unit, str)(value)


def table(outcome: Outcome) -> list[dict[str, str]]:
    """The experiment's table as text rows, columns in the experiment's order."""
    return [{c.name: cell(row[c.name], c) for c in outcome.columns} for row in outcome.table]
