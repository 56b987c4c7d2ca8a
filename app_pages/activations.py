"""Activations: how each layer's neurons respond on the validation set; dead neurons flagged."""

import streamlit as st

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.stats import ActivationStats, activation_stats
from explorer.ui import activation_charts, texts
from explorer.ui.format import count, percent
from explorer.ui.layout import page_setup

DEAD_LISTED = 200  # indices listed in full; beyond that, a count of the rest

session = page_setup("Activations", texts.ACTIVATIONS)
bundle = session.bundle
# Bundle and data are not hashable, so they travel as _bundle / _data; their identities join
# the model id in the key so that a re-uploaded file of the same name is measured afresh.
model_key = f"{session.model_id}@{id(bundle)}:{id(session.data)}"


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
        "dead": st.column_config.NumberColumn(help="neurons that are zero on every image"),
    })


def _dead_list(s: ActivationStats) -> str:
    shown = ", ".join(map(str, s.dead[:DEAD_LISTED].tolist()))
    rest = s.dead.size - DEAD_LISTED
    return shown + (f" ... and {rest} more" if rest > 0 else "")


try:
    stats = _stats(model_key, bundle, session.data)
except ExplorerError as exc:
    st.error(f"The activations cannot be measured: {exc}")
    st.stop()

st.markdown(f"**Every layer** on {len(session.data)} validation images")
_overview(stats)

left, right = st.columns([1, 3], gap="large")
with left:
    selected = st.selectbox("Layer", bundle.layer_names, key=f"act_layer::{session.model_id}",
                            persist_state="session")
    log_counts = st.toggle("Log count axis", key="act_log", persist_state="session",
                           help="the spike at zero after a ReLU hides everything else on a "
                                "linear axis")
    layer, s = bundle.layer(selected), stats[selected]
    st.metric("Neurons", count(s.mean_abs.size))
    st.metric("Dead neurons", count(s.dead.size),
              help="zero on every validation image (and every position, for a convolution)")
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
        st.markdown(f"No dead neuron in {selected}: every neuron fires on some image.")
    st.plotly_chart(activation_charts.per_neuron(
        s, f"{selected}: per-neuron activity over {s.samples} images"
           + (f" x {s.positions} positions" if s.positions > 1 else "")), key="act_neurons")
