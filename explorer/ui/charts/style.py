"""What every figure shares: the three colours (kept, pruned, dense) and a compact frame.

Figures stay small on the wire: they take pre-binned or per-layer data, never raw tensors.
"""

from __future__ import annotations

import plotly.graph_objects as go

KEPT, PRUNED, DENSE = "#4C78A8", "#E45756", "#9D9D9D"


def compact(fig: go.Figure, height: int) -> go.Figure:
    """``fig`` at ``height`` pixels with thin margins and the legend below."""
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      showlegend=True, legend={"orientation": "h", "y": -0.2})
    return fig
