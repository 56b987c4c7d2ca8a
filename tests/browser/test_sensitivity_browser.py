"""The Sensitivity page in headless Chromium: a scan of several seconds runs in the
background with a live progress bar while the page stays usable, and Cancel keeps a
flagged partial result.

Every demo model scans in about a second (one thread, incremental evaluation), too quick
to watch a progress bar move; so each test uploads a wider CNN on the digits input (a
torch.export program, random weights) whose 20-point weight scan takes several seconds,
the way a user brings their own model. Expected units come from loading the same bytes
here. Skipped (by the ``browser`` fixture) where /usr/bin/chromium is missing.
"""

from __future__ import annotations

import re
import time

import pytest
from exported_models import exported, wide_cnn
from playwright.sync_api import expect

from explorer.load.model_file import load_model_bytes

pytestmark = pytest.mark.browser

WIDE = "wide-cnn.pt2"
# Channels: a 20-point weight scan of ~19 s on an idle machine here (~100 s with two busy
# processes beside it), against reruns of 2-4 s during it. At 176 channels (~14 s) a CI run
# once saw the scan end before its rerun did.
WIDTH = 256
SCAN_MS = 240_000  # the whole scan, on a busy 2-core machine
BAR = "[data-testid='stProgress'] [role='progressbar']"


@pytest.fixture(scope="module")
def wide() -> bytes:
    """A three-convolution CNN for (1, 8, 8) digits, exported with a dynamic batch."""
    return exported(wide_cnn(WIDTH))


def open_with_wide_model(open_app, wide: bytes):
    """A new session that uploaded the wide CNN (Model page), then opened Sensitivity."""
    app = open_app("/?model=digits-mlp")
    app.page.get_by_text("Upload your own model", exact=True).click()
    app.choose_file("Model file", WIDE, wide)
    with app.rerun(timeout=SCAN_MS):
        app.page.get_by_test_id("stFormSubmitButton").get_by_role("button", name="Load").click()
    model_box = app.page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
    expect(model_box).to_have_value(f"{WIDE} (uploaded)")
    app.navigate("Sensitivity", "/sensitivity")
    expect(model_box).to_have_value(f"{WIDE} (uploaded)")
    return app


def progress(app) -> float | None:
    """The progress bar's value (0-100), or None when no bar is shown."""
    bar = app.page.locator(BAR)
    if bar.count() == 0:
        return None
    value = bar.first.get_attribute("aria-valuenow")
    return None if value is None else float(value)


def rising_values(app) -> list[float]:
    """Progress values read every 0.2 s until the bar has moved twice (never back)."""
    seen: list[float] = []
    deadline = time.monotonic() + SCAN_MS / 1000
    while len(set(seen)) < 3 and time.monotonic() < deadline:
        value = progress(app)
        assert value is not None, f"the scan ended before the bar was seen moving: {seen}"
        assert not seen or value >= seen[-1], seen + [value]
        seen.append(value)
        app.page.wait_for_timeout(200)
    assert len(set(seen)) >= 3, seen
    return seen


def radio_option(app, label: str, option: str):
    group = app.page.get_by_test_id("stRadio").filter(
        has=app.page.get_by_test_id("stWidgetLabel").get_by_text(label, exact=True))
    return group.locator("label").filter(has_text=option)


def plot_title(app, text: str):
    return app.page.locator("text.gtitle").filter(has_text=text)


def start_scan(app) -> None:
    with app.rerun():
        app.page.get_by_role("button", name="Run", exact=True).click()
    expect(app.page.locator(BAR)).to_have_count(1)


