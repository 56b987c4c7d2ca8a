"""Reload after an upload, in headless Chromium: the link keeps the plan and asks for the file.

Before, a reload after an upload silently switched to digits-cnn with an empty plan. Now the
URL is ``model=upload:<file name>`` with the plan; the reloaded session says the file must be
uploaded again, and uploading it brings the plan back.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect
from safetensors.torch import save

from explorer.plan import Plan
from explorer.ui.format import percent

pytestmark = pytest.mark.browser

NAME = "mine.safetensors"
CLASSIFIER_1 = "classifier.1 (linear, weights removed %)"


def upload_model(app, content: bytes) -> None:
    """Open the Model page's upload form, choose ``content`` as NAME and press Load."""
    form = app.page.get_by_text("Upload your own model", exact=True)
    load = app.page.get_by_test_id("stFormSubmitButton").get_by_role("button", name="Load")
    if not load.is_visible():
        form.click()
    app.choose_file("Model file", NAME, content)
    with app.rerun():
        load.click()


def test_reload_after_upload_keeps_the_plan_and_asks_for_the_file(open_app, cnn, cnn_metrics):
    weights = save({k: v.detach().clone() for k, v in cnn.model.state_dict().items()})
    app = open_app("/?model=digits-cnn")
    upload_model(app, weights)
    app.wait_for_query("model", f"upload:{NAME}")
    app.navigate("Prune", "/prune")
    app.press(CLASSIFIER_1, "End")
    plan = app.wait_for_plan(lambda p: p == Plan(sparsity={"classifier.1": 0.99}))
    assert app.query()["model"] == f"upload:{NAME}"

    url = app.page.url
    app.goto(url.removeprefix(app.base_url))  # a reload: a new session on the same link
    warning = app.page.get_by_test_id("stAlertContentWarning").filter(has_text="upload it again")
    expect(warning).to_contain_text(NAME)
    assert app.page.url == url  # the link survives a second reload
    assert app.exceptions() == []

    app.navigate("Model", "/")
    upload_model(app, weights)
    expect(warning).to_have_count(0)
    app.wait_for_query("model", f"upload:{NAME}")
    assert app.plan() == plan
    app.navigate("Prune", "/prune")
    assert app.slider_values()[CLASSIFIER_1] == 99
    expect(app.metric_value("Accuracy")).to_have_text(percent(cnn_metrics(plan).accuracy))
    assert app.exceptions() == []
