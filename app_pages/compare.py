"""Compare criteria: accuracy-vs-sparsity curves of every criterion, for one layer or globally."""

import math
import time

import pandas as pd
import streamlit as st

from explorer.decide import compare_criteria as compare
from explorer.errors import ExplorerError
from explorer.graph import Layer
from explorer.look.sentences import samples_noun
from explorer.plan import criterion_names
from explorer.ui import cluster, state, texts
from explorer.ui.charts import compare as compare_charts
from explorer.ui.format import percent
from explorer.ui.layout import page_setup

LAYER, GLOBAL = "one layer", "whole model, global"
RESULTS = "compare_curves"  # session key: {(model, granularity, mode, layer, ...): (curves, s)}
RESULTS_KEPT = 32

session = page_setup("Compare criteria", texts.COMPARE)
bundle = session.bundle
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences
state.stop_without_labels(session.data, "Comparing criteria compares accuracy.")
if session.data is None:
    st.info(f"{bundle.name} has no validation data, so there is no accuracy to compare. "
            "Upload a trained model with its data on the Model page.")
    st.stop()


def _label(layer: Layer, granularity: str) -> str:
    if granularity == "weights":
        return f"{layer.name} ({layer.kind}, {math.prod(layer.weight_shape):,} weights)"
    members = bundle.linked(layer.name, granularity)
    linked = f"; group {layer.group}: {' + '.join(members)}" if len(members) > 1 else ""
    return f"{layer.name} ({layer.kind}, {layer.neurons} neurons{linked})"


def _compute(granularity: str, mode: str, layer: str | None) -> tuple[compare.Curves, float]:
    bar = st.progress(0.0, text="Evaluating...")

    def progress(done: int, total: int, name: str) -> None:
        bar.progress(done / total, text=f"criterion **{name}**: {done} of {total} plans")

    start = time.perf_counter()
    screen = session.evaluator.refines  # a large set: screen off the table's fractions
    with cluster.sweeps(cluster.chosen()) as executor:  # here, or the chosen Ray cluster
        if mode == LAYER:
            curves = compare.layer_curves(session.evaluator, granularity, layer,
                                          progress=progress, screen=screen, executor=executor)
        else:
            curves = compare.global_curves(session.evaluator, granularity, progress=progress,
                                           screen=screen, executor=executor)
    bar.empty()
    return curves, time.perf_counter() - start


def _screened_note(curves: compare.Curves, samples: int) -> str:
    """What a screened sweep ran on: the subset for most points, every sample for the
    table's."""
    screened = {p.samples for points in curves.values() for p in points if not p.exact}
    if not screened:
        return ""
    table = " and ".join(f"{f:.0%}" for f in compare.TABLE_FRACTIONS)
    return (f" Points marked as estimates (error bars: 95% interval) ran on a fixed "
            f"stratified subset of {max(screened)} {NOUN}; the points at {table} removed, "
            f"which the table ranks, ran on all {samples}.")


def _table(curves: compare.Curves) -> None:
    columns = {f: f"accuracy at {f:.0%} removed" for f in compare.TABLE_FRACTIONS}
    rows = [{"criterion": name, **{columns[f]: acc for f, acc in accs.items()}}
            for name, accs in compare.accuracy_table(curves).items()]
    if not rows:
        return
    frame = pd.DataFrame(rows)
    styled = (frame.style.format("{:.2%}", subset=list(columns.values()), na_rep="-")
              .highlight_max(subset=list(columns.values()), props="font-weight: bold; "
                             "background-color: rgba(76, 120, 168, 0.25)"))
    st.markdown("**Accuracy at 50% and 80% removed** (best per column highlighted)")
    st.dataframe(styled, hide_index=True, key="cmp_table")


left, right = st.columns([1, 3], gap="large")
with left:
    granularity = st.radio(
        "Granularity", bundle.granularities, key="cmp_granularity", horizontal=True,
        index=state.granularity_index(bundle, session.plan), persist_state="session",
        help="weights: unstructured sparsity; neurons: whole neurons / channels")
    mode = st.radio("Sweep", (LAYER, GLOBAL), key="cmp_mode", persist_state="session",
                    help="one layer pruned while the others stay dense, or one global "
                         "fraction across all layers with one threshold")
    layer = None
    if mode == LAYER:
        choices = [bundle.layer(name) for name in bundle.prunable_layers(granularity)]
        if not choices:
            st.error(f"No layer of {bundle.name} can lose {granularity}.")
            st.stop()
        labels = {la.name: _label(la, granularity) for la in choices}
        layer = st.selectbox("Layer", list(labels), format_func=labels.get,
                             key=f"cmp_layer::{session.model_id}::{granularity}",
                             persist_state="session",
                             help="for neurons, its coupled group is pruned with it")
    grid = compare.default_fractions(granularity)
    names = criterion_names(granularity)
    st.caption(f"Criteria: {', '.join(names)}. "
               f"Grid: {', '.join(f'{f:.0%}' for f in grid)} removed.")

results = st.session_state.setdefault(RESULTS, {})
# the criteria and the grid join the key: a newly registered criterion is not left out
key = (*session.results_key, granularity, mode, layer, tuple(names), tuple(grid))
with right:
    if key not in results:
        if not st.button("Compute curves", type="primary", key="cmp_compute"):
            st.info("Press **Compute curves** to evaluate every criterion over the grid.")
            st.stop()
        try:
            results[key] = _compute(granularity, mode, layer)
        except ExplorerError as exc:
            st.error(f"The curves cannot be computed: {exc}")
            st.stop()
        while len(results) > RESULTS_KEPT:
            results.pop(next(iter(results)))
    curves, seconds = results[key]
    dense = session.dense()
    if mode == LAYER:
        members = compare.swept_layers(session.evaluator, granularity, layer)
        title = f"{' + '.join(members)}: {granularity} removed, the other layers dense"
    else:
        title = f"Whole model: one global threshold over all {granularity}"
    for name, message in curves.errors.items():
        st.warning(f"Criterion **{name}** could not be evaluated: {message}")
    st.plotly_chart(compare_charts.criteria_lines(curves, dense.accuracy, title, NOUN),
                    key="cmp_chart")
    st.caption(f"{len(curves) * len(grid)} plans evaluated in {seconds:.1f} s on "
               f"{dense.samples} validation {NOUN}; dense accuracy {percent(dense.accuracy)}."
               + _screened_note(curves, dense.samples))
    _table(curves)
