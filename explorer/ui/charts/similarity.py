"""Plotly figures of the Similarity page. Pure plotly and numpy: no Streamlit here.

The heatmap is drawn as two traces: the colours (a ``Heatmap``, which Streamlit cannot
select on) and an invisible ``Scattergl`` with one point at the centre of every cell, which
carries the cell's two neuron ids in ``customdata`` and reaches Streamlit's ``on_select``.
A WebGL scatter, because an SVG one with 90,000 markers takes tens of seconds to draw. The
overlay wins the hover too: it names the two neurons; the colour bar reads the similarity.

Bytes on the wire stay small: colours are sent as hundredths in one byte per cell, point
coordinates and ids in the smallest unsigned integer type that holds them (plotly encodes
numpy arrays as base64 typed arrays), and past ``OVERLAY_MAX`` cells a side one point
stands for a square group of cells. A 512 x 512 heatmap is about 1.4 MB of JSON, the
digits MLP's 300-neuron fc1 1.1 MB, a 64-neuron layer 60 kB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.graph import Layer
from explorer.look.similarity import Similarity
from explorer.look.stats import Histogram

OVERLAY_MAX = 320  # clickable points per side: every cell of every demo layer
HUNDREDTHS = 100  # colour levels per unit of similarity: z = round((value + 1) * 100)
MEASURE = {"weights": "cosine", "activations": "correlation"}
FIRST, SECOND = "#4C78A8", "#F58518"
DIVERGING = "RdBu_r"


def first_neurons(sim: Similarity) -> np.ndarray:
    """The original index of the first neuron of each display row (m,)."""
    return sim.order[sim.bounds[:-1]]


def overlay_step(sim: Similarity) -> int:
    """How many display cells a side one overlay point stands for (1 up to OVERLAY_MAX)."""
    return math.ceil(sim.matrix.shape[0] / OVERLAY_MAX)


def overlay(sim: Similarity) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The click overlay's points, row by row: ``x``, ``y`` and ``customdata``.

    Point ``k`` sits at the centre of display cell (row ``y``, column ``x``) and carries
    ``customdata[k] = (i, j)``: the original index of the row's neuron and of the column's
    (the first neuron of each block when cells are blocks). With ``overlay_step`` s > 1
    a point sits at the centre of an s x s group of cells and names its first cell.
    """
    m = sim.matrix.shape[0]
    step = overlay_step(sim)
    starts = np.arange(0, m, step)
    centres = starts + (np.minimum(starts + step, m) - starts - 1) / 2
    rows, cols = np.meshgrid(starts, starts, indexing="ij")
    ys, xs = np.meshgrid(centres, centres, indexing="ij")
    first = first_neurons(sim)
    ids = np.stack([first[rows.ravel()], first[cols.ravel()]], axis=1)
    return _compact(xs.ravel()), _compact(ys.ravel()), _compact(ids)


