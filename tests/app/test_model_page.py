"""The Model page in AppTest: overview numbers, model switch, uploads good and bad."""

from __future__ import annotations

import io

import torch
from pagetest import metric, open_url
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.load.zoo import ZOO
from explorer.plan import Plan
from explorer.ui.format import count, percent


def open_page(**query: str) -> AppTest:
    return open_url("model", **query)


def upload(at: AppTest, name: str, content: bytes) -> AppTest:
    at.file_uploader(key="upload_model").set_value((name, content, "application/octet-stream"))
    next(b for b in at.button if b.label == "Load").click().run()
    return at


def test_overview_matches_the_engine(cnn, digits):
    at = open_page(model="digits-cnn")
    dense = Evaluator(cnn, digits).evaluate(Plan())
    assert metric(at, "Baseline accuracy") == percent(dense.accuracy)
    assert metric(at, "Parameters") == count(cnn.param_count)
    assert metric(at, "FLOPs per sample") == count(cnn.flops)
    table = at.dataframe[0].value
    assert list(table["layer"]) == cnn.layer_names
    assert list(table["FLOPs / sample"]) == [la.flops for la in cnn.layers]
    shares = sum(la.flops for la in cnn.layers) / cnn.flops
    assert abs(table["share of FLOPs"].sum() - shares) < 1e-9


def test_switching_model_in_the_sidebar(resnet):
    at = open_page(model="digits-cnn")
    at.selectbox(key="model_picker").set_value("digits-resnet").run()
    assert not at.exception
    assert list(at.dataframe[0].value["layer"]) == resnet.layer_names
    assert at.query_params["model"] == "digits-resnet"
    removable = dict(zip(at.dataframe[0].value["layer"],
                         at.dataframe[0].value["neurons removable"], strict=True))
    assert removable["layer1.conv1"] == "yes"
    assert removable["stem.0"] == "yes, together with layer1.conv2 (coupled)"
    assert removable["fc"].startswith("no: its output is the model's output")


def test_uploading_weights_switches_to_that_model(mlp, digits):
    state = {k: v.clone() for k, v in mlp.model.state_dict().items()}
    state["fc1.weight"][:, :32] = 0  # a visibly different model
    at = upload(open_page(model="digits-cnn"), "mine.safetensors", save(state))
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["model"] == "upload:mine.safetensors"
    changed = mlp.model.__class__()
    changed.load_state_dict(state)
    expected = (changed(digits.x).argmax(1) == digits.y).float().mean().item()
    assert metric(at, "Baseline accuracy") == percent(expected)
    assert "fc1" in list(at.dataframe[0].value["layer"])


def test_bad_upload_shows_a_message_and_keeps_the_model(cnn):
    at = open_page(model="digits-cnn")
    for name, content in [("empty.pt", b""), ("junk.pt", b"not a model at all"),
                          ("model.pt", _pickled_module())]:
        upload(at, name, content)
        assert not at.exception
        assert at.error and "Could not load it" in at.error[0].value, name
        assert at.session_state["model"] == "digits-cnn"
        assert list(at.dataframe[0].value["layer"]) == cnn.layer_names


def test_load_without_a_file_says_so(cnn):
    at = open_page(model="digits-cnn")
    next(b for b in at.button if b.label == "Load").click().run()
    assert not at.exception and not at.error
    assert at.warning and "Choose a model file first" in at.warning[0].value
    assert at.session_state["model"] == "digits-cnn"


def _pickled_module() -> bytes:
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buffer)
    return buffer.getvalue()


def test_plan_file_in_the_sidebar():
    at = open_page(model="digits-cnn")
    plan = Plan(sparsity={"classifier.1": 0.75})
    content = plan.to_json().encode()
    at.file_uploader(key="plan_file").set_value(("p.json", content, "application/json"))
    at.run()
    assert at.session_state["plan"] == plan
    bad = b'{"version": 1, "sparsity": {"nope": 0.5}}'
    at.file_uploader(key="plan_file").set_value(("q.json", bad, "application/json"))
    at.run()
    assert at.session_state["plan"] == plan
    assert any("not loaded" in w.value and "'nope'" in w.value for w in at.warning)


def test_architecture_only_model_shows_no_accuracy():
    at = open_page(model="resnet18-cifar")
    assert metric(at, "Baseline accuracy") == "n/a"
    assert any("Architecture-only model" in i.value for i in at.info)
    assert metric(at, "Parameters") == count(ZOO["resnet18-cifar"].card()["params"])
    assert "layer4.1.conv2" in list(at.dataframe[0].value["layer"])
