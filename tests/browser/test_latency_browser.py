"""The Latency page in headless Chromium: a neuron plan from the URL, Measure pressed, the job's
figures drawn (theoretical speed-up equal to the engine's, the measured one, the layer chart).

Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from explorer.evaluator import Evaluator

pytestmark = pytest.mark.browser

MEASURE_MS = 90_000  # five forms timed for about a second each on a busy machine


def test_measure_draws_both_speedups_and_the_layer_chart(open_app, mlp):
    app = open_app("/latency?model=digits-mlp&g=neurons&c=l1&scope=global&amount=50")
    plan = app.plan()
    assert plan.granularity == "neurons" and plan.amount == 0.5
    assert app.exceptions() == []
    app.page.get_by_role("button", name="Measure").click()
    expect(app.metric_value("Measured speed-up")).to_contain_text("x", timeout=MEASURE_MS)
    app.wait_idle()
    speedup = Evaluator(mlp, None).evaluate(plan).speedup
    expect(app.metric_value("Theoretical speed-up (FLOPs)")).to_have_text(f"{speedup:.2f}x")
    expect(app.page.locator(".js-plotly-plot")).to_have_count(1)
    assert app.exceptions() == []
    app.screenshot("latency-measured")
