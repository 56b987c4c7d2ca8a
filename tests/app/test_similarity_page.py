"""The Similarity page: heatmaps per layer and kind, the top pairs, the two-neuron view.

AppTest cannot click a plotly chart or a table row: the tests set the pair a click sets
(``st.session_state["sim_pair"]``) and read the figures' JSON. The click overlay itself is
checked without Streamlit, on the figure the page sends.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
import streamlit as st
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from explorer.activations import collect_activations
from explorer.look.similarity import (
    correlation_matrix,
    cosine_matrix,
    summarize,
    weight_similarity,
)
from explorer.ui.charts import similarity as charts
from explorer.ui.format import percent

PAGE = str(Path(__file__).resolve().parents[2] / "app_pages" / "similarity.py")


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()


def open_page(model: str, **state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = model
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def array(value) -> np.ndarray:
    """A plotly JSON array: a plain list, or a base64 typed array {dtype, bdata, shape}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype="<" + value["dtype"])
        shape = value.get("shape")
        return flat.reshape([int(n) for n in shape.split(",")]) if shape else flat
    return np.asarray(value)


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def heatmap_of(at: AppTest) -> dict:
    (fig,) = [f for f in figures(at) if [t["type"] for t in f["data"]] == ["heatmap", "scattergl"]]
    return fig


def titled(at: AppTest, start: str) -> dict:
    (fig,) = [f for f in figures(at) if f["layout"].get("title", {}).get("text", "").startswith(
        start)]
    return fig


