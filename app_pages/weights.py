"""Weights: |w| histograms per layer with the plan's threshold; neuron scores for neuron plans;
for an N:M plan, a zoom of the selected layer's keep-mask that shows its groups."""

import streamlit as st

from explorer.bundle import ModelBundle
from explorer.errors import ExplorerError
from explorer.graph import Layer
from explorer.look.stats import DEFAULT_BINS, Histogram, weight_histogram
from explorer.masks import masks_for, unit_counts
from explorer.ui import texts
from explorer.ui.charts import weights as weight_charts
from explorer.ui.charts.weights import Cut
from explorer.ui.format import count, percent
from explorer.ui.layout import page_setup

session = page_setup("Weights", texts.WEIGHTS)
bundle, plan, cache = session.bundle, session.plan, session.evaluator.scores
unit = plan.granularity  # what a cut counts: weights, neurons, heads or blocks
on_magnitude = weight_charts.thresholds_on_magnitude(plan)
# The bundle is not hashable, so it travels as _bundle; the session's key (a digest of the
# model's content) names it for the shared cache.


@st.cache_data(show_spinner=False, max_entries=512)
def _histogram(model_key: str, layer: str, scale: str, _bundle: ModelBundle) -> Histogram:
    return weight_histogram(_bundle, layer, DEFAULT_BINS, scale)


def _shape(layer: Layer) -> str:
    return " x ".join(map(str, layer.weight_shape))


def _removed_table(cuts: dict[str, Cut]) -> None:
    rows = []
    for layer in bundle.layers:
        cut = cuts[layer.name]
        row = {"layer": layer.name, f"{unit} removed": cut.removed, "of": cut.total,
               "share removed": cut.removed / cut.total}
        if plan.granularity == "neurons" or on_magnitude:
            row["threshold"] = cut.threshold
        rows.append(row)
    st.dataframe(rows, hide_index=True, key="wt_removed", column_config={
        "share removed": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                         max_value=1),
        "threshold": st.column_config.NumberColumn(
            format="%.4g", help="the largest score among the removed entries"),
    })


def _neuron_view(cuts: dict[str, Cut], selected: str) -> None:
    """Sorted per-neuron scores of the plan's criterion: every layer small, one large."""
    layer, cut = bundle.layer(selected), cuts[selected]
    try:
        scores = {la.name: cache.get("neurons", plan.criterion, la.group or la.name)[0]
                  for la in bundle.layers}
    except ExplorerError as exc:
        st.error(f"The {plan.criterion} scores cannot be computed: {exc}")
        return
    removed = {name: c.removed for name, c in cuts.items()}
    fixed = "" if layer.neuron_prunable else " (its neurons cannot be removed)"
    st.plotly_chart(weight_charts.neuron_score_grid(scores, removed), key="wt_grid")
    st.plotly_chart(weight_charts.neuron_scores(
        scores[selected], cut.removed,
        f"{selected} ({layer.kind}, {_shape(layer)}): {plan.criterion} score per neuron{fixed}",
        plan.criterion), key="wt_neurons")
    line = f"{selected}: {cut.removed} of {cut.total} neurons removed"
    if cut.threshold is not None:
        line += f", every {plan.criterion} score up to {cut.threshold:.4g}"
    st.caption(line + ".")


def _histogram_view(cuts: dict[str, Cut], selected: str, scale: str) -> None:
    """|w| histograms: every layer small (for weights plans), the selected one large."""
    layer, cut = bundle.layer(selected), cuts[selected]
    hists = {name: _histogram(session.key, name, scale, bundle) for name in bundle.layer_names}
    thresholds = {name: c.threshold if on_magnitude else None for name, c in cuts.items()}
    if plan.granularity == "weights":
        st.plotly_chart(weight_charts.histogram_grid(hists, thresholds), key="wt_grid")
    hist = hists[selected]
    st.plotly_chart(weight_charts.histogram(
        hist, thresholds[selected], f"{selected} ({layer.kind}, {_shape(layer)}): "
        f"|w| histogram, {DEFAULT_BINS} {scale} bins"), key="wt_hist")
    if plan.granularity == "weights":
        line = f"{selected}: {count(cut.removed)} of {count(cut.total)} weights removed"
        if on_magnitude and cut.threshold is not None:
            line += f" ({percent(cut.removed / cut.total)}), every |w| up to {cut.threshold:.4g}"
        st.caption(line + ".")
    if hist.scale == "log" and hist.zeros:
        st.caption(f"{count(hist.zeros)} weights of {selected} are exactly 0: a log axis has "
                   "no place for them.")


def _mask_view(selected: str) -> None:
    """The N:M structure: the first rows and groups of the selected layer's keep-mask."""
    layer = bundle.layer(selected)
    n, m = plan.nm
    mask = masks_for(bundle, plan, cache).masks.get(layer.weight)
    if mask is None:
        st.caption(f"{selected} is not in the {plan.pattern} pattern: it stays dense.")
        return
    zoom = weight_charts.mask_zoom(mask, m)
    where = " at kernel position (0, 0)" if layer.kind == "conv2d" else ""
    st.plotly_chart(weight_charts.mask_view(
        zoom, m, f"{selected}: {plan.pattern} keep-mask, first {zoom.shape[0]} rows{where} x "
        f"first {zoom.shape[1]} inputs (blue kept, red removed)"), key="wt_mask")
    st.caption(f"Every group of {m} consecutive inputs between the lines keeps exactly {n}: "
               f"the {n} highest {plan.criterion} scores of the group.")


try:
    cuts = weight_charts.plan_cuts(bundle, plan, cache)
except ExplorerError as exc:
    st.error(f"What the plan removes cannot be computed: {exc}")
    st.stop()

left, right = st.columns([1, 3], gap="large")
with left:
    scale = st.radio("Histogram bins", ("linear", "log"), key="wt_scale", horizontal=True,
                     persist_state="session",
                     help="log-spaced bins show the smallest weights, which a linear axis "
                          "squeezes into the first bar")
    selected = st.selectbox("Layer", bundle.layer_names, key=f"wt_layer::{session.model_id}",
                            persist_state="session", help="the layer drawn large below")
    # heads and blocks: the layers of an attention (a block) lose the same ones, counted once
    removed = (sum(unit_counts(bundle, plan, cache).values()) if unit in ("heads", "blocks")
               else sum(c.removed for c in cuts.values()))
    st.metric(f"{unit.capitalize()} removed", count(removed),
              help=f"by the current plan: {plan.granularity} by {plan.criterion}, "
                   f"{plan.scope} scope")
with right:
    st.markdown("**Removed per layer** by the current plan")
    _removed_table(cuts)
if plan.granularity == "neurons":
    st.info(f"A **neuron** plan removes whole neurons with the lowest **{plan.criterion}** "
            "scores: the charts show each layer's scores sorted, removed neurons shaded.")
elif plan.pattern is not None:
    st.info(f"An **N:M** plan keeps **{plan.nm[0]} of every {plan.nm[1]}** consecutive "
            f"input weights by **{plan.criterion}**: each group has its own cut, so there is "
            "no one threshold per layer; the mask below shows the groups.")
elif not on_magnitude:
    st.info(f"Criterion **{plan.criterion}** does not rank weights by |w|: there is no "
            "magnitude threshold to draw, only the count removed per layer.")

if plan.granularity == "neurons":
    _neuron_view(cuts, selected)
_histogram_view(cuts, selected, scale)
if plan.pattern is not None:
    _mask_view(selected)
