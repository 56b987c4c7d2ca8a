"""The attention-head views on minilm in headless Chromium: hovering the importance heatmap
names layer, head and score; the Similarity page's heads view draws the similarity and a
pattern whose hover names two tokens; an attention's slider moves its four layers.

minilm loads once for the module (its server's shared cache; 10-25 s). Expected numbers
come from the engine's head scores and the bundle; cells are found through plotly's own
axis mapping. Skipped without /usr/bin/chromium or without the transformers extra.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from explorer.load.transformers import extra_installed
from explorer.masks import ScoreCache

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not extra_installed(), reason="needs the transformers extra")]

# The viewport position of cell (row, column) of the heatmap whose title contains a text.
CELL_CENTRE = """([title, row, col]) => {
    const plots = [...document.querySelectorAll('.js-plotly-plot')].filter(
        gd => ((gd.layout.title || {}).text || '').includes(title));
    if (plots.length !== 1) return null;
    const gd = plots[0], layout = gd._fullLayout, box = gd.getBoundingClientRect();
    return [box.left + layout.xaxis._offset + layout.xaxis.l2p(col),
            box.top + layout.yaxis._offset + layout.yaxis.l2p(row)];
}"""


@pytest.fixture(scope="module")
def minilm():
    from explorer.load.transformers import load_minilm

    return load_minilm()


def hover(app, title: str, row, col, text: str) -> None:
    """Move the mouse over cell (row, col) of the heatmap titled ``title``: its hover label
    shows ``text``."""
    plot = app.page.locator(".js-plotly-plot").filter(has=app.page.locator(
        "text.gtitle", has_text=title))
    plot.scroll_into_view_if_needed()
    x, y = app.page.evaluate(CELL_CENTRE, [title, row, col])
    app.page.mouse.move(x, y)
    expect(app.page.locator(".hoverlayer").filter(has_text=text)).to_have_count(1)


def test_hovering_a_head_names_its_layer_head_and_score(open_app, minilm):
    bundle, data = minilm
    app = open_app("/?model=minilm")
    group = bundle.heads[4]
    scores = ScoreCache(bundle, data).get("heads", "l1", group.name)[0]
    hover(app, "Head importance by l1", 4, 7, "head 7: score")
    label = app.page.locator(".hoverlayer").text_content()  # SVG text: no line breaks
    assert group.module in label and "layer 4" in label
    shown = float(re.search(r"head 7: score ([0-9.e+-]+?)rank", label).group(1))
    assert shown == pytest.approx(float(scores[7]), rel=1e-3)
    rank = int((scores < scores[7]).sum()) + 1
    assert f"rank {rank} in its attention" in label
    assert app.exceptions() == []
    app.screenshot("heads-importance")


def test_the_heads_similarity_and_a_heads_pattern_are_drawn(open_app, minilm):
    bundle, data = minilm
    app = open_app("/similarity?model=minilm")
    with app.rerun():
        app.page.get_by_test_id("stRadio").get_by_text("heads of an attention",
                                                       exact=True).click()
    title = "layer 0: how alike the heads' outputs are"
    hover(app, title, 2, 2, "head 2 and head 2: cosine 1.0000")
    ids = data.x[0].long()
    first = bundle.card["vocabulary"][int(ids[1])]
    hover(app, "layer 0, head 0: where each token looks", 0, 1,
          f"[CLS] ·0 looks at {first} ·1")
    assert app.exceptions() == []
    app.screenshot("heads-similarity-pattern")


def test_an_attentions_slider_moves_its_four_layers(open_app, minilm):
    bundle, _ = minilm
    app = open_app("/prune?model=minilm&g=heads&c=l1&scope=layer")
    group = bundle.heads[1]
    label = f"{group.module} ({group.heads} heads, heads removed %) [linked]"
    thumb = app.page.locator("[data-testid='stSlider'] input[type='range']"
                             f"[aria-label={json.dumps(label)}]")
    expect(thumb).to_have_value("0")
    for _ in range(2):
        with app.rerun():
            thumb.press("ArrowRight")
    expect(thumb).to_have_value("2")
    plan = app.wait_for_plan(lambda p: p.fraction(group.output) > 0)
    assert {la: plan.fraction(la) for la in group.layers} == dict.fromkeys(group.layers, 0.02)
    assert plan.granularity == "heads" and len(plan.sparsity) == 4
    assert app.exceptions() == []
