"""The "What pruning broke" page in headless Chromium: a plan from the URL, its charts drawn
with the engine's numbers, the flipped images shown, the filter switched.

Expected values come from :func:`explorer.decide.breakage.breakage` on the plan read back from the
URL. Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from explorer.decide.breakage import breakage
from explorer.evaluator import Evaluator
from explorer.ui.charts import broke as broke_charts

pytestmark = pytest.mark.browser

# The plotly figures on the page: their titles and the heatmap's z, read from plotly itself.
FIGURES = """() => [...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
    title: gd._fullLayout.title.text.replace(/<[^>]*>/g, ''),
    z: gd._fullData[0].type === 'heatmap'
        ? Array.from(gd._fullData[0].z, row => Array.from(row)) : null,
}))"""


def test_charts_images_and_the_filter(open_app, cnn, digits):
    app = open_app("/broke?model=digits-cnn&scope=global&amount=90")
    engine = breakage(Evaluator(cnn, digits), app.plan())
    counts = engine.counts()
    assert counts["broken"] and counts["fixed"]
    assert app.exceptions() == []
    for kind, n in counts.items():
        expect(app.metric_value(kind.capitalize())).to_have_text(str(n))

    plots = app.page.locator(".js-plotly-plot")
    expect(plots).to_have_count(2)
    expect(app.page.locator(".js-plotly-plot .heatmaplayer image, "
                            ".js-plotly-plot .hm image")).not_to_have_count(0)
    figures = {f["title"]: f["z"] for f in app.page.evaluate(FIGURES)}
    assert "Accuracy per true class (text: change in points)" in figures
    assert figures["Confusion change: pruned minus dense"] == engine.confusion_change.tolist()

    images = app.page.get_by_test_id("stImageContainer")
    captions = app.page.get_by_test_id("stImageCaption")
    expect(images).to_have_count(counts["broken"])
    expect(captions).to_have_text([broke_charts.caption(f) for f in engine.flipped("broken")])
    first = images.first.locator("img")
    expect(first).to_be_visible()
    assert first.evaluate("img => img.complete && img.naturalWidth") == broke_charts.THUMBNAIL_PX
    images.first.scroll_into_view_if_needed()
    app.screenshot("broke-broken")

    with app.rerun():
        app.page.get_by_test_id("stRadio").get_by_text(
            f"fixed (dense wrong, pruned right): {counts['fixed']}").click()
    expect(images).to_have_count(counts["fixed"])
    expect(captions).to_have_text([broke_charts.caption(f) for f in engine.flipped("fixed")])
    assert app.exceptions() == []
    images.first.scroll_into_view_if_needed()
    app.screenshot("broke-fixed")
