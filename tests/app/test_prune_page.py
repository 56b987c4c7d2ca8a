"""The Prune page in AppTest: controls change the plan, metrics equal the engine's."""

from __future__ import annotations

import pytest
from pagetest import metric, open_url
from streamlit.testing.v1 import AppTest

from explorer.data import digits_train
from explorer.evaluator import Evaluator
from explorer.load.demos import load_demo
from explorer.plan import Plan
from explorer.ui.format import count, percent
from explorer.ui.urls import plan_from_query


def open_page(**query: str) -> AppTest:
    return open_url("prune", **query)


def slider(at: AppTest, layer: str):
    return next(s for s in at.slider if s.label.startswith(f"{layer} ("))


def engine(bundle, digits, plan: Plan):
    return Evaluator(bundle, digits).evaluate(plan)


def test_slider_moves_metrics_to_the_engine_values(cnn, digits):
    at = open_page(model="digits-cnn")
    dense = engine(cnn, digits, Plan())
    assert metric(at, "Accuracy") == percent(dense.accuracy)
    assert metric(at, "FLOPs per sample") == count(dense.flops["dense"])
    slider(at, "features.2").set_value(80).run()
    plan = Plan(sparsity={"features.2": 0.8})
    want = engine(cnn, digits, plan)
    assert at.session_state["plan"] == plan
    assert metric(at, "Accuracy") == percent(want.accuracy)
    assert metric(at, "FLOPs per sample") == count(want.flops["effective"])
    assert metric(at, "Loss") == f"{want.loss:.4f}"
    assert metric(at, "Compression") == f"{want.compression_ratio:.2f}x"
    assert plan_from_query(dict(at.query_params)) == plan
    card = next(m for m in at.metric if m.label == "Agreement with dense")
    assert card.value == percent(want.fidelity["agreement"]) != percent(1.0)
    assert f"{want.fidelity['cosine']:.4f}" in card.proto.help  # cosine, in its help


def test_undo_and_reset(cnn, digits):
    at = open_page(model="digits-cnn")
    slider(at, "classifier.1").set_value(90).run()
    slider(at, "classifier.3").set_value(50).run()
    assert at.session_state["plan"].fraction("classifier.3") == 0.5
    next(b for b in at.button if b.label == "Undo").click().run()
    assert at.session_state["plan"] == Plan(sparsity={"classifier.1": 0.9})
    assert slider(at, "classifier.3").value == 0 and slider(at, "classifier.1").value == 90
    next(b for b in at.button if b.label == "Reset").click().run()
    assert at.session_state["plan"] == Plan()
    assert metric(at, "Accuracy") == percent(engine(cnn, digits, Plan()).accuracy)


def test_set_every_layer_then_switch_to_neurons(cnn, digits):
    at = open_page(model="digits-cnn")
    next(s for s in at.slider if s.label.startswith("Set every layer")).set_value(50).run()
    assert at.session_state["plan"] == Plan(sparsity={n: 0.5 for n in cnn.layer_names})
    at.radio(key="pr_granularity").set_value("neurons").run()
    plan = at.session_state["plan"]
    assert plan.granularity == "neurons" and plan.criterion == "l1"
    assert "classifier.5" not in plan.sparsity  # its neurons are the classes
    assert slider(at, "classifier.5").disabled
    want = engine(cnn, digits, plan)
    assert metric(at, "Accuracy") == percent(want.accuracy)
    assert "structured" in want.size_bytes
    at.selectbox(key="pr_criterion").set_value("l2").run()
    assert at.session_state["plan"].criterion == "l2"
    assert metric(at, "Accuracy") == percent(engine(cnn, digits, at.session_state["plan"])
                                             .accuracy)


def test_global_scope(cnn, digits):
    at = open_page(model="digits-cnn")
    at.radio(key="pr_scope").set_value("global").run()
    next(s for s in at.slider if s.label.startswith("Removed overall")).set_value(90).run()
    plan = Plan(scope="global", amount=0.9)
    assert at.session_state["plan"] == plan
    assert metric(at, "Accuracy") == percent(engine(cnn, digits, plan).accuracy)


def test_url_reproduces_the_plan(mlp, digits):
    at = open_page(model="digits-mlp", g="neurons", c="l2", s="fc1:50,fc2:25")
    plan = Plan(granularity="neurons", criterion="l2", sparsity={"fc1": 0.5, "fc2": 0.25})
    assert at.session_state["plan"] == plan
    assert slider(at, "fc1").value == 50 and slider(at, "fc2").value == 25
    assert metric(at, "Accuracy") == percent(engine(mlp, digits, plan).accuracy)


@pytest.mark.parametrize("query", [{"s": "fc9:50"}, {"s": "fc1:150"}, {"g": "bits"}])
def test_bad_url_plan_is_a_warning_not_a_traceback(query):
    at = open_page(model="digits-mlp", **query)
    assert at.session_state["plan"] == Plan()
    assert any("ignored" in w.value or "reset" in w.value for w in at.warning)


def test_every_plan_is_kept_on_the_tradeoff_chart(cnn):
    at = open_page(model="digits-cnn")
    for value in (30, 60, 90):
        slider(at, "classifier.1").set_value(value).run()
    history = at.session_state["history"]["digits-cnn"]
    assert len(history) == 4  # dense + three plans
    charts = at.get("plotly_chart")
    assert len(charts) == 2


def test_coupled_sliders_move_together(resnet, digits):
    at = open_page(model="digits-resnet", g="neurons", c="l1")
    assert slider(at, "layer1.conv2").label.endswith("[linked]")
    slider(at, "stem.0").set_value(50).run()
    plan = at.session_state["plan"]
    assert plan.fraction("stem.0") == plan.fraction("layer1.conv2") == 0.5
    assert slider(at, "layer1.conv2").value == 50
    assert slider(at, "fc").disabled
    want = Evaluator(resnet, digits, bn_calibration=digits_train()).evaluate(plan)  # the default
    assert metric(at, "Accuracy") == percent(want.accuracy)
    assert any("layer2.downsample.0 + layer2.conv2" in m.value for m in at.markdown)


def test_architecture_only_model_prunes_costs_without_accuracy():
    at = open_page(model="resnet18-cifar", g="neurons", c="l1")
    slider(at, "layer1.0.conv1").set_value(50).run()
    plan = Plan(granularity="neurons", criterion="l1", sparsity={"layer1.0.conv1": 0.5})
    assert at.session_state["plan"] == plan
    assert metric(at, "Accuracy") == "n/a" and metric(at, "Loss") == "n/a"
    assert "Agreement with dense" not in [m.label for m in at.metric]  # no images, no outputs
    want = Evaluator(load_demo("resnet18-cifar"), None).evaluate(plan)
    assert metric(at, "FLOPs per sample") == count(want.flops["effective"])
    assert [c.key for c in at.get("plotly_chart")] == ["per_layer"]  # no accuracy to trade
