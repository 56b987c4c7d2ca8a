"""Progressive evaluation in headless Chromium: on a slow model, quick slider moves end on
the newest plan, whose estimate shows before its exact value, and an older plan's numbers
never come back once the newest plan's are on screen (issue 11). Two cases: two presses with
no wait (the second lands as the first run starts), and a press while the previous plan's
estimate is refining (that refinement is cancelled: its exact value never shows).

The demos evaluate in milliseconds, too quick to refine; so the test uploads a wide CNN on
the digits input (a torch.export program, random weights) with a few thousand validation
images, whose full evaluation takes seconds: heavy enough that the evaluator answers first
on a stratified subset (``estimate_size(bundle, N) <= N // 2``). A MutationObserver in the
page records every value the Accuracy and FLOPs cards show, with its time, so a value shown
for a moment between two Streamlit deltas is seen too. The expected figures come from the
engine on the same bytes. Skipped (by the ``browser`` fixture) where /usr/bin/chromium is
missing.
"""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from exported_models import exported, wide_cnn
from playwright.sync_api import expect

from explorer.data import digits_validation
from explorer.evaluator import Evaluator, estimate_size
from explorer.load.data_file import load_data_bytes
from explorer.load.model_file import load_model_bytes
from explorer.metrics import Metrics
from explorer.plan import Plan
from explorer.ui.format import count, percent

pytestmark = pytest.mark.browser

MODEL_NAME = "slow-cnn.pt2"
DATA_NAME = "slow-val.npz"
WIDTH = 176  # channels of the widest convolution
IMAGES = 4_000  # a full evaluation of ~4 s on 2 cores; the estimate takes 835 of them
LAYER = "4"  # the last convolution: two thirds of the FLOPs, its fraction moves the FLOPs card
SLIDER = f"{LAYER} (conv2d, weights removed %)"
PLANS = [Plan(sparsity={LAYER: k / 100}) for k in (1, 2, 3, 4)]  # one slider step each
LOAD_MS = 120_000  # the upload's guarded load and dense evaluation, on a busy machine
SETTLE_S = 60
QUIET_MS = 1_500  # nothing recorded for this long, the app idle: the page has settled
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

# Run before each recorded action: empties window.__seen and window.__keys; the first call
# installs a MutationObserver that, on every DOM change, appends [ms, accuracy, FLOPs,
# captions] to window.__seen when any of them differs from the last row, and a listener
# that appends each key press [ms, key] to window.__keys (ms: the page's clock).
RECORDER = """() => {
  window.__seen = [];
  window.__keys = [];
  if (!window.__record) {
    const main = () => document.querySelector("[data-testid='stMain']") || document.body;
    const metric = (label) => {
      for (const card of main().querySelectorAll("[data-testid='stMetric']")) {
        const name = card.querySelector(
          "[data-testid='stMetricLabel'] [data-testid='stMarkdownContainer']");
        if (name && name.textContent.trim() === label) {
          const value = card.querySelector("[data-testid='stMetricValue']");
          return value ? value.textContent.trim() : null;
        }
      }
      return null;
    };
    const captions = () => [...main().querySelectorAll("[data-testid='stCaptionContainer']")]
      .map((c) => c.textContent.trim());
    window.__record = () => {
      const row = [metric("Accuracy"), metric("FLOPs per sample"), captions()];
      const last = window.__seen[window.__seen.length - 1];
      if (!last || JSON.stringify(last.slice(1)) !== JSON.stringify(row)) {
        window.__seen.push([performance.now(), ...row]);
      }
    };
    new MutationObserver(() => window.__record()).observe(document.body, {
      subtree: true, childList: true, characterData: true, attributes: true});
    document.addEventListener(
      "keydown", (e) => window.__keys.push([performance.now(), e.key]), true);
  }
  window.__record();
}"""


@dataclass(frozen=True)
class Upload:
    model: bytes
    data: bytes


@dataclass(frozen=True)
class Shown:
    """One recorded state of the page: when (ms, the page's clock) and what it showed."""

    ms: float
    accuracy: str | None
    flops: str | None
    captions: tuple[str, ...]