def heatmap(sim: Similarity, kind: str) -> go.Figure:
    """The ordered similarity matrix with its invisible click overlay on top.

    ``kind`` is ``"weights"`` (cosine) or ``"activations"`` (correlation). Axes are labelled
    with the original neuron indices in display order; row 0 is at the top.
    """
    measure = MEASURE[kind]
    m = sim.matrix.shape[0]
    levels = np.rint((np.clip(sim.matrix, -1.0, 1.0) + 1.0) * HUNDREDTHS).astype(np.uint8)
    fig = go.Figure(go.Heatmap(
        z=levels, zmin=0, zmax=2 * HUNDREDTHS, colorscale=DIVERGING, hoverinfo="skip",
        colorbar={"title": {"text": measure}, "tickvals": [0, 50, 100, 150, 200],
                  "ticktext": ["-1", "-0.5", "0", "0.5", "1"]},
    ))
    x, y, ids = overlay(sim)
    who = "neuron" if not sim.reduced else "block of neuron"
    fig.add_trace(go.Scattergl(
        x=x, y=y, customdata=ids, mode="markers", name="cells", showlegend=False,
        marker={"opacity": 0,
                "size": float(np.clip(560 / m * overlay_step(sim), 4, 40))},
        selected={"marker": {"opacity": 1, "color": "black", "size": 9}},
        unselected={"marker": {"opacity": 0}},
        hovertemplate=f"{who} %{{customdata[0]}} · {who} %{{customdata[1]}}<extra></extra>",
    ))
    every = max(1, math.ceil(m / 24))
    ticks = np.arange(0, m, every)
    labels = [str(n) for n in first_neurons(sim)[ticks]]
    axis = {"tickmode": "array", "tickvals": ticks.tolist(), "ticktext": labels,
            "tickfont": {"size": 10}, "showgrid": False, "zeroline": False,
            "range": [-0.5, m - 0.5]}
    fig.update_xaxes(title_text="neuron (clustered order)", constrain="domain", **axis)
    fig.update_yaxes(title_text="neuron", scaleanchor="x", constrain="domain",
                     **{**axis, "range": [m - 0.5, -0.5]})
    fig.update_layout(height=620, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      clickmode="event+select", hovermode="closest")
    return fig


