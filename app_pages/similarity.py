"""Similarity: which neurons of a layer are near-duplicates, and two of them side by side.

The pair compared at the bottom lives in ``st.session_state["sim_pair"]`` as
``{"layer": name, "i": neuron, "j": neuron}`` (original neuron indices). A click on a
heatmap cell (the invisible overlay's point: its ``customdata`` is ``(i, j)``) or on a row
of the table of most similar pairs sets it; without one, the most similar pair is shown.
Under the pair, each neuron's top validation images (a text model's sentences) and, for an
image model on request, a captum attribution (explorer.ui.views.drilldown, shared with the
Activations page).
"""

from functools import partial

import numpy as np
import streamlit as st

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.look.sentences import reads_text, samples_noun
from explorer.look.similarity import (
    Similarity,
    activation_similarity,
    correlation_matrix,
    cosine_matrix,
    weight_similarity,
)
from explorer.ui import state, texts
from explorer.ui.charts import similarity as charts
from explorer.ui.format import percent
from explorer.ui.layout import page_setup
from explorer.ui.views import drilldown as drilldown_view
from explorer.ui.views import heads as heads_view

PAIR_KEY = "sim_pair"
HEATMAP_KEY = "sim_heatmap"
TABLE_KEY = "sim_pairs_table"
KINDS = {"weights": "weights (cosine)", "activations": "activations (correlation)"}

UNITS_KEY = "sim_units"  # for a model with attention heads: compare neurons or heads
UNITS = {"neurons": "neurons of a layer", "heads": "heads of an attention"}

session = page_setup("Similarity", texts.SIMILARITY)
bundle, data = session.bundle, session.data
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences
# one activation per sample and neuron: a channel's map, or a sentence's tokens, averaged
AVERAGED = "a channel's map averaged" if NOUN == "images" else "the tokens averaged"
if bundle.heads and st.radio("Compare", list(UNITS), key=UNITS_KEY, format_func=UNITS.get,
                             horizontal=True) == "heads":
    heads_view.similarity_section(session)
    st.stop()


@st.cache_data(show_spinner="Comparing every pair of neurons...", max_entries=64)
def similarity(key: str, layer: str, kind: str, _bundle: ModelBundle,
               _data: ValidationSet) -> Similarity:
    """The layer's ordered similarity (weights: cosine; activations: correlation)."""
    if kind == "weights":
        return weight_similarity(_bundle, layer)
    return activation_similarity(drilldown_view.summary(key, layer, _bundle, _data).means)


def _choose(layer: str, pair: tuple[int, int]) -> None:
    st.session_state[PAIR_KEY] = {"layer": layer, "i": int(pair[0]), "j": int(pair[1])}


def _on_cell(sim: Similarity, layer: str) -> None:
    event = st.session_state.get(HEATMAP_KEY)
    points = event["selection"]["points"] if event else []
    if not points:
        return
    pair = charts.pair_at(sim, points[0])
    if pair is None:
        st.toast("That cell compares a neuron with itself: pick one off the diagonal.")
        return
    _choose(layer, pair)


def _on_row(pairs: tuple, layer: str) -> None:
    event = st.session_state.get(TABLE_KEY)
    rows = event["selection"]["rows"] if event else []
    if rows:
        _choose(layer, pairs[rows[0]][:2])
        # A new figure revision drops the heatmap's marker of its last clicked cell.
        st.session_state["sim_heatmap_rev"] = st.session_state.get("sim_heatmap_rev", 0) + 1


def _chosen_pair(layer: str, neurons: int) -> tuple[int, int] | None:
    """The pair in session state if it belongs to ``layer`` and names two of its neurons."""
    pair = st.session_state.get(PAIR_KEY)
    if not isinstance(pair, dict) or pair.get("layer") != layer:
        return None
    i, j = pair.get("i"), pair.get("j")
    ok = all(isinstance(n, int | np.integer) and not isinstance(n, bool) and 0 <= n < neurons
             for n in (i, j))
    return (int(i), int(j)) if ok and i != j else None


names = bundle.layer_names
if st.session_state.get("sim_layer") not in names:
    remembered = st.session_state.get(PAIR_KEY)
    remembered = remembered.get("layer") if isinstance(remembered, dict) else None
    st.session_state["sim_layer"] = remembered if remembered in names else names[0]
left, right = st.columns([1, 1])
name = left.selectbox(
    "Layer", names, key="sim_layer",
    format_func=lambda n: f"{n} ({bundle.layer(n).kind}, {bundle.layer(n).neurons} neurons)",
)
kind = right.radio("Compare neurons by", list(KINDS), key="sim_kind", format_func=KINDS.get,
                   horizontal=True,
                   help="weights: cosine of incoming weight vectors; activations: correlation "
                        f"over the validation {NOUN} ({AVERAGED} per {NOUN[:-1]})")