@pytest.fixture(scope="module")
def slow() -> Upload:
    """The wide CNN (a torch.export program with a dynamic batch) and IMAGES jittered
    digits labelled by the model itself, one label in ten replaced at random (so the dense
    accuracy is about 91% and pruning moves it)."""
    model = wide_cnn(WIDTH)
    digits = digits_validation()
    seeded = torch.Generator().manual_seed(0)
    x = digits.x[torch.arange(IMAGES) % len(digits)]
    x = x + 0.3 * torch.randn(x.shape, generator=seeded)
    with torch.no_grad():
        y = model(x).argmax(1)
    noisy = torch.rand(IMAGES, generator=seeded) < 0.1
    y = torch.where(noisy, torch.randint(0, 10, (IMAGES,), generator=seeded), y)
    data = io.BytesIO()
    np.savez(data, x=x.numpy().astype(np.float32), y=y.numpy().astype(np.int64))
    return Upload(exported(model), data.getvalue())


def open_prune_with(open_app, upload: Upload):
    """A new session that uploaded the model and its data (Model page), then opened Prune."""
    app = open_app("/?model=digits-mlp")
    app.page.get_by_text("Upload your own model", exact=True).click()
    app.choose_file("Model file", MODEL_NAME, upload.model)
    app.choose_file("Validation data (optional)", DATA_NAME, upload.data)
    with app.rerun(timeout=LOAD_MS):
        app.page.get_by_test_id("stFormSubmitButton").get_by_role("button", name="Load").click()
    model_box = app.page.get_by_test_id("stSidebar").get_by_role("combobox", name="Model")
    expect(model_box).to_have_value(f"{MODEL_NAME} (uploaded)", timeout=LOAD_MS)
    app.navigate("Prune", "/prune")
    app.wait_idle(LOAD_MS)
    expect(app.slider(SLIDER)).to_have_count(1)
    return app


def recorded(app) -> list[Shown]:
    return [Shown(ms, acc, flops, tuple(caps))
            for ms, acc, flops, caps in app.page.evaluate("window.__seen")]


def settle(app, wanted: Plan) -> None:
    """Wait until the app is idle, the URL holds ``wanted`` and nothing new was recorded
    for QUIET_MS (a run cut short by the next press sends no ``script_finished``)."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        app.wait_idle(SETTLE_S * 1000)
        rows = app.page.evaluate("window.__seen.length")
        app.page.wait_for_timeout(QUIET_MS)
        if (app.page.evaluate("window.__seen.length") == rows
                and app.page.locator(IDLE).count() and app.plan() == wanted):
            return
    raise AssertionError(f"the page did not settle on {wanted} within {SETTLE_S} s; the "
                         f"URL holds {app.plan()}")


def engine_figures(upload: Upload, plans: list[Plan]) -> dict[Plan, tuple[Metrics, Metrics]]:
    """The engine's (estimate, exact) metrics of each plan, on the same bytes as the page."""
    bundle = load_model_bytes(upload.model, MODEL_NAME)
    evaluator = Evaluator(bundle, load_data_bytes(upload.data, DATA_NAME))
    assert evaluator.estimate_samples == estimate_size(bundle, IMAGES) <= IMAGES // 2, (
        "the model is too light to be evaluated progressively")
    figures = {}
    for plan in plans:
        first: list[Metrics] = []

        def hear(done: int, total: int, so_far: Metrics, first=first) -> None:
            if so_far.samples == evaluator.estimate_samples and not first:
                first.append(so_far)

        exact = evaluator.evaluate(plan, hear)
        assert first and exact.samples == IMAGES, "the engine gave no estimate"
        figures[plan] = first[0], exact
    return figures


def first_index(rows: list[Shown], holds) -> int | None:
    return next((i for i, row in enumerate(rows) if holds(row)), None)


def trail_of(rows: list[Shown]) -> str:
    return "\n".join(f"{r.ms:9.0f} ms  {r.accuracy!s:>10}  {r.flops}  {r.captions[:1]}"
                      for r in rows)