def pair_at(sim: Similarity, point: dict[str, Any]) -> tuple[int, int] | None:
    """The two neurons a selected overlay point stands for, or None for a lone neuron.

    ``point`` is one entry of Streamlit's ``selection["points"]``: its ``customdata`` (a
    list, or a dict ``{"0": i, "1": j}`` as plotly sends typed-array rows) names the
    neurons; without it, ``x`` and ``y`` (display positions) do. On the diagonal of a
    reduced matrix the cell is a block: its first two neurons are compared.
    """
    data = point.get("customdata")
    if isinstance(data, dict):
        data = [data.get("0"), data.get("1")]
    if isinstance(data, list | tuple) and len(data) >= 2 and None not in data[:2]:
        i, j = int(data[0]), int(data[1])
    elif point.get("x") is not None and point.get("y") is not None:
        m, step = sim.matrix.shape[0], overlay_step(sim)
        row, col = (min(m - 1, max(0, int(float(v) // step) * step))
                    for v in (point["y"], point["x"]))
        first = first_neurons(sim)
        i, j = int(first[row]), int(first[col])
    else:
        return None
    if i != j:
        return i, j
    block = int(np.searchsorted(sim.bounds, np.flatnonzero(sim.order == i)[0], "right")) - 1
    if sim.bounds[block + 1] - sim.bounds[block] > 1:
        return i, int(sim.order[sim.bounds[block] + 1])
    return None


@dataclass(frozen=True)
class WeightView:
    """How one neuron's incoming weights are drawn: as an image of ``shape``, or as bars."""

    shape: tuple[int, int] | None
    x_title: str
    y_title: str


def weight_view(layer: Layer, input_shape: tuple[int, ...], first: bool) -> WeightView:
    """An image where the incoming weights have one, else bars.

    * the first layer, linear on a flattened (C, H, W) input: the (C * H, W) input image
      (the digits MLP's fc1: an 8x8 digit);
    * a convolution on one channel: its (kH, kW) kernel;
    * a convolution on several channels: the (C_in, kH * kW) matrix, one row per channel;
    * a 1x1 convolution or a deeper linear layer: a bar per input.
    """
    if layer.kind == "conv2d":
        c_in, kh, kw = layer.weight_shape[1:]
        if kh * kw == 1:
            return WeightView(None, "input channel", "weight")
        if c_in == 1:
            return WeightView((kh, kw), "kernel column", "kernel row")
        return WeightView((c_in, kh * kw), f"{kh}x{kw} kernel position", "input channel")
    fan_in = layer.weight_shape[1]
    if first and len(input_shape) == 3 and fan_in == math.prod(input_shape):
        c, h, w = input_shape
        return WeightView((c * h, w), "pixel column", "pixel row")
    return WeightView(None, "input feature", "weight")


def incoming_weights(rows: np.ndarray, neurons: tuple[int, int], view: WeightView) -> go.Figure:
    """Two neurons' incoming weights side by side, on one colour scale (or one y axis).

    ``rows`` (2, fan_in) are the two neurons' flattened weight rows, in ``neurons`` order.
    """
    i, j = neurons
    fig = make_subplots(rows=1, cols=2, subplot_titles=(f"neuron {i}", f"neuron {j}"),
                        horizontal_spacing=0.08, shared_yaxes=view.shape is None)
    if view.shape is None:
        for col, (row, colour) in enumerate(zip(rows, (FIRST, SECOND), strict=True), 1):
            fig.add_bar(y=row.tolist(), marker_color=colour, name=f"neuron {neurons[col - 1]}",
                        hovertemplate="input %{x}: %{y:.4f}<extra></extra>", row=1, col=col)
        fig.update_yaxes(title_text=view.y_title, row=1, col=1)
    else:
        limit = float(np.abs(rows).max()) or 1.0
        for col, row in enumerate(rows, 1):
            fig.add_heatmap(z=row.reshape(view.shape).tolist(), coloraxis="coloraxis",
                            hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra></extra>",
                            row=1, col=col)
        fig.update_layout(coloraxis={"colorscale": DIVERGING, "cmin": -limit, "cmax": limit,
                                     "colorbar": {"title": {"text": "weight"}}})
        fig.update_yaxes(autorange="reversed")
        fig.update_yaxes(title_text=view.y_title, row=1, col=1)
        h, w = view.shape
        if max(h, w) <= 2 * min(h, w):  # a picture: keep its pixels square
            fig.update_xaxes(constrain="domain")
            fig.update_yaxes(scaleanchor="x", constrain="domain", row=1, col=1)
            fig.update_yaxes(scaleanchor="x2", constrain="domain", row=1, col=2)
    fig.update_xaxes(title_text=view.x_title)
    fig.update_layout(title={"text": f"Incoming weights of neuron {i} and neuron {j}"},
                      height=340, showlegend=False, margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig


def activation_histograms(histograms: tuple[Histogram, Histogram], neurons: tuple[int, int]
                          ) -> go.Figure:
    """Two neurons' activation histograms, overlaid, on a log count axis (after a ReLU the
    bin at 0 dwarfs the rest). Each is pre-binned on its own neuron's range
    (:class:`~explorer.look.layer_summary.NeuronHistograms`), in ``neurons`` order.
    """
    i, j = neurons
    fig = go.Figure()
    for neuron, hist, colour in zip(neurons, histograms, (FIRST, SECOND), strict=True):
        fig.add_trace(histogram_bars(hist, f"neuron {neuron}", colour, opacity=0.6))
    fig.update_layout(title={"text": f"Activations of neuron {i} and neuron {j}"},
                      barmode="overlay", height=340, xaxis_title="activation",
                      yaxis={"title": {"text": "count (log)"}, "type": "log"},
                      margin={"l": 10, "r": 10, "t": 70, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def histogram_bars(hist: Histogram, name: str, colour: str, opacity: float = 1.0) -> go.Bar:
    """A pre-binned histogram as bars: one per bin, as wide as the bin, its range on hover."""
    lo, hi = hist.edges[:-1], hist.edges[1:]
    return go.Bar(x=(lo + hi) / 2, y=hist.counts, width=hi - lo, name=name,
                  marker={"color": colour, "line": {"width": 0}}, opacity=opacity,
                  customdata=np.stack([lo, hi], axis=1),
                  hovertemplate="a in %{customdata[0]:.3g} - %{customdata[1]:.3g}<br>"
                                f"%{{y:,}} values<extra>{name}</extra>")


def _compact(values: np.ndarray) -> np.ndarray:
    """Whole non-negative numbers in the smallest unsigned type; anything else as float32."""
    if values.size and np.all(values >= 0) and np.all(values == np.round(values)):
        return values.astype(np.min_scalar_type(int(values.max())))
    return values.astype(np.float32)
