"""The neuron drill-down on the Similarity and Activations pages.

AppTest cannot click a plotly chart: the tests set what a click sets (``sim_pair``,
``act_neuron``) and read the figures back. Expected images come from a forward hook on the
layer's ReLU module, expected attributions from the engine's ``attribution_map``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hooks import relu_outputs
from streamlit.proto.PlotlyChart_pb2 import PlotlyChart
from streamlit.testing.v1 import AppTest

from explorer.look.drilldown import attribution_map
from explorer.ui.views import drilldown as drilldown_view

PAGES = Path(__file__).resolve().parents[2] / "app_pages"


def open_page(page: str, model: str, **state) -> AppTest:
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=90)
    at.query_params["model"] = model
    for key, value in state.items():
        at.session_state[key] = value
    return checked(at.run())


def checked(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def top_by_hook(bundle, relu: str, x: torch.Tensor, neuron: int, k: int = 8) -> list[int]:
    """The ``k`` images with the highest (position-averaged) output of ``relu``."""
    out = relu_outputs(bundle, relu, x)
    means = out.flatten(2).mean(dim=2) if out.dim() == 4 else out
    return torch.sort(means[:, neuron], descending=True, stable=True).indices[:k].tolist()


def shown_images(figure: dict) -> list[int]:
    """The validation indices a top-images figure names, from its traces."""
    return [int(t["name"].removeprefix("image ")) for t in figure["data"]]


def title(figure: dict) -> str:
    return figure["layout"]["title"]["text"]


@pytest.mark.parametrize(("model", "fixture", "layer", "relu", "pair"), [
    ("digits-mlp", "mlp", "fc1", "relu1", (3, 17)),
    ("digits-cnn", "cnn", "features.2", "features.3", (5, 44)),
])
def test_a_chosen_pair_shows_each_neurons_top_images_and_explains_on_request(
        model, fixture, layer, relu, pair, request, digits, charts):
    bundle = request.getfixturevalue(fixture)
    i, j = pair
    at = open_page("similarity", model, sim_layer=layer,
                   sim_pair={"layer": layer, "i": i, "j": j})
    figures = charts.of(at)
    for neuron in pair:
        top = figures[f"dd_top::{layer}::{neuron}"]
        assert title(top) == f"Neuron {neuron}: the 8 validation images it responds to most"
        expected = top_by_hook(bundle, relu, digits.x, neuron)
        assert shown_images(top) == expected
        np.testing.assert_allclose(np.asarray(top["data"][0]["z"]),
                                   digits.x[expected[0], 0].numpy(), rtol=1e-6)
    assert not any(key.startswith("dd_attr::") for key in figures)  # captum waits for a click

    at = checked(at.button(key=f"dd_explain::{layer}::{i}").click().run())
    figures = charts.of(at)
    assert f"dd_attr::{layer}::{j}" not in figures
    explained = figures[f"dd_attr::{layer}::{i}"]
    first = top_by_hook(bundle, relu, digits.x, i)[0]
    result = attribution_map(bundle, layer, i, digits.x[first])
    assert title(explained) == (f"Neuron {i}: conductance toward class {result.target} "
                                f"on image #{first}")
    conductance = np.asarray(explained["data"][1]["z"])
    np.testing.assert_allclose(conductance, result.map[0].numpy(), rtol=1e-5, atol=1e-7)
    caption = " ".join(c.value for c in at.caption)
    assert f"NeuronConductance of neuron {i}" in caption
    if bundle.layer(layer).kind == "conv2d":
        assert f"at position {result.unit[1:]}" in caption

    # Another rerun keeps the explanation (cached), and the other neuron can be explained.
    at = checked(at.button(key=f"dd_explain::{layer}::{j}").click().run())
    assert {f"dd_attr::{layer}::{i}", f"dd_attr::{layer}::{j}"} <= set(charts.of(at))


def test_a_clicked_neuron_opens_its_drilldown_on_the_activations_page(mlp, digits, charts):
    at = open_page("activations", "digits-mlp", act_neuron={"layer": "fc2", "neuron": 5})
    assert at.selectbox(key="act_layer::digits-mlp").value == "fc2"  # opened on its layer
    assert [s.value for s in at.subheader] == ["Neuron 5 of fc2"]
    figures = charts.of(at)
    weights = figures["dd_weights"]
    assert title(weights) == "Neuron 5: incoming weights"
    np.testing.assert_allclose(np.asarray(weights["data"][0]["y"]),
                               mlp.params()["fc2.weight"][5].detach().numpy(), rtol=1e-6)
    histogram = figures["dd_activations"]
    assert title(histogram) == "Neuron 5: activations"
    assert np.asarray(histogram["data"][0]["y"]).sum() == len(digits)
    assert shown_images(figures["dd_top::fc2::5"]) == top_by_hook(mlp, "relu2", digits.x, 5)

    at = checked(at.button(key="dd_explain::fc2::5").click().run())
    explained = charts.of(at)["dd_attr::fc2::5"]
    assert title(explained).startswith("Neuron 5: conductance toward class ")


def test_the_drilldown_follows_the_layer_shown(charts):
    at = open_page("activations", "digits-cnn")
    assert not any(key.startswith("dd_") for key in charts.of(at))
    assert any("Click a neuron's bar" in c.value for c in at.caption)
    # a neuron of another layer than the one shown opens nothing
    at = open_page("activations", "digits-cnn", act_neuron={"layer": "features.2", "neuron": 1},
                   **{"act_layer::digits-cnn": "classifier.1"})
    assert at.selectbox(key="act_layer::digits-cnn").value == "classifier.1"
    assert not any(key.startswith("dd_") for key in charts.of(at))
    at.selectbox(key="act_layer::digits-cnn").set_value("features.2")
    at = checked(at.run())
    assert [s.value for s in at.subheader] == ["Neuron 1 of features.2"]
    figures = charts.of(at)
    assert np.asarray(figures["dd_weights"]["data"][0]["z"]).shape == (32, 9)
    # a neuron index the layer does not have is ignored
    at.session_state["act_neuron"] = {"layer": "features.2", "neuron": 64}
    at = checked(at.run())
    assert not at.subheader


def test_the_bar_chart_reports_clicks_on_neurons(charts):
    at = open_page("activations", "digits-mlp")
    (chart,) = [c for c in at.get("plotly_chart") if c.key == "act_neurons"]
    assert list(chart.proto.selection_mode) == [PlotlyChart.SelectionMode.POINTS]  # a click


def test_without_data_the_examples_say_what_is_missing(mlp):
    def script():
        from explorer.load.demos import load_demo
        from explorer.ui.views import drilldown as drilldown_view

        drilldown_view.neuron_examples("k", load_demo("digits-mlp"), None, "fc1", 0, None)

    at = checked(AppTest.from_function(script, default_timeout=60).run())
    assert [i.value for i in at.info] == [drilldown_view.NO_DATA]
    assert not at.get("plotly_chart")
