"""Figures of the Trade-offs page: evaluated plans against the baselines, and two plans compared.

Plans carry their metrics on both parts of the validation data
(:class:`~explorer.decide.held_out.SplitMetrics`); the workspace draws one part's accuracy, while
the Pareto front is always the one chosen on the calibration part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.decide.held_out import SplitMetrics
from explorer.decide.tradeoff import CurvePoint
from explorer.metrics import Metrics
from explorer.ui.charts.style import DENSE, KEPT, PRUNED, basis, compact, estimate_bars
from explorer.ui.format import compressed_bytes

FRONT = "#F58518"
BASELINE_STYLE = {
    "uniform": {"color": "#54A24B", "dash": "solid"},
    "global magnitude": {"color": "#B279A2", "dash": "solid"},
    "random": {"color": DENSE, "dash": "dash"},
}

# axis key -> (title, cost of a plan on that axis)
AXES: dict[str, tuple[str, Callable[[Metrics], float]]] = {
    "flops": ("FLOPs per sample", lambda m: m.flops["effective"]),
    "size": ("size (bytes)", compressed_bytes),
}


def parts(noun: str = "images") -> dict[str, str]:
    """Each part of the validation data by how the page names it (``noun``: images, or a
    text model's sentences)."""
    return {"held_out": f"held-out {noun}", "calibration": f"calibration {noun}"}


@dataclass(frozen=True)
class PlanPoint:
    """One evaluated plan as drawn: its label (the pin's name or a description) and metrics
    on both parts of the data."""

    label: str
    metrics: SplitMetrics
    pinned: bool = False
    current: bool = False


def workspace(
    points: Sequence[PlanPoint],
    fronts: dict[str, Sequence[int]],
    baselines: dict[str, Sequence[CurvePoint]],
    dense: SplitMetrics,
    part: str = "held_out",
    noun: str = "images",
) -> go.Figure:
    """Accuracy on ``part`` vs FLOPs (left) and vs size (right): every evaluated plan, the
    Pareto front of each axis (indices into ``points``, chosen on the calibration part), the
    baseline curves (fitted points per name) and the dense model; its samples are
    ``noun`` (images, or a text model's sentences)."""
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=(
        "Accuracy vs FLOPs per sample", "Accuracy vs size (bytes)"))
    for col, (axis, (_, cost)) in enumerate(AXES.items(), start=1):
        first = col == 1
        xs = [cost(p.metrics.calibration) for p in points]
        ys = [getattr(p.metrics, part).accuracy * 100 for p in points]
        fig.add_scatter(x=xs, y=ys, mode="markers", name="evaluated plans", showlegend=first,
                        marker={"color": KEPT, "size": 7, "opacity": 0.5},
                        text=[p.label for p in points], legendgroup="plans",
                        hovertemplate="%{text}<br>%{x:,.0f}<br>acc %{y:.2f}%<extra></extra>",
                        row=1, col=col)
        front = sorted(fronts.get(axis, ()), key=lambda i: xs[i])
        fig.add_scatter(x=[xs[i] for i in front], y=[ys[i] for i in front],
                        mode="lines+markers", name="Pareto front", showlegend=first,
                        line={"color": FRONT, "width": 2, "shape": "hv"},
                        marker={"color": FRONT, "size": 9}, legendgroup="front",
                        text=[points[i].label for i in front],
                        hovertemplate="Pareto: %{text}<br>%{x:,.0f}<br>acc %{y:.2f}%"
                                      "<extra></extra>", row=1, col=col)
        everything = getattr(dense, part).samples
        for name, curve in baselines.items():
            style = BASELINE_STYLE.get(name, {"color": DENSE, "dash": "dot"})
            measured = [getattr(p.metrics, part) for p in curve]
            fig.add_scatter(x=[cost(p.metrics.calibration) for p in curve],
                            y=[m.accuracy * 100 for m in measured],
                            mode="lines+markers+text", name=name, showlegend=first,
                            legendgroup=name, line={"color": style["color"],
                                                    "dash": style["dash"]},
                            error_y=estimate_bars([
                                None if m.samples == everything else (m.accuracy, m.accuracy_ci)
                                for m in measured]),
                            customdata=[basis(m.samples, m.samples == everything, noun)
                                        for m in measured],
                            text=[f"{p.ratio:g}x" for p in curve], textposition="top center",
                            textfont={"size": 9, "color": style["color"]},
                            hovertemplate=name + " %{text} compression<br>%{x:,.0f}<br>"
                                          "acc %{y:.2f}% %{customdata}<extra></extra>",
                            row=1, col=col)
        marked = [i for i, p in enumerate(points) if p.pinned or p.current]
        fig.add_scatter(x=[xs[i] for i in marked], y=[ys[i] for i in marked],
                        mode="markers+text", name="pinned / current", showlegend=first,
                        legendgroup="pinned", text=[points[i].label for i in marked],
                        textposition="bottom center",
                        marker={"color": PRUNED, "size": 13, "symbol": "star"},
                        hovertemplate="%{text}<br>%{x:,.0f}<br>acc %{y:.2f}%<extra></extra>",
                        row=1, col=col)
        fig.add_scatter(x=[cost(dense.calibration)],
                        y=[getattr(dense, part).accuracy * 100], mode="markers",
                        name="dense model", showlegend=first, legendgroup="dense",
                        marker={"color": "black", "size": 10, "symbol": "diamond"},
                        row=1, col=col)
    fig.update_xaxes(type="log")
    fig.update_yaxes(title_text=f"accuracy (%), {parts(noun)[part]}", row=1, col=1)
    return compact(fig, 420)


