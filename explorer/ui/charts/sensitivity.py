"""The Sensitivity page's figures: one line per unit, and a unit x fraction heatmap; for a
blocks scan (each block kept, then dropped) one bar per block.

A unit is what one scan step prunes: a layer (weights) or a coupled neuron group, labelled
with its members. Both figures take a :class:`~explorer.decide.sensitivity.Sensitivity`, finished
or partial (units not reached have no line or row; a unit stopped midway a shorter one), and
stay small on the wire: at most units x grid points (the grid has at most 20).
"""

from __future__ import annotations

import plotly.graph_objects as go

from explorer.decide.sensitivity import Sensitivity, UnitCurve
from explorer.ui.charts.style import basis

MEASURES = {"accuracy": "accuracy (%)", "loss": "loss (cross-entropy)"}


def unit_label(curve: UnitCurve) -> str:
    """The unit's name, with its coupled members when it has more than itself."""
    if curve.layers == (curve.unit,):
        return curve.unit
    return f"{curve.unit} [{' + '.join(curve.layers)}]"


def _values(curve: UnitCurve, measure: str) -> list[float | None]:
    if measure == "accuracy":
        return [None if a is None else a * 100 for a in curve.accuracy]
    return list(curve.loss)


def unit_lines(
    result: Sensitivity,
    measure: str = "accuracy",
    dense: float | None = None,
    base: float | None = None,
    noun: str = "images",
) -> go.Figure:
    """Accuracy (%) or loss vs % removed, one line per unit; in a screened scan the
    estimates have open markers and the points run on every sample (``noun``: images or
    sentences, as the hover says) filled ones.

    ``dense`` (and ``base``, the base plan's value when it is not the dense model) are the
    reference values of ``measure`` (accuracy as a fraction, loss as is), drawn as dotted
    horizontal lines.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
    fig = go.Figure()
    for curve in result.units:
        label = unit_label(curve)
        fig.add_scatter(
            x=[f * 100 for f in curve.fractions], y=_values(curve, measure),
            customdata=[[flops, loss] for flops, loss in zip(curve.flops_effective, curve.loss,
                                                             strict=True)],
            mode="lines+markers", name=label,
            marker=None if result.exact else {"symbol": [
                "circle-open" if n == result.samples else "circle" for n in curve.samples]},
            hovertext=None if result.exact else [
                basis(n, n != result.samples, noun) for n in curve.samples],
            hovertemplate=(f"<b>{label}</b><br>%{{x:.0f}}% removed<br>{measure} %{{y:.4g}}"
                           + ("" if result.exact else " %{hovertext}") +
                           "<br>loss %{customdata[1]:.4f}"
                           "<br>FLOPs per sample %{customdata[0]:,}<extra></extra>"),
        )
    scale = 100 if measure == "accuracy" else 1
    unit = "%" if measure == "accuracy" else ""
    for name, value, colour in (("dense", dense, "black"), ("base plan", base, "grey")):
        if value is not None:
            fig.add_hline(y=value * scale, line={"dash": "dot", "color": colour, "width": 1},
                          annotation_text=f"{name} {value * scale:.4g}{unit}",
                          annotation_position="bottom left")
    fig.update_layout(
        title=f"{result.granularity} removed from one unit at a time, by {result.criterion}",
        height=440, margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "removed (%)", "range": [-2, 100]},
        yaxis={"title": MEASURES[measure], "rangemode": "tozero"},
        legend={"orientation": "h", "y": -0.18}, showlegend=True, hovermode="closest",
    )
    return fig


def drop_heatmap(result: Sensitivity, reference: float, against: str = "dense") -> go.Figure:
    """Accuracy drop in points (``reference`` - accuracy, both %) per unit and % removed.

    Rows are units in execution order (first at the top), columns the grid; a cell not
    evaluated (a cancelled scan) is empty. ``reference`` is the accuracy (a fraction) the
    drop is measured against (named by ``against``): the dense model's, or the base plan's.
    Red is a loss, blue a gain (pruning a little sometimes helps on a small validation set).
    """
    grid = list(result.grid)
    labels = [unit_label(c) for c in result.units]
    z, text = [], []
    for curve in result.units:
        row: list[float | None] = [None] * len(grid)
        hover = [""] * len(grid)
        for f, acc, loss, flops in zip(curve.fractions, curve.accuracy, curve.loss,
                                       curve.flops_effective, strict=True):
            i = grid.index(f)
            if acc is None:
                continue
            row[i] = (reference - acc) * 100
            hover[i] = (f"accuracy {acc * 100:.2f}%<br>loss {loss:.4f}"
                        f"<br>FLOPs per sample {flops:,}")
        z.append(row)
        text.append(hover)
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{f * 100:.0f}%" for f in grid], y=labels, text=text,
        colorscale="RdBu_r", zmid=0, colorbar={"title": "drop (pts)"},
        hovertemplate=("<b>%{y}</b><br>%{x} removed<br>drop %{z:.2f} pts<br>%{text}"
                       "<extra></extra>"),
    ))
    fig.update_layout(
        title=f"Accuracy drop (points vs {against}) when one unit loses that fraction",
        height=max(220, 60 + 32 * len(labels)), margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "removed", "type": "category"},
        yaxis={"autorange": "reversed", "type": "category"},
    )
    return fig


def block_bars(result: Sensitivity, measure: str = "accuracy", dense: float | None = None,
               noun: str = "images") -> go.Figure:
    """A blocks scan: ``measure`` with each block dropped alone, one bar per block in
    execution order, and the dense model's value (``dense``: accuracy as a fraction, loss as
    is) as a dotted line. The hover gives the FLOPs per sample left and the samples behind
    the bar (``noun``: images or sentences)."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}; got {measure!r}")
    dropped = result.whole_units
    names = [c.unit for c in dropped]
    values = [_values(c, measure)[-1] for c in dropped]
    fig = go.Figure(go.Bar(
        x=names, y=values,
        customdata=[[c.flops_effective[-1], c.loss[-1], c.samples[-1] if c.samples else 0]
                    for c in dropped],
        hovertemplate=(f"<b>%{{x}}</b> dropped<br>{measure} %{{y:.4g}}<br>loss "
                       f"%{{customdata[1]:.4f}}<br>FLOPs per sample %{{customdata[0]:,}}"
                       f"<br>on %{{customdata[2]:,}} {noun}<extra></extra>"),
        marker={"color": "#d62728"}, name="block dropped",
    ))
    scale, unit = (100, "%") if measure == "accuracy" else (1, "")
    if dense is not None:
        fig.add_hline(y=dense * scale, line={"dash": "dot", "color": "black", "width": 1},
                      annotation_text=f"dense {dense * scale:.4g}{unit}",
                      annotation_position="top left")
    fig.update_layout(
        title="Each block dropped alone from the dense model",
        height=max(300, 200 + 4 * len(names)), margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "block dropped", "type": "category"},
        yaxis={"title": MEASURES[measure], "rangemode": "tozero"}, showlegend=False,
    )
    return fig