def weight_rows(bundle, layer: str) -> torch.Tensor:
    return bundle.params()[bundle.layer(layer).weight].detach().flatten(1)


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_page_loads_for_each_demo_model(model, request):
    bundle = request.getfixturevalue({"digits-mlp": "mlp", "digits-cnn": "cnn",
                                      "digits-resnet": "resnet"}[model])
    at = open_page(model)
    first = bundle.layers[0]
    assert at.selectbox(key="sim_layer").value == first.name
    assert at.radio(key="sim_kind").value == "weights"
    fig = heatmap_of(at)
    assert array(fig["data"][0]["z"]).shape == (first.neurons, first.neurons)
    assert len(at.get("plotly_chart")[0].proto.spec) < 1_200_000
    assert len(at.dataframe[0].value) == min(20, first.neurons * (first.neurons - 1) // 2)
    assert at.subheader[0].value.startswith("Neuron ")


def test_switching_weights_and_activations_changes_the_heatmap(cnn):
    at = open_page("digits-cnn")
    weights = array(heatmap_of(at)["data"][0]["z"])
    expected = weight_similarity(cnn, "features.0").matrix
    np.testing.assert_array_equal(weights, np.rint((expected + 1) * 100))
    at.radio(key="sim_kind").set_value("activations").run()
    assert not at.exception
    activations = array(heatmap_of(at)["data"][0]["z"])
    assert activations.shape == weights.shape
    assert not np.array_equal(activations, weights)
    assert heatmap_of(at)["data"][0]["colorbar"]["title"]["text"] == "correlation"
    at.radio(key="sim_kind").set_value("weights").run()
    np.testing.assert_array_equal(array(heatmap_of(at)["data"][0]["z"]), weights)


def test_changing_the_layer_changes_the_heatmap(mlp):
    at = open_page("digits-mlp")
    assert array(heatmap_of(at)["data"][0]["z"]).shape == (300, 300)
    at.selectbox(key="sim_layer").set_value("fc2").run()
    assert not at.exception
    fig = heatmap_of(at)
    assert array(fig["data"][0]["z"]).shape == (100, 100)
    order = weight_similarity(mlp, "fc2").order
    ticks = fig["layout"]["xaxis"]
    assert ticks["ticktext"] == [str(order[k]) for k in ticks["tickvals"]]
    assert sorted(array(fig["data"][1]["customdata"])[:, 0].tolist()) == sorted(
        np.repeat(np.arange(100), 100).tolist())


@pytest.mark.parametrize(("model", "fixture", "layer"), [
    ("digits-mlp", "mlp", "fc2"),
    ("digits-cnn", "cnn", "features.2"),
    ("digits-resnet", "resnet", "layer3.conv1"),
])
def test_top_pair_equals_brute_force_cosine(model, fixture, layer, request):
    rows = weight_rows(request.getfixturevalue(fixture), layer).double()
    sims = F.cosine_similarity(rows[:, None, :], rows[None, :, :], dim=-1)
    best = max((sims[i, j].item(), i, j) for i in range(len(rows))
               for j in range(i + 1, len(rows)))
    at = open_page(model)
    at.selectbox(key="sim_layer").set_value(layer).run()
    assert not at.exception
    top = at.dataframe[0].value.iloc[0]
    assert (int(top["neuron i"]), int(top["neuron j"])) == (best[1], best[2])
    assert top["similarity"] == pytest.approx(best[0], abs=1e-6)


@pytest.mark.parametrize(("model", "fixture", "layer", "pair", "shape"), [
    ("digits-mlp", "mlp", "fc1", (3, 17), (8, 8)),  # 64 inputs: the 8x8 image
    ("digits-cnn", "cnn", "features.0", (30, 2), (3, 3)),  # one input channel: the kernel
    ("digits-cnn", "cnn", "features.2", (5, 44), (32, 9)),  # (C_in, kh * kw)
    ("digits-mlp", "mlp", "fc2", (7, 90), None),  # deeper linear: bars
    ("digits-resnet", "resnet", "layer2.downsample.0", (0, 31), None),  # 1x1 conv: bars
])
def test_selected_pair_shows_both_neurons(model, fixture, layer, pair, shape, request, digits):
    i, j = pair
    rows = weight_rows(request.getfixturevalue(fixture), layer)
    at = open_page(model, sim_layer=layer, sim_pair={"layer": layer, "i": i, "j": j})
    assert at.subheader[0].value == f"Neuron {i} and neuron {j}"
    weights = titled(at, "Incoming weights")
    assert weights["layout"]["title"]["text"] == f"Incoming weights of neuron {i} and neuron {j}"
    assert [a["text"] for a in weights["layout"]["annotations"]] == [f"neuron {i}",
                                                                    f"neuron {j}"]
    for trace, neuron in zip(weights["data"], pair, strict=True):
        if shape is None:
            assert trace["type"] == "bar"
            got = array(trace["y"])
        else:
            assert trace["type"] == "heatmap"
            got = array(trace["z"])
            assert got.shape == shape
        np.testing.assert_allclose(got, rows[neuron].reshape(shape or -1).numpy(), rtol=1e-7)
    activations = titled(at, "Activations")
    assert activations["layout"]["title"]["text"] == f"Activations of neuron {i} and neuron {j}"
    assert [t["name"] for t in activations["data"]] == [f"neuron {i}", f"neuron {j}"]
    cosine = F.cosine_similarity(rows[i].double(), rows[j].double(), dim=0).item()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Cosine of incoming weights"] == f"{cosine:.4f}"
    # The streamed summary's numbers are those of every image's activations at once.
    acts = collect_activations(request.getfixturevalue(fixture), digits,
                               [layer])[layer][:, [i, j]].numpy()
    assert shown["Correlation of activations"] == f"{correlation_matrix(acts)[0, 1]:.4f}"
    assert shown["Zero outputs (APoZ)"] == " · ".join(
        percent(float(z)) for z in (acts == 0).mean(axis=(0, 2)))
    for trace in activations["data"]:
        assert array(trace["y"]).sum() == acts.shape[0] * acts.shape[2]


def test_the_page_reopens_on_the_remembered_pair():
    at = open_page("digits-mlp", sim_pair={"layer": "fc2", "i": 1, "j": 2})
    assert at.selectbox(key="sim_layer").value == "fc2"
    assert at.subheader[0].value == "Neuron 1 and neuron 2"


def test_a_pair_of_another_layer_falls_back_to_the_top_pair(mlp):
    at = open_page("digits-mlp", sim_layer="fc1", sim_pair={"layer": "fc2", "i": 1, "j": 2})
    i, j, _ = weight_similarity(mlp, "fc1").pairs[0]
    assert at.subheader[0].value == f"Neuron {i} and neuron {j}"
    at.session_state["sim_pair"] = {"layer": "fc1", "i": 5, "j": 999}  # out of range
    at.run()
    assert not at.exception
    assert at.subheader[0].value == f"Neuron {i} and neuron {j}"


# The click overlay, without Streamlit.


def random_similarity(n: int, max_size: int = 512, seed: int = 0):
    rows = np.random.default_rng(seed).normal(size=(n, 12))
    return summarize(cosine_matrix(rows), max_size=max_size)


def test_overlay_points_sit_at_cell_centres_and_name_their_neurons():
    sim = random_similarity(9)
    fig = charts.heatmap(sim, "weights")
    cells, overlay = fig.data
    assert cells.x is None and cells.y is None  # cell (row r, column c) is centred at (c, r)
    assert overlay.type == "scattergl"
    x, y, ids = np.asarray(overlay.x), np.asarray(overlay.y), np.asarray(overlay.customdata)
    assert len(x) == 81
    for k in range(81):
        row, col = divmod(k, 9)
        assert (x[k], y[k]) == (col, row)
        assert tuple(ids[k]) == (sim.order[row], sim.order[col])
        assert charts.pair_at(sim, {"customdata": {"0": int(ids[k][0]), "1": int(ids[k][1])},
                                    "x": int(x[k]), "y": int(y[k])}) == (
            None if row == col else (sim.order[row], sim.order[col]))


def test_a_point_is_read_from_customdata_or_from_its_position():
    sim = random_similarity(6)
    o = sim.order
    assert charts.pair_at(sim, {"customdata": [int(o[1]), int(o[4])]}) == (o[1], o[4])
    assert charts.pair_at(sim, {"customdata": {"0": int(o[1]), "1": int(o[4])}}) == (o[1], o[4])
    assert charts.pair_at(sim, {"x": 4, "y": 1}) == (o[1], o[4])
    assert charts.pair_at(sim, {"x": 2, "y": 2}) is None
    assert charts.pair_at(sim, {}) is None


def test_on_a_reduced_matrix_a_cell_is_a_block_named_by_its_first_neuron():
    sim = random_similarity(10, max_size=4)  # blocks of 3, 3, 3 and 1 neurons
    assert sim.reduced and sim.matrix.shape == (4, 4)
    x, y, ids = charts.overlay(sim)
    first = sim.order[[0, 3, 6, 9]]
    for k in range(16):
        row, col = divmod(k, 4)
        assert (x[k], y[k]) == (col, row)
        assert tuple(ids[k]) == (first[row], first[col])
    # the diagonal of a block compares its first two neurons; a lone neuron has no pair
    assert charts.pair_at(sim, {"customdata": [int(first[1])] * 2}) == (sim.order[3],
                                                                        sim.order[4])
    assert charts.pair_at(sim, {"customdata": [int(first[3])] * 2}) is None


def test_past_the_overlay_limit_a_point_stands_for_a_group_of_cells():
    sim = random_similarity(2 * charts.OVERLAY_MAX + 10)  # 650 neurons: 325 cells a side
    m = sim.matrix.shape[0]
    assert charts.overlay_step(sim) == 2
    x, y, ids = charts.overlay(sim)
    side = (m + 1) // 2
    assert len(x) == side * side
    assert np.array_equal(x[:side], np.minimum(np.arange(0, m, 2) + 0.5, m - 1))
    assert tuple(ids[side + 1]) == tuple(charts.first_neurons(sim)[[2, 2]])
    assert charts.pair_at(sim, {"x": float(x[3]), "y": float(y[side])}) == tuple(
        charts.first_neurons(sim)[[2, 6]])


def test_a_512_heatmap_is_under_2_mb_of_json():
    sim = random_similarity(512)
    assert sim.matrix.shape == (512, 512) and not sim.reduced
    assert len(pio.to_json(charts.heatmap(sim, "activations"), validate=False)) < 2_000_000


def test_weight_views_follow_the_layer(mlp, cnn, resnet):
    assert charts.weight_view(mlp.layer("fc1"), mlp.input_shape, first=True).shape == (8, 8)
    assert charts.weight_view(mlp.layer("fc2"), mlp.input_shape, first=False).shape is None
    assert charts.weight_view(cnn.layer("features.0"), cnn.input_shape, True).shape == (3, 3)
    assert charts.weight_view(cnn.layer("features.2"), cnn.input_shape, False).shape == (32, 9)
    assert charts.weight_view(resnet.layer("layer2.downsample.0"), resnet.input_shape,
                              False).shape is None
