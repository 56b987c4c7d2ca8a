"""The real app in headless Chromium: pages render, sliders drive the metrics, the plan
survives page switches and reloads, a bad upload is refused cleanly, sessions are separate.

Expected numbers come from the engine (``Evaluator.evaluate`` on the plan read back from the
URL), formatted as the app formats them, and are compared with the displayed strings.
Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from playwright.sync_api import expect

from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui.format import count, percent
from explorer.ui.urls import plan_from_query

pytestmark = pytest.mark.browser

CNN = "digits-cnn"


def slider_label(name: str, kind: str, unit: str = "weights") -> str:
    return f"{name} ({kind}, {unit} removed %)"


FEATURES_0 = slider_label("features.0", "conv2d")
FEATURES_2 = slider_label("features.2", "conv2d")
CLASSIFIER_1 = slider_label("classifier.1", "linear")
CLASSIFIER_3 = slider_label("classifier.3", "linear")


def expect_plan_and_metrics(app, metrics_of, plan: Plan) -> None:
    """The URL holds ``plan`` and the Accuracy and FLOPs shown are the engine's for it."""
    shown = app.wait_for_plan(lambda p: p == plan)
    metrics = metrics_of(shown)
    expect(app.metric_value("Accuracy")).to_have_text(percent(metrics.accuracy))
    expect(app.metric_value("FLOPs per sample")).to_have_text(count(metrics.flops["effective"]))
    assert app.exceptions() == []


PAGES = [("Model", "/"), ("Weights", "/weights"), ("Activations", "/activations"),
         ("Similarity", "/similarity"), ("Sensitivity", "/sensitivity"), ("Prune", "/prune"),
         ("Compare criteria", "/compare"), ("Trade-offs", "/tradeoffs"),
         ("What pruning broke", "/broke"), ("Fine-tune", "/finetune"), ("Export", "/export")]


@pytest.mark.parametrize(("title", "path"), PAGES, ids=[t.lower() for t, _ in PAGES])
def test_each_page_renders_without_exception(open_app, title, path):
    app = open_app(f"{path}?model={CNN}")
    expect(app.nav_link(title)).to_have_attribute("aria-current", "page")
    app.screenshot(title.lower())
    assert app.exceptions() == [], f"{title} page raised:\n" + "\n".join(app.exceptions())
    assert app.query()["model"] == CNN


def test_slider_moves_metrics_to_engine_values(open_app, cnn_metrics):
    app = open_app(f"/prune?model={CNN}")
    expect_plan_and_metrics(app, cnn_metrics, Plan())
    dense = (app.metric("Accuracy"), app.metric("FLOPs per sample"))

    app.press(CLASSIFIER_1, "End")
    expect(app.slider(CLASSIFIER_1)).to_have_value("99")
    expect_plan_and_metrics(app, cnn_metrics, Plan(sparsity={"classifier.1": 0.99}))
    pruned = (app.metric("Accuracy"), app.metric("FLOPs per sample"))
    assert pruned[0] != dense[0] and pruned[1] != dense[1]

    app.press(FEATURES_2, "ArrowRight", times=3)
    expect(app.slider(FEATURES_2)).to_have_value("3")
    expect_plan_and_metrics(app, cnn_metrics,
                            Plan(sparsity={"classifier.1": 0.99, "features.2": 0.03}))
    assert app.metric("FLOPs per sample") != pruned[1]
    app.screenshot("prune-after-sliders")


def test_plan_is_kept_across_pages(open_app, cnn_metrics):
    app = open_app(f"/prune?model={CNN}")
    app.press(CLASSIFIER_1, "End")
    app.press(FEATURES_0, "ArrowRight", times=2)
    plan = Plan(sparsity={"classifier.1": 0.99, "features.0": 0.02})
    expect_plan_and_metrics(app, cnn_metrics, plan)
    sliders = app.slider_values()
    shown = {label: app.metric(label) for label in ("Accuracy", "FLOPs per sample", "Size")}

    app.navigate("Weights", "/weights")
    assert app.exceptions() == []
    app.navigate("Model", "/")
    app.navigate("Prune", "/prune")

    expect(app.slider(CLASSIFIER_1)).to_have_value("99")
    assert app.slider_values() == sliders
    assert {label: app.metric(label) for label in shown} == shown
    expect_plan_and_metrics(app, cnn_metrics, plan)


