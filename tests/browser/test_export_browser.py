"""The Export page in headless Chromium: a shared link's plan downloads as a zip of its files,
and the round trip (a background job polled by a fragment) ends in a table of equal figures."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from playwright.sync_api import expect

from explorer.plan import Plan
from explorer.ui.format import percent

pytestmark = pytest.mark.browser

LINK = "/export?model=digits-cnn&g=neurons&c=l1&scope=layer&s=features.2:50,classifier.1:25"
FILES = ["plan.json", "pruned.safetensors", "shrunk.pt2", "masks.safetensors", "apply_plan.py",
         "pruning_ratio_dict.json"]
ROUND_TRIP_MS = 180_000  # a bound for a stuck run: 14 s here idle, over 60 s once on a slow CI


def test_download_all_is_a_zip_of_the_links_plan(open_app, cnn_metrics):
    app = open_app(LINK)
    plan = app.plan()
    assert plan == Plan(granularity="neurons", criterion="l1",
                        sparsity={"features.2": 0.5, "classifier.1": 0.25})
    expect(app.metric_value("Accuracy")).to_have_text(percent(cnn_metrics(plan).accuracy))
    for name in FILES:
        expect(app.page.get_by_role("button", name=name, exact=True)).to_be_visible()

    with app.page.expect_download(timeout=ROUND_TRIP_MS) as info:
        app.page.get_by_role("button", name="Download all (zip)").click()
    download = info.value
    assert download.suggested_filename == "digits-cnn-export.zip"
    with zipfile.ZipFile(io.BytesIO(download.path().read_bytes())) as archive:
        assert archive.namelist() == FILES
        assert Plan.from_dict(json.loads(archive.read("plan.json"))) == plan

    with app.rerun():
        app.page.get_by_role("button", name="Check the round trip").click()
    expect(app.page.get_by_text("The exports load back to the figures shown")).to_be_visible(
        timeout=ROUND_TRIP_MS)
    app.screenshot("export-round-trip")
    assert app.exceptions() == []