layer = bundle.layer(name)
measure = charts.MEASURE[kind]

if kind == "activations" and data is None:
    st.info(f"Comparing activations needs validation data; compare weights instead. "
            f"{state.NO_DATA_NOTE}")
    st.stop()
try:
    sim = similarity(session.key, name, kind, bundle, data)
except ExplorerError as exc:
    st.error(f"Could not compare the neurons of {name}: {exc}")
    st.stop()

chart_col, table_col = st.columns([3, 2], gap="large")
with chart_col:
    figure = charts.heatmap(sim, kind)
    figure.update_layout(meta={"revision": st.session_state.get("sim_heatmap_rev", 0)})
    st.plotly_chart(figure, key=HEATMAP_KEY, on_select=partial(_on_cell, sim, name),
                    selection_mode="points", config={"displaylogo": False})
    if sim.reduced:
        block = int(sim.bounds[1] - sim.bounds[0])
        st.caption(f"{sim.neurons} neurons: each cell is the mean {measure} of a block of up "
                   f"to {block} x {block} neurons; a click compares the blocks' first neurons.")
    else:
        st.caption(f"{sim.neurons} neurons, clustered so that near-duplicates form bright "
                   "blocks on the diagonal. Hover for the neurons, click to compare them.")

pair = _chosen_pair(name, layer.neurons)
shown = pair or (sim.pairs[0][:2] if sim.pairs else None)
with table_col:
    st.markdown(f"**Most similar pairs** ({measure})")
    if sim.pairs:
        rows = [{"neuron i": i, "neuron j": j, "similarity": v} for i, j, v in sim.pairs]
        current = [k for k, (i, j, _) in enumerate(sim.pairs) if shown in ((i, j), (j, i))]
        st.dataframe(
            rows, key=TABLE_KEY, hide_index=True, selection_mode="single-row",
            on_select=partial(_on_row, sim.pairs, name),
            selection_default={"selection": {"rows": current[:1]}},
            column_config={"similarity": st.column_config.NumberColumn(
                format="%.4f", help=f"{measure} of the two neurons")},
        )
    else:
        st.info(f"{name} has a single neuron: there is no pair to compare.")

if shown is None:
    st.stop()
i, j = shown
st.subheader(f"Neuron {i} and neuron {j}")
if pair is None:
    st.caption("The most similar pair. Click a heatmap cell or a table row to compare others.")
weight = bundle.params()[layer.weight].detach()
weights = weight[[i, j]].reshape(2, -1).float().numpy()
summarised = binned = None
if data is not None:
    try:
        summarised = drilldown_view.summary(session.key, name, bundle, data)
        binned = drilldown_view.histograms(session.key, name, bundle, data)
    except ExplorerError as exc:
        st.warning(f"No activations for {name}: {exc}")
cols = st.columns(3 if summarised is not None else 1)
cols[0].metric("Cosine of incoming weights", f"{cosine_matrix(weights)[0, 1]:.4f}")
if summarised is not None:
    pair_means = summarised.means[:, [i, j]]
    cols[1].metric("Correlation of activations", f"{correlation_matrix(pair_means)[0, 1]:.4f}",
                   help=f"Pearson, over the validation {NOUN} ({AVERAGED})")
    zeros = [percent(float(z)) for z in summarised.apoz[[i, j]]]
    cols[2].metric("Zero outputs (APoZ)", f"{zeros[0]} · {zeros[1]}",
                   help=f"the fraction of outputs exactly 0: neuron {i} · neuron {j}")

view = charts.weight_view(layer, bundle.input_shape, first=name == names[0])
figures = st.columns(2 if binned is not None else 1, gap="large")
figures[0].plotly_chart(charts.incoming_weights(weights, (i, j), view), key="sim_weights")
if binned is not None:
    figures[1].plotly_chart(charts.activation_histograms((binned.of(i), binned.of(j)), (i, j)),
                            key="sim_activations")
    figures[1].caption(drilldown_view.positions_note(summarised, NOUN)
                       + " Each neuron is binned on its own range.")

st.markdown(f"**What excites neuron {i} and neuron {j}**: the validation "
            f"{NOUN} each responds to most"
            + ("" if reads_text(bundle.card) else ", and why, for the first of them"))
for column, neuron in zip(st.columns(2, gap="large"), (i, j), strict=True):
    with column:
        drilldown_view.neuron_examples(session.key, bundle, data, name, neuron, summarised)