def check_newest_wins(rows: list[Shown], older: Plan, newer: Plan, figures) -> tuple[int, int]:
    """The recorded page ends on ``newer``'s exact numbers, showed its estimate first, and
    showed nothing of ``older`` once ``newer``'s FLOPs were on screen. Returns the indices
    of the rows where ``newer``'s estimate and its exact value first showed."""
    (estimate1, exact1), (estimate2, exact2) = figures[older], figures[newer]
    flops1, flops2 = count(exact1.flops["effective"]), count(exact2.flops["effective"])
    assert flops1 != flops2
    exact_text = percent(exact2.accuracy)
    # the older plan's values, less any that happen to equal the newer plan's
    older_only = ({"≈ " + percent(estimate1.accuracy), percent(exact1.accuracy)}
                  - {"≈ " + percent(estimate2.accuracy), exact_text})
    trail = trail_of(rows)

    assert (rows[-1].accuracy, rows[-1].flops) == (exact_text, flops2), trail
    assert not any(c.startswith("Estimate on") for c in rows[-1].captions), trail

    second = first_index(rows, lambda r: r.flops == flops2)
    assert second is not None, trail
    after = rows[second:]
    assert all(r.flops != flops1 for r in after), trail
    assert not [r for r in after if r.accuracy in older_only], trail
    # an exact value (no "≈") shown after that is the newer plan's
    assert all(r.accuracy is None or r.accuracy.startswith("≈ ") or r.accuracy == exact_text
               for r in after), trail

    caption = f"Estimate on {estimate2.samples:,} of {IMAGES:,} images"
    estimated = first_index(rows, lambda r: r.flops == flops2
                            and r.accuracy == "≈ " + percent(estimate2.accuracy)
                            and any(c.startswith(caption) for c in r.captions))
    exact = first_index(rows, lambda r: r.flops == flops2 and r.accuracy == exact_text)
    assert estimated is not None, f"no estimate of {newer} was shown:\n{trail}"
    assert exact is not None and estimated < exact, trail
    return estimated, exact


def timings(rows: list[Shown], keys: list, shown: tuple[int, int], what: str) -> None:
    """Print the time from the last key press to the estimate and to the exact value."""
    estimated, exact = shown
    presses = [ms for ms, key in keys if key == "ArrowRight"]
    assert len(presses) == 2, keys
    print(f"\n{what}: last press -> first estimate {rows[estimated].ms - presses[1]:.0f} ms, "
          f"-> exact value {rows[exact].ms - presses[1]:.0f} ms; presses "
          f"{presses[1] - presses[0]:.0f} ms apart; the states recorded:\n{trail_of(rows)}")


def test_quick_moves_end_on_the_newest_plan_and_never_show_an_older_one_after_it(
        open_app, slow):
    app = open_prune_with(open_app, slow)
    thumb = app.slider(SLIDER)

    # Two presses with no wait between: the second lands while the first one's run starts.
    app.page.evaluate(RECORDER)
    thumb.press("ArrowRight")
    thumb.press("ArrowRight")
    settle(app, PLANS[1])
    quick = recorded(app), app.page.evaluate("window.__keys")
    assert app.exceptions() == [], "\n".join(app.exceptions())

    # A press while the first plan's estimate is refining: its refinement is cancelled.
    app.page.evaluate(RECORDER)
    thumb.press("ArrowRight")
    expect(app.metric_value("Accuracy")).to_have_text(re.compile("^≈ "))
    thumb.press("ArrowRight")
    settle(app, PLANS[3])
    refining = recorded(app), app.page.evaluate("window.__keys")
    assert app.exceptions() == [], "\n".join(app.exceptions())
    app.screenshot("prune-progressive")

    # The engine's figures after the browser's part, so the page's timings do not share the
    # two cores with them.
    figures = engine_figures(slow, PLANS)
    timings(*quick, check_newest_wins(quick[0], PLANS[0], PLANS[1], figures),
            "two quick presses")
    rows = refining[0]
    shown = check_newest_wins(rows, PLANS[2], PLANS[3], figures)
    # the cancelled plan's estimate was on screen, its exact value never
    estimate3, exact3 = figures[PLANS[2]]
    flops3 = count(exact3.flops["effective"])
    assert any(r.flops == flops3 and r.accuracy == "≈ " + percent(estimate3.accuracy)
               for r in rows), trail_of(rows)
    assert not any(r.flops == flops3 and r.accuracy == percent(exact3.accuracy)
                   for r in rows), trail_of(rows)
    timings(*refining, shown, "a press during the refinement")
