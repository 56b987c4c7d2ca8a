"""Deciding the sparsity in headless Chromium: scan, suggest, apply to the sliders; then the
Trade-offs page with the plans just tried, a pinned plan and a comparison.

Expected values come from a fresh :class:`~explorer.evaluator.Evaluator` on the plan read
back from the URL. Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from explorer.evaluator import Evaluator
from explorer.ui.format import percent

pytestmark = pytest.mark.browser

SCAN_MS = 120_000
NOTE = "Chosen on 182 calibration images of the 360 digits-val images"
# Every plotly figure on the page: its traces' names, x values and text labels.
TRACES = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => gd.data.map(t => ({
    name: t.name, x: t.x ? Array.from(t.x) : [], text: t.text ? Array.from(t.text) : [],
})))"""


def traces(app, name: str) -> list[dict]:
    return [t for figure in app.page.evaluate(TRACES) for t in figure if t["name"] == name]


def test_scan_suggest_and_apply_to_the_sliders(open_app, mlp, digits):
    app = open_app("/sensitivity?model=digits-mlp")
    with app.rerun():
        app.page.get_by_test_id("stRadio").get_by_text("10%", exact=True).click()
    app.page.get_by_role("button", name="Run", exact=True).click()
    suggest = app.page.get_by_role("button", name="Suggest", exact=True)
    expect(suggest).to_be_visible(timeout=SCAN_MS)  # the scan finished and was drawn
    app.wait_idle()
    with app.rerun(timeout=SCAN_MS):
        suggest.click()  # default target: 4x fewer FLOPs
    apply = app.page.get_by_role("button", name="Apply suggested to the sliders")
    expect(apply).to_be_visible()
    # chosen on one part of the images, reported on the other: the page says which
    expect(app.page.get_by_text(NOTE).first).to_be_visible()
    app.screenshot("suggest")
    assert app.exceptions() == []

    apply.click()
    plan = app.wait_for_plan(lambda p: any(v > 0 for v in p.sparsity.values()))
    expect(app.nav_link("Prune")).to_have_attribute("aria-current", "page")
    app.wait_idle()
    evaluator = Evaluator(mlp, digits)
    metrics = evaluator.evaluate(plan)
    assert metrics.flops["effective"] * 4 <= metrics.flops["dense"]
    sliders = app.slider_values()
    for name, fraction in plan.sparsity.items():
        assert sliders[f"{name} (linear, weights removed %)"] == round(fraction * 100)
    expect(app.metric_value("Accuracy")).to_have_text(percent(metrics.accuracy))
    assert app.exceptions() == []


def test_tradeoffs_show_the_plans_tried_pin_and_compare(open_app):
    app = open_app("/prune?model=digits-cnn&s=classifier.1:90")
    app.press("features.2 (conv2d, weights removed %)", "ArrowRight", times=2)
    app.navigate("Trade-offs", "/tradeoffs")
    expect(app.page.locator(".js-plotly-plot")).to_have_count(2, timeout=SCAN_MS)
    tried = traces(app, "evaluated plans")
    assert [len(t["x"]) for t in tried] == [3, 3]  # one per plan, on both panels
    for name in ("uniform", "global magnitude", "random"):
        assert traces(app, name)[0]["text"] == ["2x", "4x", "8x", "16x", "32x"]
    assert traces(app, "Pareto front")[0]["x"]
    expect(app.page.get_by_text(NOTE).first).to_be_visible()

    app.page.get_by_label("Name for the current plan").fill("my pick")
    with app.rerun():
        app.page.get_by_role("button", name="Pin the current plan").click()
    app.wait_idle()
    assert "my pick" in traces(app, "pinned / current")[0]["text"]
    per_class = app.page.evaluate(TRACES)[-1]  # the comparison's per-class bars, last
    assert [(t["name"], len(t["x"])) for t in per_class] == [
        ("dense model", 10), ("current plan", 10)]
    app.screenshot("tradeoffs")
    assert app.exceptions() == []
