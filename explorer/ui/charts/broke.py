"""Figures and thumbnails for the "What pruning broke" page (plotly and numpy, no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from explorer.decide.breakage import Breakage, Flip
from explorer.ui.charts.style import DENSE, PRUNED

THUMBNAIL_PX = 120  # an 8x8 digit becomes 120x120 pixels: 15x15 per pixel, no blur
MIN_FLAT_SIDE = 8  # flat samples of at least 8x8 = 64 values that form a square are images

# diverging, zero white: red where the pruned model puts more images, blue where fewer
CHANGE_SCALE = [[0.0, "#2166AC"], [0.5, "#F7F7F7"], [1.0, "#B2182B"]]


def class_accuracy(result: Breakage, names: Sequence[str] | None = None) -> go.Figure:
    """Grouped bars per true class: dense vs pruned accuracy (%), the change as text.

    A class without validation images has no bar (its accuracy is undefined, not zero).
    ``names`` label the classes (e.g. a text model's topics); default their indices.
    """
    classes = class_labels(result, names)
    dense = result.class_accuracy_dense * 100
    plan = result.class_accuracy_plan * 100
    change = result.class_accuracy_change * 100
    text = ["" if math.isnan(v) or round(v, 1) == 0 else f"{v:+.1f}" for v in change]
    custom = np.stack([result.support, result.correct_dense, result.correct_plan], axis=1)
    fig = go.Figure()
    fig.add_bar(x=classes, y=dense, name="dense", marker_color=DENSE, customdata=custom,
                hovertemplate="class %{x}: dense %{y:.1f}% "
                              "(%{customdata[1]} of %{customdata[0]})<extra></extra>")
    fig.add_bar(x=classes, y=plan, name="pruned", marker_color=PRUNED, customdata=custom,
                text=text, textposition="outside",
                hovertemplate="class %{x}: pruned %{y:.1f}% "
                              "(%{customdata[2]} of %{customdata[0]})<extra></extra>")
    fig.update_layout(
        barmode="group", height=360, margin={"l": 10, "r": 10, "t": 50, "b": 10},
        title="Accuracy per true class (text: change in points)",
        uniformtext={"minsize": 10, "mode": "show"},
        xaxis={"title": "true class", "type": "category"},
        yaxis={"title": "accuracy (%)", "range": [0, 112]},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def confusion_change(result: Breakage, names: Sequence[str] | None = None) -> go.Figure:
    """Heatmap of pruned minus dense confusion counts (rows true, columns predicted),
    labelled by ``names`` as :func:`class_accuracy` is.

    Off the diagonal, red is more images sent to the wrong class; on the diagonal, blue is
    fewer correct. The colour range is set by the off-diagonal cells (the diagonal, which
    sums a whole row's losses, would wash them out); every cell prints its count.
    """
    change = result.confusion_change
    off = change[~np.eye(result.num_classes, dtype=bool)]
    limit = max(1, int(np.abs(off).max()) if off.size else 1)
    text = [[f"{v:+d}" if v else "" for v in row] for row in change.tolist()]
    custom = np.stack([result.confusion_dense, result.confusion_plan], axis=-1)
    labels = class_labels(result, names)
    fig = go.Figure(go.Heatmap(
        z=change, x=labels, y=labels, text=text, texttemplate="%{text}", customdata=custom,
        colorscale=CHANGE_SCALE, zmin=-limit, zmax=limit, zmid=0, xgap=1, ygap=1,
        colorbar={"title": "change"},
        hovertemplate=("true %{y}, predicted %{x}: %{z:+d}<br>dense %{customdata[0]}"
                       " · pruned %{customdata[1]}<extra></extra>"),
    ))
    n = result.num_classes
    fig.add_shape(type="line", x0=-0.5, y0=-0.5, x1=n - 0.5, y1=n - 0.5,
                  line={"color": "rgba(0,0,0,0.25)", "width": 1, "dash": "dot"})
    fig.update_layout(
        title="Confusion change: pruned minus dense", height=440,
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
        xaxis={"title": "predicted class", "type": "category", "side": "bottom"},
        yaxis={"title": "true class", "type": "category", "autorange": "reversed",
               "scaleanchor": "x"},
    )
    return fig


def class_labels(result: Breakage, names: Sequence[str] | None) -> list[str]:
    """Each class's axis label: its name when ``names`` has one per class, else its index."""
    if names is not None and len(names) == result.num_classes:
        return [str(names[c]) for c in result.classes]
    return [str(c) for c in result.classes]


def as_images(x: torch.Tensor) -> np.ndarray | None:
    """Samples as pictures, if they look like pictures: (N, H, W) grey or (N, H, W, 3) RGB.

    Accepts (N, 1, H, W), (N, 3, H, W), (N, H, W), and flat (N, D) where D is a square of
    at least 64 (a flattened 8x8 digit); anything else (tabular data, sequences) is None.
    """
    a = x.detach().cpu().float().numpy()
    if a.ndim == 4 and a.shape[1] == 1:
        return a[:, 0]
    if a.ndim == 4 and a.shape[1] == 3:
        return a.transpose(0, 2, 3, 1)
    if a.ndim == 3:
        return a
    if a.ndim == 2:
        side = math.isqrt(a.shape[1])
        if side >= MIN_FLAT_SIDE and side * side == a.shape[1]:
            return a.reshape(-1, side, side)
    return None


def thumbnail(image: np.ndarray, size: int = THUMBNAIL_PX) -> np.ndarray:
    """``image`` (H, W) or (H, W, 3) as uint8, min-max scaled and enlarged by whole pixels
    (nearest neighbour) to about ``size`` pixels on its long side."""
    lo, hi = float(image.min()), float(image.max())
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    factor = max(1, size // max(image.shape[:2]))
    big = scaled.repeat(factor, axis=0).repeat(factor, axis=1)
    return (big * 255).round().astype(np.uint8)


def caption(flip: Flip) -> str:
    """``true 3 · dense 3 · pruned 8 (#41)``: the label, both predictions, the image index."""
    return f"true {flip.label} · dense {flip.dense} · pruned {flip.plan} (#{flip.index})"
