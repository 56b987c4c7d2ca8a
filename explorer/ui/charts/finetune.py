"""Plotly figures of the Fine-tune page: the training curve and the iterative steps."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from explorer.finetune.fixed_masks import EpochRecord, StepRecord
from explorer.ui.charts.style import DENSE, KEPT, PRUNED

LOSS = "#F58518"


def curve(epochs: Sequence[EpochRecord], dense: float | None = None,
          pruned: float | None = None) -> go.Figure:
    """Validation accuracy (left axis, %) and training / validation loss (right axis) per
    epoch; dotted lines for the dense and the pruned-without-fine-tuning accuracy, and
    vertical lines where an iterative step prunes again."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = [e.epoch for e in epochs]
    fig.add_scatter(x=x, y=[e.val_accuracy * 100 for e in epochs], name="validation accuracy",
                    mode="lines+markers", line={"color": KEPT}, secondary_y=False)
    fig.add_scatter(x=x, y=[e.train_loss for e in epochs], name="training loss",
                    mode="lines", line={"color": LOSS}, secondary_y=True)
    fig.add_scatter(x=x, y=[e.val_loss for e in epochs], name="validation loss",
                    mode="lines", line={"color": LOSS, "dash": "dot"}, secondary_y=True)
    for value, label, color in ((dense, "dense", DENSE), (pruned, "pruned, not fine-tuned",
                                                          PRUNED)):
        if value is not None:
            fig.add_hline(y=value * 100, line={"color": color, "dash": "dot"},
                          annotation_text=f"{label} {value:.2%}", secondary_y=False)
    for prev, cur in zip(epochs, epochs[1:], strict=False):
        if cur.step != prev.step:
            fig.add_vline(x=cur.epoch - 0.5, line={"color": DENSE, "dash": "dash", "width": 1})
    total = epochs[-1].total if epochs else 1
    fig.update_xaxes(title_text="epoch", range=[0.5, total + 0.5])
    fig.update_yaxes(title_text="validation accuracy (%)", secondary_y=False)
    fig.update_yaxes(title_text="cross-entropy", secondary_y=True)
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def steps(records: Sequence[StepRecord], dense: float | None = None) -> go.Figure:
    """Accuracy after each iterative step's pruning and after its fine-tuning."""
    fig = go.Figure()
    x = [s.step for s in records]
    text = [f"{s.removed:.1%} of the weights removed" for s in records]
    fig.add_scatter(x=x, y=[s.pruned_accuracy * 100 for s in records], name="after pruning",
                    mode="lines+markers", line={"color": PRUNED}, text=text,
                    hovertemplate="step %{x}: %{y:.2f}%<br>%{text}<extra></extra>")
    fig.add_scatter(x=x, y=[s.finetuned_accuracy * 100 for s in records],
                    name="after fine-tuning", mode="lines+markers", line={"color": KEPT},
                    text=text, hovertemplate="step %{x}: %{y:.2f}%<br>%{text}<extra></extra>")
    if dense is not None:
        fig.add_hline(y=dense * 100, line={"color": DENSE, "dash": "dot"},
                      annotation_text=f"dense {dense:.2%}")
    fig.update_xaxes(title_text="step", dtick=1)
    fig.update_yaxes(title_text="validation accuracy (%)")
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.3})
    return fig
