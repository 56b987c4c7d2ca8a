"""What every figure shares: the three colours (kept, pruned, dense) and a compact frame.

Figures stay small on the wire: they take pre-binned or per-layer data, never raw tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

KEPT, PRUNED, DENSE = "#4C78A8", "#E45756", "#9D9D9D"


def compact(fig: go.Figure, height: int) -> go.Figure:
    """``fig`` at ``height`` pixels with thin margins and the legend below."""
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      showlegend=True, legend={"orientation": "h", "y": -0.2})
    return fig


def estimate_bars(estimates: Sequence[tuple[float, tuple[float, float]] | None]) -> dict | None:
    """Plotly error bars (percentage points) for the points that are estimates: each given as
    (accuracy, its 95% interval), None for an exact point (no bar); None when all are exact."""
    if all(e is None for e in estimates):
        return None
    up = [0 if e is None else (e[1][1] - e[0]) * 100 for e in estimates]
    down = [0 if e is None else (e[0] - e[1][0]) * 100 for e in estimates]
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down,
            "thickness": 1, "width": 3}


def basis(samples: int, exact: bool, noun: str = "images") -> str:
    """A hover's note on what a point stands on: nothing when exact, else its samples
    (``noun``: images, or a text model's sentences)."""
    return "" if exact else f"(estimate on {samples} {noun})"
