"""Activations: how each layer's neurons respond on the validation set; dead neurons flagged.

A click on a neuron's bar in the per-neuron chart (mean |a| or APoZ) stores
``st.session_state["act_neuron"] = {"layer": name, "neuron": index}`` and opens that
neuron's drill-down (explorer.ui.views.drilldown, shared with the Similarity page).
"""

from functools import partial

import numpy as np
import streamlit as st

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.look.sentences import over_samples, samples_noun
from explorer.look.stats import ActivationStats, activation_stats
from explorer.ui import state, texts
from explorer.ui.charts import activations as activation_charts
from explorer.ui.format import count, percent
from explorer.ui.layout import page_setup
from explorer.ui.views import drilldown as drilldown_view

DEAD_LISTED = 200  # indices listed in full; beyond that, a count of the rest
NEURON_KEY = "act_neuron"
BARS_KEY = "act_neurons"

session = page_setup("Activations", texts.ACTIVATIONS)
bundle = session.bundle
NOUN = samples_noun(bundle.card)  # images, or a text model's sentences
# Bundle and data are not hashable, so they travel as _bundle / _data; the session's key (a
# digest of the model's and the data's content) names them for the shared cache.


@st.cache_data(show_spinner="Running the validation set through the model...", max_entries=8)
def _stats(model_key: str, _bundle: ModelBundle, _data: ValidationSet) -> dict:
    return activation_stats(_bundle, _data)


def _overview(stats: dict[str, ActivationStats]) -> None:
    rows = []
    for layer in bundle.layers:
        s = stats[layer.name]
        rows.append({
            "layer": layer.name,
            "type": layer.kind,
            "nonlinearity after": "yes" if layer.activation_node != layer.node else "none",
            "neurons": s.mean_abs.size,
            "dead": s.dead.size,
            "mean APoZ": float(s.apoz.mean()),
            "mean |activation|": float(s.mean_abs.mean()),
        })
    st.dataframe(rows, hide_index=True, key="act_overview", column_config={
        "mean APoZ": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                     max_value=1),
        "mean |activation|": st.column_config.NumberColumn(format="%.4f"),
        "dead": st.column_config.NumberColumn(help=f"neurons that are zero on every {NOUN[:-1]}"),
    })


def _on_bar(layer: str) -> None:
    event = st.session_state.get(BARS_KEY)
    points = event["selection"]["points"] if event else []
    if points and points[0].get("x") is not None:
        st.session_state[NEURON_KEY] = {"layer": layer, "neuron": round(float(points[0]["x"]))}


def _chosen_neuron(layer: str, neurons: int) -> int | None:
    """The neuron in session state if it is one of ``layer``'s."""
    chosen = st.session_state.get(NEURON_KEY)
    if not isinstance(chosen, dict) or chosen.get("layer") != layer:
        return None
    n = chosen.get("neuron")
    ok = isinstance(n, int | np.integer) and not isinstance(n, bool) and 0 <= n < neurons
    return int(n) if ok else None


def _dead_list(s: ActivationStats) -> str:
    shown = ", ".join(map(str, s.dead[:DEAD_LISTED].tolist()))
    rest = s.dead.size - DEAD_LISTED
    return shown + (f" ... and {rest} more" if rest > 0 else "")


if session.data is None:
    st.info(f"Activations need validation data. {state.NO_DATA_NOTE}")
    st.stop()
try:
    stats = _stats(session.key, bundle, session.data)
except ExplorerError as exc:
    st.error(f"The activations cannot be measured: {exc}")
    st.stop()

st.markdown(f"**Every layer** on {len(session.data)} validation {NOUN}")
_overview(stats)

layer_key = f"act_layer::{session.model_id}"
clicked = st.session_state.get(NEURON_KEY)
if layer_key not in st.session_state and isinstance(clicked, dict) and (
        clicked.get("layer") in bundle.layer_names):
    st.session_state[layer_key] = clicked["layer"]  # reopen on the neuron last clicked
left, right = st.columns([1, 3], gap="large")
with left:
    selected = st.selectbox("Layer", bundle.layer_names, key=layer_key,
                            persist_state="session")
    log_counts = st.toggle("Log count axis", key="act_log", persist_state="session",
                           help="the spike at zero after a ReLU hides everything else on a "
                                "linear axis")
    layer, s = bundle.layer(selected), stats[selected]
    st.metric("Neurons", count(s.mean_abs.size))
    st.metric("Dead neurons", count(s.dead.size),
              help=f"zero on every validation {NOUN[:-1]} (and every position of it)")
    st.metric("Mean APoZ", percent(float(s.apoz.mean()), 1))
with right:
    if layer.activation_node == layer.node:
        st.caption(f"No nonlinearity follows {selected} directly: these are its raw outputs "
                   "(logits, or values added to a skip connection), so zeros are rare and "
                   "APoZ says little here.")
    st.plotly_chart(activation_charts.distribution(
        s, f"{selected}: distribution of its {count(s.histogram.total)} activation values",
        log_counts), key="act_hist")
    if s.dead.size:
        st.markdown(f":red[**{s.dead.size} dead neuron(s)**] in {selected} (never nonzero, "
                    f"removing them changes nothing): {_dead_list(s)}")
    else:
        st.markdown(f"No dead neuron in {selected}: every neuron fires on some {NOUN[:-1]}.")
    st.plotly_chart(activation_charts.per_neuron(
        s, f"{selected}: per-neuron activity over "
           f"{over_samples(s.samples, s.positions, s.values, NOUN)}"), key=BARS_KEY,
        on_select=partial(_on_bar, selected), selection_mode="points",
        config={"displaylogo": False})

neuron = _chosen_neuron(selected, layer.neurons)
if neuron is None:
    st.caption("Click a neuron's bar to see its incoming weights, its activations and the "
               f"validation {NOUN} that excite it most"
               + (" with a captum attribution map." if NOUN == "images" else "."))
else:
    drilldown_view.neuron_drilldown(session.key, bundle, session.data, selected, neuron)
