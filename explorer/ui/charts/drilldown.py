"""Plotly figures of one neuron: its weights, its activations, its top images, an attribution.

Pure plotly and numpy: no Streamlit here. Images are drawn as heatmaps (crisp pixels at
any size; an 8x8 digit is 64 numbers on the wire), greyscale with ink dark on white.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.look.stats import Histogram
from explorer.ui.charts.similarity import DIVERGING, FIRST, WeightView, histogram_bars

GREYS = "Greys"  # 0 white, 1 black: a digit's ink (high values) is dark


def picture(sample: np.ndarray) -> np.ndarray:
    """One sample as a 2-D array to draw: a (C, H, W) image averaged over its channels,
    an (H, W) image as it is, anything else as one row of its values."""
    sample = np.asarray(sample, dtype=np.float32)
    if sample.ndim == 3:
        return sample.mean(axis=0)
    if sample.ndim == 2:
        return sample
    return sample.reshape(1, -1)


def top_images(pictures: np.ndarray, indices: np.ndarray, values: np.ndarray,
               neuron: int) -> go.Figure:
    """A row of the images a neuron responds to most, highest first.

    ``pictures`` (k, H, W) are the images (see :func:`picture`), ``indices`` (k,) their
    indices in the validation set and ``values`` (k,) the neuron's activation on each.
    """
    k = len(pictures)
    fig = make_subplots(rows=1, cols=k, horizontal_spacing=0.015,
                        subplot_titles=[f"#{int(n)}<br>a = {v:.3g}"
                                        for n, v in zip(indices, values, strict=True)])
    lo, hi = float(pictures.min()), float(pictures.max())
    for col, (image, index) in enumerate(zip(pictures, indices, strict=True), 1):
        fig.add_heatmap(z=image, zmin=lo, zmax=hi if hi > lo else lo + 1, colorscale=GREYS,
                        showscale=False, name=f"image {int(index)}",
                        hovertemplate=f"image {int(index)}<br>row %{{y}}, column %{{x}}: "
                                      "%{z:.3f}<extra></extra>", row=1, col=col)
        _square(fig, col)
    fig.update_annotations(font={"size": 11})
    fig.update_layout(title={"text": f"Neuron {neuron}: the {k} validation images it "
                                     "responds to most", "font": {"size": 14}},
                      height=200, margin={"l": 10, "r": 10, "t": 80, "b": 5})
    return fig


def attribution(image: np.ndarray, conductance: np.ndarray, neuron: int, index: int,
                target: int) -> go.Figure:
    """An image beside its attribution map, on a colour scale symmetric about 0.

    ``image`` and ``conductance`` are 2-D (see :func:`picture`; sum a multi-channel
    attribution over its channels before): red pixels raise the ``target`` logit through
    the neuron, blue ones lower it.
    """
    limit = float(np.abs(conductance).max()) or 1.0
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=(f"image #{index}", "conductance"))
    fig.add_heatmap(z=image, colorscale=GREYS, showscale=False, name="image",
                    hovertemplate="row %{y}, column %{x}: %{z:.3f}<extra></extra>",
                    row=1, col=1)
    fig.add_heatmap(z=conductance, colorscale=DIVERGING, zmin=-limit, zmax=limit,
                    name="conductance", colorbar={"title": {"text": "conductance"}},
                    hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra></extra>",
                    row=1, col=2)
    for col in (1, 2):
        _square(fig, col)
    fig.update_layout(title={"text": f"Neuron {neuron}: conductance toward class {target} "
                                     f"on image #{index}", "font": {"size": 14}},
                      height=300, margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig


def incoming_weights(row: np.ndarray, neuron: int, view: WeightView) -> go.Figure:
    """One neuron's incoming weights (``row``, its flattened weight row) as ``view`` says:
    an image on a colour scale symmetric about 0, or a bar per input."""
    if view.shape is None:
        fig = go.Figure(go.Bar(y=row, marker_color=FIRST, name=f"neuron {neuron}",
                               hovertemplate="input %{x}: %{y:.4f}<extra></extra>"))
    else:
        limit = float(np.abs(row).max()) or 1.0
        fig = go.Figure(go.Heatmap(
            z=row.reshape(view.shape), colorscale=DIVERGING, zmin=-limit, zmax=limit,
            colorbar={"title": {"text": "weight"}},
            hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra></extra>"))
        h, w = view.shape
        fig.update_yaxes(autorange="reversed", dtick=1 if h <= 16 else None)
        fig.update_xaxes(dtick=1 if w <= 16 else None)
        if max(h, w) <= 2 * min(h, w):
            fig.update_yaxes(scaleanchor="x", constrain="domain")
            fig.update_xaxes(constrain="domain")
    fig.update_xaxes(title_text=view.x_title)
    fig.update_yaxes(title_text=view.y_title)
    fig.update_layout(title={"text": f"Neuron {neuron}: incoming weights"}, height=340,
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    return fig


def activation_histogram(hist: Histogram, neuron: int) -> go.Figure:
    """One neuron's pre-binned activations (samples, and positions for a convolution) on a
    log count axis (after a ReLU the bin at 0 dwarfs the rest)."""
    fig = go.Figure(histogram_bars(hist, f"neuron {neuron}", FIRST))
    fig.update_layout(title={"text": f"Neuron {neuron}: activations"}, height=340,
                      xaxis_title="activation", bargap=0,
                      yaxis={"title": {"text": "count (log)"}, "type": "log"},
                      margin={"l": 10, "r": 10, "t": 50, "b": 10}, showlegend=False)
    return fig


def _square(fig: go.Figure, col: int) -> None:
    """Square pixels, row 0 at the top, no ticks: subplot ``col`` of row 1 is a picture."""
    x = "x" if col == 1 else f"x{col}"
    fig.update_xaxes(visible=False, constrain="domain", row=1, col=col)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor=x, constrain="domain",
                     row=1, col=col)
