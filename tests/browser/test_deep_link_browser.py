"""A shared link as the very first request to a freshly started server.

Its own module, so its own server: the behaviour depends on what the server ran first.
With page scripts in a folder named ``pages/`` beside app.py, Streamlit 1.67 ran
``pages/prune.py`` alone for such a request (file-stem sidebar, no wide layout, for every
session until someone opened ``/``); app.py's docstring says why the folder is app_pages/.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from explorer.ui.format import percent

pytestmark = pytest.mark.browser

SHORT_MS = 3_000
PAGE_TITLES = ["Model", "Lessons", "Weights", "Activations", "Similarity", "Sensitivity", "Prune",
               "Compare criteria", "Trade-offs", "Latency", "What pruning broke", "Fine-tune",
               "Export"]
SECTIONS = ["Learn", "Look inside", "Decide", "Recover and export"]  # Model stands above them


def test_deep_link_first_request_uses_the_apps_navigation(open_cold_app, cnn_metrics):
    app = open_cold_app("/prune?model=digits-cnn&s=classifier.1:90")
    app.screenshot("deep-link-first-request")
    # The first run is over: what the sidebar shows now is what the user gets.
    links = app.page.get_by_test_id("stSidebarNavLink")
    expect(links).to_have_count(len(PAGE_TITLES), timeout=SHORT_MS)
    for title in PAGE_TITLES:
        expect(app.nav_link(title)).to_have_count(1, timeout=SHORT_MS)
    # in this order (a link's text starts with its icon's name)
    expect(links).to_have_text([re.compile(f"{re.escape(t)}$") for t in PAGE_TITLES],
                               timeout=SHORT_MS)
    expect(app.page.get_by_test_id("stNavSectionHeader")).to_have_text(  # + a toggle icon
        [re.compile(f"^{re.escape(s)}") for s in SECTIONS], timeout=SHORT_MS)
    expect(app.nav_link("Prune")).to_have_attribute("aria-current", "page", timeout=SHORT_MS)
    expect(app.page).to_have_title("Pruning Explorer", timeout=SHORT_MS)
    assert app.slider_values()["classifier.1 (linear, weights removed %)"] == 90
    expect(app.metric_value("Accuracy")).to_have_text(percent(cnn_metrics(app.plan()).accuracy))
