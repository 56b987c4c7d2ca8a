"""The Activations page on the real demo models; dead neurons checked with forward hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.data import digits_validation
from explorer.load.demos import load_demo

MAX_FIGURE_BYTES = 200_000

# Prunable layer -> the nn.ReLU module applied right after it (through BatchNorm in the
# ResNet), written out by hand from the zoo's architectures. Layers without a ReLU of their
# own (logits, the conv before a skip sum) are left out.
RELU_AFTER = {
    "digits-mlp": {"fc1": "relu1", "fc2": "relu2"},
    "digits-cnn": {
        "features.0": "features.1",
        "features.2": "features.3",
        "classifier.1": "classifier.2",
        "classifier.3": "classifier.4",
    },
    "digits-resnet": {
        "stem.0": "stem.2",
        "layer1.conv1": "layer1.relu1",
        "layer2.conv1": "layer2.relu1",
        "layer3.conv1": "layer3.relu1",
    },
}


def dead_by_hooks(model_name: str) -> dict[str, list[int]]:
    """Neurons whose ReLU output is 0 on every validation image and position."""
    bundle = load_demo(model_name)
    modules = dict(bundle.model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for layer, relu in RELU_AFTER[model_name].items():
        assert isinstance(modules[relu], torch.nn.ReLU)

        def keep(_module, _inputs, out, layer=layer):
            outputs[layer] = out.detach().clone()

        handles.append(modules[relu].register_forward_hook(keep))
    try:
        with torch.no_grad():
            bundle.model(digits_validation().x)
    finally:
        for handle in handles:
            handle.remove()
    dead = {}
    for layer, out in outputs.items():
        per_neuron = out.transpose(0, 1).reshape(out.shape[1], -1)  # (neurons, N * positions)
        dead[layer] = torch.nonzero((per_neuron == 0).all(dim=1)).flatten().tolist()
    return dead


def choose_layer(at, model: str, layer: str):
    return at.selectbox(key=f"act_layer::{model}").set_value(layer).run()


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_page_loads_for_every_demo_model(open_page, charts, model):
    at = open_page("activations", model)
    assert not at.exception
    assert not at.error
    assert set(charts.of(at)) == {"act_hist", "act_neurons"}
    assert max(charts.sizes(at).values()) < MAX_FIGURE_BYTES
    table = at.dataframe[0].value
    layers = list(at.selectbox(key=f"act_layer::{model}").options)
    assert table["layer"].tolist() == layers
    assert table["mean APoZ"].between(0, 1).all()


@pytest.mark.parametrize("model", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_dead_neurons_match_forward_hooks(open_page, charts, model):
    expected = dead_by_hooks(model)
    at = open_page("activations", model)
    table = at.dataframe[0].value.set_index("layer")
    for layer, dead in expected.items():
        assert table.loc[layer, "dead"] == len(dead), layer
    if model != "digits-resnet":  # BatchNorm keeps the ResNet's neurons alive
        assert sum(map(len, expected.values())) > 0

    layer = max(expected, key=lambda name: len(expected[name]))
    at = choose_layer(at, model, layer)
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Dead neurons"] == str(len(expected[layer]))
    figure = charts.of(at)["act_neurons"]
    shaded = sorted({int(i) for t in charts.traces(figure, "dead") for i in np.asarray(t["x"])})
    assert shaded == expected[layer]
    text = " ".join(md.value for md in at.markdown)
    if expected[layer]:
        assert f"{len(expected[layer])} dead neuron(s)" in text
        assert ", ".join(map(str, expected[layer])) in text


def test_choosing_a_layer_changes_the_charts(open_page, charts, cnn):
    at = open_page("activations", "digits-cnn")
    before = charts.of(at)
    assert before["act_hist"]["layout"]["title"]["text"].startswith("features.0:")

    at = choose_layer(at, "digits-cnn", "classifier.3")
    after = charts.of(at)
    assert after["act_hist"]["layout"]["title"]["text"].startswith("classifier.3:")
    bars = [t for t in after["act_neurons"]["data"] if t.get("xaxis") in (None, "x")]
    assert sum(len(t["x"]) for t in bars) == cnn.layer("classifier.3").neurons
    counts = np.asarray(after["act_hist"]["data"][0]["y"])
    assert counts.sum() == 360 * 128  # every activation of the layer, binned
    assert len(counts) == 200


def test_log_count_axis_toggle(open_page, charts):
    at = open_page("activations", "digits-mlp")
    assert charts.of(at)["act_hist"]["layout"]["yaxis"]["type"] == "linear"
    at = at.toggle(key="act_log").set_value(True).run()
    assert not at.exception
    assert charts.of(at)["act_hist"]["layout"]["yaxis"]["type"] == "log"
