"""The neuron drill-down the Similarity and Activations pages share: what excites a neuron.

``key`` arguments are the session's key (:attr:`explorer.ui.state.Session.key`, a digest
of the model's and the data's content), as every cache shared between sessions is keyed.
Captum runs only when the user asks ("Explain with captum"), once per (model, layer,
neuron): the result is cached and the neurons explained so far stay shown for the rest of
the session.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.look.drilldown import TOP_K, Attribution, TopImages, attribution_map, rank_images
from explorer.look.layer_summary import (
    LayerSummary,
    NeuronHistograms,
    layer_summary,
    neuron_histograms,
)
from explorer.look.sentences import over_samples, reads_text, samples_noun, sentences
from explorer.ui.charts import drilldown as charts
from explorer.ui.charts.similarity import weight_view
from explorer.ui.state import NO_DATA_NOTE

EXPLAINED_KEY = "dd_explained"  # the (key, layer, neuron) triples explained so far
NO_TEXT_ATTRIBUTION = (
    "No captum attribution for sentences: conductance integrates along a straight path from "
    "an all-zero input to the sample, and the token ids between 0 and a sentence's ids are "
    "other tokens, not a fainter sentence.")
NO_DATA = f"Top samples and attributions need validation data. {NO_DATA_NOTE}"


@st.cache_data(show_spinner="Running the validation samples through the model...",
               max_entries=16)
def summary(key: str, layer: str, _bundle: ModelBundle, _data: ValidationSet) -> LayerSummary:
    """``layer``'s per-image means, APoZ and range per neuron on the validation set (one
    streamed pass: N x neurons numbers are kept, never the positions)."""
    return layer_summary(_bundle, _data, layer)


@st.cache_data(show_spinner="Binning the layer's activations...", max_entries=16)
def histograms(key: str, layer: str, _bundle: ModelBundle,
               _data: ValidationSet) -> NeuronHistograms:
    """Every neuron's activation histogram of ``layer`` (a second streamed pass, once per
    layer: a click on another neuron or pair draws from it without running the model)."""
    return neuron_histograms(_bundle, _data, summary(key, layer, _bundle, _data))


def positions_note(layer: LayerSummary, noun: str = "images") -> str:
    """What a chart of the layer's activations counts: samples (``noun``: images or
    sentences), and positions per sample."""
    return f"On {over_samples(layer.samples, layer.positions, layer.values, noun)}."


@st.cache_data(show_spinner="Explaining with captum (NeuronConductance)...", max_entries=256)
def _attribution(key: str, layer: str, neuron: int, index: int, _bundle: ModelBundle,
                 _data: ValidationSet) -> Attribution:
    return attribution_map(_bundle, layer, neuron, _data.x[index])


def _explain(triple: tuple[str, str, int]) -> None:
    st.session_state.setdefault(EXPLAINED_KEY, set()).add(triple)


def neuron_examples(key: str, bundle: ModelBundle, data: ValidationSet | None, layer: str,
                    neuron: int, summarised: LayerSummary | None) -> None:
    """The neuron's top validation images, and on request the attribution of the first.

    ``summarised`` is the layer's :func:`summary`, or None without data.
    """
    if data is None:
        st.info(NO_DATA)
        return
    if summarised is None:
        return
    top = rank_images(summarised.means, neuron, TOP_K)
    if reads_text(bundle.card):
        _top_sentences(bundle, data, layer, neuron, top)
        return
    pictures = np.stack([charts.picture(data.x[i].numpy()) for i in top.indices])
    st.plotly_chart(charts.top_images(pictures, top.indices, top.values, neuron),
                    key=f"dd_top::{layer}::{neuron}", config={"displaylogo": False})
    if not top.values.any():
        st.caption(f"Neuron {neuron} is 0 on every validation image: these images are simply "
                   "the first ones.")
    _attribution_view(key, bundle, data, layer, neuron, top)


def _top_sentences(bundle: ModelBundle, data: ValidationSet, layer: str, neuron: int,
                   top: TopImages) -> None:
    """A text model's top samples: the sentences, with the neuron's mean over their tokens,
    and no attribution (:data:`NO_TEXT_ATTRIBUTION`)."""
    texts = sentences(bundle.card, data.x[top.indices])
    st.markdown(f"**Neuron {neuron}: the {len(texts)} validation sentences it responds to "
                "most** (its output averaged over each sentence's tokens, padding left out)")
    st.dataframe([{"#": int(i), "activation": float(v), "sentence": text}
                  for i, v, text in zip(top.indices, top.values, texts, strict=True)],
                  hide_index=True, key=f"dd_top::{layer}::{neuron}")
    if not top.values.any():
        st.caption(f"Neuron {neuron} is 0 on every validation sentence: these sentences are "
                   "simply the first ones.")
    st.caption(NO_TEXT_ATTRIBUTION)


def _attribution_view(key: str, bundle: ModelBundle, data: ValidationSet, layer: str,
                      neuron: int, top: TopImages) -> None:
    triple = (key, layer, neuron)
    if triple not in st.session_state.get(EXPLAINED_KEY, set()):
        st.button("Explain with captum", key=f"dd_explain::{layer}::{neuron}",
                  on_click=_explain, args=(triple,),
                  help=f"Which pixels of image #{int(top.indices[0])} drive the model's "
                       f"prediction through neuron {neuron}: captum's NeuronConductance")
        return
    index = int(top.indices[0])
    try:
        result = _attribution(key, layer, neuron, index, bundle, data)
    except ExplorerError as exc:
        st.warning(f"Neuron {neuron} cannot be explained: {exc}")
        return
    conductance = result.map.numpy()
    if conductance.ndim == 3:
        conductance = conductance.sum(axis=0)
    st.plotly_chart(
        charts.attribution(charts.picture(data.x[index].numpy()), charts.picture(conductance),
                           neuron, index, result.target),
        key=f"dd_attr::{layer}::{neuron}", config={"displaylogo": False})
    where = (f" at position {result.unit[1:]} of its map, where it is most active"
             if bundle.layer(layer).kind == "conv2d" else "")
    st.caption(
        f"captum NeuronConductance of neuron {neuron}{where}: how much each pixel adds to the "
        f"logit of class {result.target} (the model's prediction) through this neuron, "
        f"integrated from a black image ({result.n_steps} steps). The pixels sum to "
        f"{float(conductance.sum()):.4g}, the neuron's share of that logit.")


def neuron_drilldown(key: str, bundle: ModelBundle, data: ValidationSet | None, layer: str,
                     neuron: int) -> None:
    """One neuron: incoming weights, activation histogram, top images, attribution map."""
    spec = bundle.layer(layer)
    st.subheader(f"Neuron {neuron} of {layer}")
    summarised = binned = None
    if data is not None:
        try:
            summarised = summary(key, layer, bundle, data)
            binned = histograms(key, layer, bundle, data)
        except ExplorerError as exc:
            st.warning(f"No activations for {layer}: {exc}")
    row = bundle.params()[spec.weight].detach()[neuron].reshape(-1).float().numpy()
    view = weight_view(spec, bundle.input_shape, first=layer == bundle.layer_names[0])
    left, right = st.columns(2, gap="large")
    left.plotly_chart(charts.incoming_weights(row, neuron, view), key="dd_weights")
    if binned is not None:
        right.plotly_chart(charts.activation_histogram(binned.of(neuron), neuron),
                           key="dd_activations")
        right.caption(positions_note(summarised, samples_noun(bundle.card)))
    neuron_examples(key, bundle, data, layer, neuron, summarised)