def test_a_long_scan_shows_progress_while_the_page_stays_usable(open_app, wide):
    layers = load_model_bytes(wide, WIDE).layer_names
    app = open_with_wide_model(open_app, wide)
    n = len(layers)
    expect(app.page.get_by_text(f"{n} units x 20 fractions = {n * 20} evaluations")
           ).to_be_visible()
    start_scan(app)
    expect(app.page.get_by_role("button", name="Run", exact=True)).to_be_disabled()

    seen = rising_values(app)
    # which unit it is on depends on the machine's speed; that it names one does not
    expect(app.page.get_by_test_id("stProgress")).to_contain_text(
        re.compile(rf"unit [1-{n}] of {n} \("))
    # the page answers while the scan runs: a control reruns it, the explanation opens
    ten = radio_option(app, "Grid step", "10%")
    started = time.monotonic()
    with app.rerun():
        ten.click()
    rerun_s = time.monotonic() - started
    if not ten.locator("input").is_checked():
        # The browser never took the click (CI once: the radio stayed at 5% for 30 s while
        # the bar and the finished scan were drawn; not seen in 10 runs here). A user would
        # click again; the app losing a value the browser holds is still caught below.
        print("the click on 10% did not take in the browser: clicked again")
        with app.rerun():
            ten.click()
    expect(ten.locator("input")).to_be_checked()
    expect(app.page.get_by_text(f"{n} units x 10 fractions = {n * 10} evaluations")
           ).to_be_visible()
    after = progress(app)
    if after is None:  # a fragment redrawn at that instant: look once more
        app.page.wait_for_timeout(600)
        after = progress(app)
    assert after is not None, (f"the scan ended before the page was used (a rerun of "
                               f"{rerun_s:.1f} s): make it longer")
    assert after >= seen[-1], (seen, after)  # the bar goes on where it was, never back
    app.page.get_by_text("What am I looking at?").click()
    expect(app.page.get_by_text("A sensitivity scan asks")).to_be_visible()
    # The rerun ended while the scan still ran (``after`` above): the page did not wait for
    # the scan. How long it took depends on the machine's load (10.5 s once in CI, with
    # two other test runs on the 2 cores), so it is reported, not asserted.
    print(f"a rerun during the scan took {rerun_s:.1f} s")
    app.screenshot("sensitivity-running")

    expect(app.page.locator(BAR)).to_have_count(0, timeout=SCAN_MS)
    app.wait_idle()
    expect(plot_title(app, "removed from one unit at a time")).to_have_count(1)
    expect(plot_title(app, "Accuracy drop")).to_have_count(1)
    legend = app.page.locator(".js-plotly-plot .legendtext")
    expect(legend).to_have_count(n)
    assert legend.all_text_contents() == layers
    assert app.exceptions() == []
    runs = app.finished
    app.page.wait_for_timeout(1500)  # three polling periods
    assert app.finished == runs, "the progress fragment kept polling after the scan ended"
    app.screenshot("sensitivity")


def test_cancel_keeps_the_partial_scan(open_app, wide):
    bundle = load_model_bytes(wide, WIDE)
    app = open_with_wide_model(open_app, wide)
    # another scan than the first test's, which every session now gets from the cache
    app.page.get_by_test_id("stSelectbox").filter(has_text="Criterion").click()
    with app.rerun():
        app.page.get_by_role("option", name="random", exact=True).click()
    start_scan(app)
    deadline = time.monotonic() + SCAN_MS / 1000
    while (progress(app) or 0) < 15 and time.monotonic() < deadline:
        app.page.wait_for_timeout(200)
    value = progress(app)
    assert value is not None and 15 <= value < 100, "the scan ended before Cancel"
    app.page.get_by_role("button", name="Cancel").click()

    expect(app.page.locator(BAR)).to_have_count(0)
    app.wait_idle()
    units = len(bundle.layers)
    note = app.page.get_by_test_id("stAlert").filter(has_text="Cancelled after")
    expect(note).to_contain_text(f"of {units} units")
    expect(plot_title(app, "removed from one unit at a time")).to_have_count(1)
    drawn = app.page.locator(".js-plotly-plot .legendtext")
    assert 1 <= drawn.count() < units
    assert app.exceptions() == []
    expect(app.page.get_by_test_id("stException")).to_have_count(0)
    expect(app.page.get_by_role("button", name="Run", exact=True)).to_be_enabled()
    app.screenshot("sensitivity-cancelled")