def per_class(classes: Sequence[int], accuracy: dict[str, Sequence[float]]) -> go.Figure:
    """Grouped bars: accuracy (%) per class for each named plan."""
    fig = go.Figure()
    colors = [DENSE, KEPT, PRUNED, FRONT]
    for i, (name, values) in enumerate(accuracy.items()):
        fig.add_bar(x=[str(c) for c in classes], y=[v * 100 for v in values], name=name,
                    marker_color=colors[i % len(colors)],
                    hovertemplate=name + ": class %{x}, %{y:.1f}%<extra></extra>")
    fig.update_layout(barmode="group", xaxis_title="class", yaxis_title="accuracy (%)")
    return compact(fig, 320)


def measured_speedup(points: Sequence[PlanPoint], speedups: Sequence[float | None],
                     dense: SplitMetrics, part: str, batch: int, threads: int,
                     noun: str = "images") -> go.Figure:
    """Accuracy on ``part`` vs *measured* speed-up (dense time / the plan's fastest form's,
    at ``batch`` and ``threads``) of the plans measured (``speedups[i]`` None: not yet);
    its samples are ``noun``."""
    measured = [i for i, s in enumerate(speedups) if s is not None]
    ys = [getattr(p.metrics, part).accuracy * 100 for p in points]
    fig = go.Figure()
    fig.add_scatter(x=[speedups[i] for i in measured], y=[ys[i] for i in measured],
                    mode="markers", name="evaluated plans", text=[points[i].label
                                                                  for i in measured],
                    marker={"color": KEPT, "size": 8, "opacity": 0.6},
                    hovertemplate="%{text}<br>measured %{x:.2f}x<br>acc %{y:.2f}%"
                                  "<extra></extra>")
    marked = [i for i in measured if points[i].pinned or points[i].current]
    fig.add_scatter(x=[speedups[i] for i in marked], y=[ys[i] for i in marked],
                    mode="markers+text", name="pinned / current",
                    text=[points[i].label for i in marked], textposition="bottom center",
                    marker={"color": PRUNED, "size": 13, "symbol": "star"},
                    hovertemplate="%{text}<br>measured %{x:.2f}x<br>acc %{y:.2f}%"
                                  "<extra></extra>")
    fig.add_scatter(x=[1.0], y=[getattr(dense, part).accuracy * 100], mode="markers",
                    name="dense model", marker={"color": "black", "size": 10,
                                                "symbol": "diamond"})
    fig.update_layout(title=f"Accuracy vs measured speed-up (batch {batch}, {threads} "
                            "thread(s), this machine)")
    fig.update_xaxes(title_text=f"measured speed-up (batch {batch}, {threads} thread(s))")
    fig.update_yaxes(title_text=f"accuracy (%), {parts(noun)[part]}")
    return compact(fig, 420)
