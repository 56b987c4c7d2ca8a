"""What a plan removes from each layer, and the Weights page's figures.

Figures take pre-binned histograms (:class:`~explorer.look.stats.Histogram`) or one score per
neuron, never raw weights, so a figure's size does not grow with the layer. Pure plotly:
no Streamlit here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from explorer.bundle import ModelBundle
from explorer.look.stats import Histogram
from explorer.masks import ScoreCache, removal_counts
from explorer.plan import Plan
from explorer.ui.charts.style import KEPT, PRUNED

GRID_COLUMNS = 4
THRESHOLD = "#222222"
# Top right of the whole figure, clear of the title (left) and of subplot titles.
LEGEND = {"orientation": "h", "yref": "container", "y": 1, "yanchor": "top", "x": 1,
          "xanchor": "right"}


@dataclass(frozen=True)
class Cut:
    """What ``plan`` removes from one layer: ``removed`` of ``total`` weights (or neurons,
    or its attention's heads; for blocks, 1 of 1 where its block is dropped).

    ``threshold`` is the largest criterion score among the removed entries (None when none
    is removed): everything scored at or below it goes, except ties cut by the stable order.
    """

    layer: str
    removed: int
    total: int
    threshold: float | None


def plan_cuts(bundle: ModelBundle, plan: Plan, cache: ScoreCache) -> dict[str, Cut]:
    """A :class:`Cut` for every prunable layer, in execution order (global scope included)."""
    counts = removal_counts(bundle, plan, cache)
    cuts = {}
    for layer in bundle.layers:
        k = counts.get(layer.name, 0)
        unit = bundle.unit_of(layer.name, plan.granularity)
        total = math.prod(layer.weight_shape) if plan.granularity == "weights" else (
            bundle.unit_size(plan.granularity, unit) if unit else layer.neurons)
        threshold = None
        # an N:M plan has no one threshold per layer, a blocks plan one score per block
        if k and plan.pattern is None and plan.granularity != "blocks":
            scores, order = cache.get(plan.granularity, plan.criterion, unit)
            threshold = float(scores[order[k - 1]])
        cuts[layer.name] = Cut(layer.name, k, total, threshold)
    return cuts



def thresholds_on_magnitude(plan: Plan) -> bool:
    """Whether the plan's scores are |w|, so its threshold can be drawn on a |w| histogram
    (not for an N:M plan: each group of M has its own)."""
    return (plan.granularity == "weights" and plan.criterion == "magnitude"
            and plan.pattern is None)


MASK_ROWS, MASK_COLUMNS = 16, 32  # the zoom: enough rows and groups to see the pattern


def mask_zoom(mask: torch.Tensor, m: int | None) -> np.ndarray:
    """The top-left corner of a keep-mask laid out as its N:M groups run: rows are output
    neurons, columns the inputs along which groups of ``m`` are consecutive; a convolution's
    (out, in, kh, kw) mask is laid out (kh, kw, out) x in, so the first rows are every
    neuron at kernel position (0, 0). At most MASK_ROWS x MASK_COLUMNS, whole groups of
    ``m`` (None: an unstructured mask, same layout)."""
    rows = mask.permute(2, 3, 0, 1).reshape(-1, mask.shape[1]) if mask.dim() == 4 else mask
    columns = min(MASK_COLUMNS, rows.shape[1])
    if m and columns >= m:
        columns -= columns % m
    return rows[:MASK_ROWS, :columns].numpy()


def mask_view(zoom: np.ndarray, m: int | None, title: str) -> go.Figure:
    """The zoom of a keep-mask (:func:`mask_zoom`) as cells, kept and removed in the page's
    colours, with a line after every group of ``m`` inputs."""
    fig = go.Figure(go.Heatmap(
        z=zoom.astype(int), zmin=0, zmax=1, showscale=False, xgap=1, ygap=1,
        colorscale=[[0, PRUNED], [0.5, PRUNED], [0.5, KEPT], [1, KEPT]],
        customdata=np.where(zoom, "kept", "removed"),
        hovertemplate="output row %{y}, input %{x}: %{customdata}<extra></extra>"))
    for edge in range(m or zoom.shape[1], zoom.shape[1], m or zoom.shape[1]):
        fig.add_vline(x=edge - 0.5, line_color=THRESHOLD, line_width=2)
    fig.update_xaxes(title_text="input (groups run left to right)", dtick=m or None)
    fig.update_yaxes(title_text="output row", autorange="reversed")
    return _finish(fig, title, height=120 + 22 * zoom.shape[0])


def histogram(hist: Histogram, threshold: float | None, title: str) -> go.Figure:
    """One layer's |w| histogram, large: bars left of ``threshold`` shaded as pruned."""
    fig = go.Figure()
    for trace in _histogram_traces(hist, threshold, detail=True):
        fig.add_trace(trace)
    fig.update_xaxes(title_text="|w|", type=_axis_type(hist))
    fig.update_yaxes(title_text="weights per bin")
    return _finish(fig, title, height=380)


def histogram_grid(
    hists: dict[str, Histogram], thresholds: dict[str, float | None]
) -> go.Figure:
    """Small multiples: one |w| histogram per layer, each with its own threshold."""
    fig, cells = _grid(list(hists))
    for name, (row, col) in cells.items():
        hist = hists[name]
        for trace in _histogram_traces(hist, thresholds.get(name), detail=False):
            fig.add_trace(trace, row=row, col=col)
        fig.update_xaxes(type=_axis_type(hist), row=row, col=col)
    _one_legend_entry_each(fig)
    return _finish(fig, "|w| histogram of every layer", height=_grid_height(len(cells)))


def neuron_scores(scores: torch.Tensor, removed: int, title: str, criterion: str) -> go.Figure:
    """One layer's per-neuron scores sorted ascending; the ``removed`` lowest shaded."""
    fig = go.Figure()
    for trace in _neuron_traces(scores, removed):
        fig.add_trace(trace)
    fig.update_xaxes(title_text="neurons, lowest score first")
    fig.update_yaxes(title_text=f"{criterion} score")
    return _finish(fig, title, height=380)


def neuron_score_grid(scores: dict[str, torch.Tensor], removed: dict[str, int]) -> go.Figure:
    """Small multiples: every layer's sorted neuron scores, removed neurons shaded."""
    fig, cells = _grid(list(scores))
    for name, (row, col) in cells.items():
        for trace in _neuron_traces(scores[name], removed.get(name, 0)):
            fig.add_trace(trace, row=row, col=col)
    fig.update_xaxes(showticklabels=False)
    _one_legend_entry_each(fig)
    return _finish(fig, "Sorted neuron scores of every layer",
                   height=_grid_height(len(cells)))


def _histogram_traces(
    hist: Histogram, threshold: float | None, detail: bool
) -> list:
    lo, hi = hist.edges[:-1], hist.edges[1:]
    # Arithmetic middle and full width: the bar spans exactly [lo, hi] on a log axis too.
    middle, width = (lo + hi) / 2, hi - lo
    pruned = lo <= threshold if threshold is not None else np.zeros(lo.shape, dtype=bool)
    traces = []
    for name, colour, part in (("kept", KEPT, ~pruned), ("pruned", PRUNED, pruned)):
        if not part.any():
            continue
        bar = go.Bar(x=middle[part], y=hist.counts[part], width=width[part], name=name,
                     marker={"color": colour, "line": {"width": 0}}, legendgroup=name,
                     hovertemplate="|w| ~ %{x:.3g}: %{y}<extra></extra>")
        if detail:  # the bin's edges on hover; small multiples skip them to stay small
            bar.update(customdata=np.stack([lo[part], hi[part]], axis=1),
                       hovertemplate="|w| %{customdata[0]:.3g} - %{customdata[1]:.3g}<br>"
                                     "%{y} weights<extra></extra>")
        traces.append(bar)
    drawable = threshold is not None and (hist.scale == "linear" or threshold > 0)
    if drawable:
        top = float(hist.counts.max()) if hist.counts.size else 1.0
        traces.append(go.Scatter(
            x=[threshold, threshold], y=[0, top], mode="lines", name="threshold",
            line={"color": THRESHOLD, "width": 1.5, "dash": "dash"}, legendgroup="threshold",
            hovertemplate=f"threshold {threshold:.4g}<extra></extra>",
        ))
    return traces


def _neuron_traces(scores: torch.Tensor, removed: int) -> list:
    order = torch.argsort(scores, stable=True).numpy()
    values = scores.numpy()[order]
    rank = np.arange(order.size)
    traces = []
    for name, colour, part in (("kept", KEPT, rank >= removed), ("pruned", PRUNED, rank < removed)):
        if not part.any():
            continue
        traces.append(go.Bar(
            x=rank[part], y=values[part], name=name, customdata=order[part],
            marker={"color": colour, "line": {"width": 0}}, legendgroup=name,
            hovertemplate="neuron %{customdata}<br>score %{y:.4g}"
                                             "<extra></extra>",
        ))
    return traces


def _axis_type(hist: Histogram) -> str:
    return "log" if hist.scale == "log" else "linear"


def _grid(names: list[str]) -> tuple[go.Figure, dict[str, tuple[int, int]]]:
    cols = min(GRID_COLUMNS, max(len(names), 1))
    rows = max(math.ceil(len(names) / cols), 1)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names,
                        horizontal_spacing=0.06, vertical_spacing=0.3 / rows)
    cells = {name: (i // cols + 1, i % cols + 1) for i, name in enumerate(names)}
    fig.update_annotations(font_size=11)
    return fig, cells


def _one_legend_entry_each(fig: go.Figure) -> None:
    seen = set()
    for trace in fig.data:
        trace.showlegend = trace.name not in seen
        seen.add(trace.name)


def _grid_height(n: int) -> int:
    return 60 + 170 * max(math.ceil(n / GRID_COLUMNS), 1)


def _finish(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(title={"text": title, "font": {"size": 14}}, height=height,
                      barmode="overlay", bargap=0,
                      margin={"l": 10, "r": 10, "t": 70, "b": 10}, legend=LEGEND)
    return fig
