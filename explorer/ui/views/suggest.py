"""The "Suggest a plan" section of the Sensitivity page: a target in, three plans out.

The suggested plan (from the sensitivity curves) is shown beside the two baselines fitted
to the same target — the same fraction in every layer, and one global magnitude threshold
— so the user sees what the curves bought. Any row goes to the Prune page's sliders with
one click.

Each row shows two accuracies: on the calibration samples the plan was chosen on, and on the
held-out samples no choice saw (the one to trust; :mod:`explorer.decide.held_out`).
"""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import Sensitivity
from explorer.decide.suggest import Suggestion, suggest
from explorer.decide.targets import Target
from explorer.errors import ExplorerError
from explorer.look.sentences import samples_noun
from explorer.metrics import Metrics
from explorer.ui import state
from explorer.ui.charts.style import DENSE, KEPT, PRUNED, compact
from explorer.ui.format import compressed_bytes, count, nbytes, percent, with_interval
from explorer.ui.state import Session
from explorer.ui.views.decision_split import judge_of, note

PRUNE_PAGE = "app_pages/prune.py"
KINDS = {
    "flops": ("FLOPs reduction (x)", 4.0, 1.01, "effective FLOPs at most dense / this"),
    "size": ("Compression ratio (x)", 8.0, 1.01, "parameters / nonzero parameters at least"),
    "accuracy_drop": ("Largest accuracy drop (points)", 1.0, 0.0,
                      "calibration accuracy at most this many points below the dense "
                      "model's"),
}
SUGGESTIONS_KEY = "suggestions"


def section(session: Session, sens: Sensitivity) -> None:
    """Target controls, the suggestion with its baselines, per-layer fractions, apply."""
    judge = judge_of(session)
    st.subheader("Suggest a plan")
    st.caption(f"From the {sens.granularity} / {sens.criterion} curves above: the layers that "
               "cost least for what they save are pruned first; the result is checked on the "
               "real plan, so it meets a FLOPs or size target exactly, and an accuracy target "
               f"on the calibration {samples_noun(session.bundle.card)} it was chosen on.")
    left, mid, right = st.columns([2, 2, 1], vertical_alignment="bottom")
    kind = left.selectbox("Target", list(KINDS), format_func=lambda k: KINDS[k][0],
                          key="sg_kind")
    title, default, low, help_text = KINDS[kind]
    value = mid.number_input(title, min_value=low, value=default, step=0.5, key=f"sg_{kind}",
                             help=help_text)
    asked = right.button("Suggest", type="primary", key="sg_run", width="stretch")
    target_value = value / 100 if kind == "accuracy_drop" else value
    key = (session.model_id, id(judge), sens.granularity, sens.criterion, sens.grid, kind,
           target_value)
    store = st.session_state.setdefault(SUGGESTIONS_KEY, {})
    if asked and key not in store:
        try:
            target = Target(kind, target_value)
            with st.spinner("Fitting the suggestion and the baselines..."):
                store[key] = suggest(sens, judge, target)
        except ExplorerError as exc:
            store[key] = str(exc)
    found = store.get(key)
    if found is None:
        return
    if isinstance(found, str):
        st.error(f"No suggestion: {found}")
        return
    _show(judge, found)


def _show(judge: SplitEvaluator, result: Suggestion) -> None:
    note(judge)
    dense = result.dense
    st.dataframe([_row(row, dense) for row in result.rows], hide_index=True, key="sg_table")
    st.plotly_chart(per_layer_fractions(result), key="sg_layers")
    cols = st.columns(len(result.rows))
    for col, row in zip(cols, result.rows, strict=True):
        if row.plan is None:
            continue
        if col.button(f"Apply {row.name} to the sliders", key=f"sg_apply_{row.name}",
                      width="stretch"):
            state.set_plan(row.plan)
            st.switch_page(PRUNE_PAGE)


COLUMNS = ("plan", "held-out accuracy [95%]", "held-out drop", "calibration accuracy",
           "calibration drop", "FLOPs", "speed-up", "compression", "size", "note")


def _row(row, dense) -> dict:
    if row.metrics is None:
        return {**dict.fromkeys(COLUMNS, "—"), "plan": row.name, "note": row.error}
    calibration, m = row.metrics
    return dict(zip(COLUMNS, (
        row.name, with_interval(m), _drop(dense.held_out, m), percent(calibration.accuracy),
        _drop(dense.calibration, calibration), count(m.flops["effective"]),
        f"{m.speedup:.2f}x", f"{m.compression_ratio:.2f}x", nbytes(compressed_bytes(m)),
        "" if row.fraction is None else f"fraction {row.fraction:.2%}"), strict=True))


def _drop(dense: Metrics, m: Metrics) -> str:
    return f"{(dense.accuracy - m.accuracy) * 100:.2f} pts"


def per_layer_fractions(result: Suggestion) -> go.Figure:
    """Grouped bars: the fraction of weights removed per layer by each plan (measured)."""
    fig = go.Figure()
    colors = {0: PRUNED, 1: KEPT, 2: DENSE}
    for i, row in enumerate(result.rows):
        if row.metrics is None:
            continue
        layers = row.metrics.held_out.layers
        fig.add_bar(x=[la.name for la in layers], y=[la.sparsity * 100 for la in layers],
                    name=row.name, marker_color=colors.get(i, DENSE),
                    hovertemplate=row.name + ": %{x} %{y:.1f}% removed<extra></extra>")
    fig.update_layout(barmode="group", yaxis_title="weights removed (%)",
                      yaxis_range=[0, 100])
    return compact(fig, 320)