RELOADS = {
    "layers": "g=weights&c=magnitude&scope=layer&s=classifier.1:90,features.2:50",
    "neurons": "g=neurons&c=l1&scope=layer&s=classifier.1:50,features.0:25",
    "global": "g=weights&c=magnitude&scope=global&amount=80",
}


@pytest.mark.parametrize("query", RELOADS.values(), ids=RELOADS.keys())
def test_url_reproduces_the_plan(open_app, cnn_metrics, query):
    plan = plan_from_query(dict(parse_qsl(query)))
    app = open_app(f"/prune?model={CNN}&{query}")
    expect_plan_and_metrics(app, cnn_metrics, plan)
    sliders = app.slider_values()
    if plan.scope == "global":
        assert sliders == {"Removed overall (%)": 80}
        return
    assert sliders.pop("Set every layer to (%)") == 0
    assert all(f"{plan.granularity} removed %" in label for label in sliders), sliders
    layers = {label.partition(" (")[0]: value for label, value in sliders.items()}
    assert layers == {"features.0": 0, "features.2": 0, "classifier.1": 0, "classifier.3": 0,
                      "classifier.5": 0, **{n: round(f * 100) for n, f in plan.sparsity.items()}}


def test_bad_upload_shows_error_and_keeps_model(open_app, mlp, digits):
    app = open_app("/?model=digits-mlp&s=fc1:50")
    kept = Plan(sparsity={"fc1": 0.5})
    assert app.wait_for_plan(lambda p: p == kept) == kept
    baseline = percent(Evaluator(mlp, digits).evaluate(Plan()).accuracy)
    expect(app.metric_value("Baseline accuracy")).to_have_text(baseline)

    app.page.get_by_text("Upload your own model", exact=True).click()
    load = app.page.get_by_test_id("stFormSubmitButton").get_by_role("button", name="Load")
    for name, content in [("garbage.pt", b"this is not a model\x00\x01\x02"), ("empty.pt", b"")]:
        app.choose_file("Model file", name, content)
        with app.rerun():
            load.click()
        error = app.page.get_by_test_id("stAlertContentError")
        expect(error).to_contain_text("Could not load")
        expect(error).to_contain_text(name)
        assert "Traceback" not in error.inner_text()
        assert app.exceptions() == []
        model_box = app.page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
        expect(model_box).to_have_value("digits-mlp")
        expect(app.metric_value("Baseline accuracy")).to_have_text(baseline)
        assert app.query()["model"] == "digits-mlp"
        assert app.plan() == kept
    app.screenshot("model-bad-upload")


def test_two_sessions_keep_their_own_plans(open_app, cnn_metrics):
    one = open_app(f"/prune?model={CNN}")
    two = open_app(f"/prune?model={CNN}")

    # Both reruns in flight on the server at once, then both awaited.
    with one.rerun(), two.rerun():
        one.slider(CLASSIFIER_1).press("End")
        two.slider(FEATURES_0).press("End")
    expect_plan_and_metrics(one, cnn_metrics, Plan(sparsity={"classifier.1": 0.99}))
    expect_plan_and_metrics(two, cnn_metrics, Plan(sparsity={"features.0": 0.99}))

    one.press(CLASSIFIER_1, "ArrowLeft")
    two.press(CLASSIFIER_3, "End")
    expect_plan_and_metrics(two, cnn_metrics,
                            Plan(sparsity={"features.0": 0.99, "classifier.3": 0.99}))
    expect_plan_and_metrics(one, cnn_metrics, Plan(sparsity={"classifier.1": 0.98}))
    assert one.slider_values()[FEATURES_0] == 0
    assert two.slider_values()[CLASSIFIER_1] == 0
    assert one.metric("Accuracy") != two.metric("Accuracy")
