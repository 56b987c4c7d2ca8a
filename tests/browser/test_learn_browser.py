"""A lesson walked in headless Chromium: a teacher's link to lesson 1, a prediction before
any result, the reveal, then the full Prune page with the lesson's plan in its sliders and
the engine's accuracy, and back to the lesson with the progress kept.

Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from explorer.decide.targets import uniform_plan
from explorer.evaluator import Evaluator
from explorer.ui.format import percent

pytestmark = pytest.mark.browser

QUESTION = "Half of each layer goes."
WEIGHTS = "removing half of each layer's weights (the smallest |w|)"


def test_a_lesson_from_prediction_to_the_prune_page_and_back(open_app, mlp, digits):
    app = open_app("/learn?lesson=1")
    page = app.page
    title = "1. What pruning is: weights or neurons"
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    assert app.query()["lesson"] == "1"
    reveal = page.get_by_role("button", name="Reveal", exact=True)
    expect(reveal).to_be_disabled()
    expect(page.get_by_test_id("stDataFrame")).to_have_count(0)  # no result before a guess

    with app.rerun():
        page.get_by_test_id("stRadio").filter(has_text=QUESTION).get_by_text(
            WEIGHTS, exact=True).click()
    with app.rerun():
        reveal.click()
    expect(page.get_by_test_id("stDataFrame")).to_have_count(1)
    expect(page.get_by_test_id("stAlertContentSuccess")).to_contain_text("Right:")
    plan = uniform_plan(mlp, "weights", "magnitude", 0.5)
    accuracy = percent(Evaluator(mlp, digits).evaluate(plan).accuracy)
    expect(page.get_by_text(f"accuracy {accuracy}.", exact=False)).to_be_visible()
    app.screenshot("learn-lesson-1-revealed")

    with app.rerun():
        page.get_by_role("button", name="Open this in the Prune page").click()
    page.wait_for_url(lambda url: "/prune" in url)
    app.wait_for_query("model", "digits-mlp")
    assert app.wait_for_plan(lambda p: p == plan) == plan
    # the URL can hold the plan before the Prune page has drawn its sliders
    for name in ("fc1", "fc2", "fc3"):
        expect(app.slider(f"{name} (linear, weights removed %)")).to_have_value("50")
    assert {label: value for label, value in app.slider_values().items()
            if "removed %" in label} == {f"{n} (linear, weights removed %)": 50
                                         for n in ("fc1", "fc2", "fc3")}
    expect(app.metric_value("Accuracy")).to_have_text(accuracy)

    app.navigate("Lessons", "/learn")
    app.wait_for_query("lesson", "1")
    expect(page.get_by_test_id("stDataFrame")).to_have_count(1)  # still answered
    assert not app.exceptions()
