"""The Prune page's N:M pattern choice in AppTest: the plan it builds and the engine's metrics."""

from __future__ import annotations

from pagetest import metric, open_url

from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui.format import count, percent
from explorer.ui.urls import plan_from_query

FITS = ("features.2", "classifier.1", "classifier.3", "classifier.5")  # features.0: 1 channel


def test_choosing_two_of_four_builds_the_pattern_plan(cnn, digits):
    at = open_url("prune", model="digits-cnn")
    at.radio(key="pr_pattern").set_value("2:4").run()
    assert not at.exception
    plan = Plan(sparsity=dict.fromkeys(FITS, 0.5), pattern="2:4")
    assert at.session_state["plan"] == plan
    assert dict(at.query_params)["pattern"] == "2:4"
    assert plan_from_query(dict(at.query_params)) == plan
    want = Evaluator(cnn, digits).evaluate(plan)
    assert metric(at, "Accuracy") == percent(want.accuracy)
    assert metric(at, "FLOPs per sample") == count(want.flops["effective"])
    assert not [s for s in at.slider if s.label.startswith("features.2 (")]  # no sliders

    at.multiselect(key="pr_pattern_layers").unselect("classifier.1").run()
    plan = Plan(sparsity=dict.fromkeys(("features.2", "classifier.3", "classifier.5"), 0.5),
                pattern="2:4")
    assert at.session_state["plan"] == plan

    at.radio(key="pr_scope").set_value("global").run()
    assert at.session_state["plan"] == Plan(scope="global", pattern="2:4")
    assert any("features.0" not in c.value and "stay dense" in c.value for c in at.caption)

    at.radio(key="pr_pattern").set_value("none").run()
    assert at.session_state["plan"].pattern is None
    assert not at.exception


def test_a_link_with_a_pattern_opens_it_with_wanda(cnn, digits):
    at = open_url("prune", model="digits-cnn", c="wanda", scope="global", pattern="4:8")
    plan = Plan(criterion="wanda", scope="global", pattern="4:8")
    assert at.session_state["plan"] == plan
    assert at.radio(key="pr_pattern").value == "4:8"
    assert metric(at, "Accuracy") == percent(Evaluator(cnn, digits).evaluate(plan).accuracy)
