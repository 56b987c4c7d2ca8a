"""Real clicks in headless Chromium: a heatmap cell opens the drill-down of its two neurons,
and a slider of a coupled neuron group moves the group's other sliders.

Expected neurons come from the engine (the clustered order of the similarity matrix), the
expected group from the bundle; the cell is found through plotly's own axis mapping.
Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from explorer.look.similarity import weight_similarity

pytestmark = pytest.mark.browser

# The page position (viewport pixels) of display cell (row, column) of the similarity
# heatmap: the plot whose traces are the colours and the click overlay.
CELL_CENTRE = """([row, col]) => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(
        gd => (gd.data || []).map(t => t.type).join() === 'heatmap,scattergl');
    if (plots.length !== 1) return null;
    const gd = plots[0], layout = gd._fullLayout, box = gd.getBoundingClientRect();
    return [box.left + layout.xaxis._offset + layout.xaxis.l2p(col),
            box.top + layout.yaxis._offset + layout.yaxis.l2p(row)];
}"""


def thumb(app, label: str):
    """A slider's range input by its exact label (``AppPage.slider`` writes the label as an
    ASCII-escaped CSS string, which does not match a label with an emoji)."""
    return app.page.locator("[data-testid='stSlider'] input[type='range']"
                            f"[aria-label={json.dumps(label, ensure_ascii=False)}]")


def plot_title(app, text: str):
    """The plotly figure titles (SVG text) that contain ``text``."""
    return app.page.locator("text.gtitle").filter(has_text=text)


def test_a_heatmap_click_opens_the_drilldown_of_that_pair(open_app, cnn):
    app = open_app("/similarity?model=digits-cnn")
    order = weight_similarity(cnn, "features.0").order
    row, col = 2, 9
    i, j = int(order[row]), int(order[col])
    app.page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
    x, y = app.page.evaluate(CELL_CENTRE, [row, col])
    # plotly clicks the point it last hovered: move there and wait for the hover label
    app.page.mouse.move(x, y)
    expect(app.page.locator(".hoverlayer").filter(
        has_text=f"neuron {i} · neuron {j}")).to_have_count(1)
    with app.rerun():
        app.page.mouse.click(x, y)

    expect(app.page.get_by_role("heading", name=f"Neuron {i} and neuron {j}")).to_be_visible()
    for neuron in (i, j):
        expect(plot_title(app, f"Neuron {neuron}: the 8 validation images it responds to "
                               "most")).to_have_count(1)
    expect(plot_title(app, "conductance toward class")).to_have_count(0)
    explain = app.page.get_by_role("button", name="Explain with captum")
    expect(explain).to_have_count(2)
    with app.rerun():
        explain.first.click()
    expect(plot_title(app, f"Neuron {i}: conductance toward class")).to_have_count(1)
    expect(explain).to_have_count(1)
    assert app.exceptions() == []
    app.screenshot("similarity-drilldown")


def test_a_group_slider_moves_its_linked_sliders(open_app, resnet):
    app = open_app("/prune?model=digits-resnet&g=neurons&c=l1&scope=layer")
    members = [la.name for la in resnet.group("stem.0")]
    assert "layer1.conv2" in members
    labels = {m: f"{m} ({resnet.layer(m).kind}, neurons removed %) [linked]" for m in members}
    for label in labels.values():
        expect(thumb(app, label)).to_have_value("0")

    for _ in range(3):  # each key press is one rerun
        with app.rerun():
            thumb(app, labels["stem.0"]).press("ArrowRight")
    for label in labels.values():
        expect(thumb(app, label)).to_have_value("3")
    plan = app.wait_for_plan(lambda p: p.fraction("layer1.conv2") > 0)
    assert {m: plan.fraction(m) for m in members} == {m: 0.03 for m in members}
    assert plan.fraction("layer1.conv1") == 0
    assert app.exceptions() == []
