"""Soak: eight browser sessions hammer the Prune page's sliders while a fine-tune runs.

One server; one session runs a long fine-tune; eight others, each on its own demo model and
its own two sliders, get key presses round-robin, ``PE_SOAK_PAUSE`` seconds apart (default
0.25: each session moves every 2 s; 0: a held arrow key in every tab), without waiting for
the reruns they cause, for ``PE_SOAK_SECONDS`` (default 120). Meanwhile the server's
resident memory (``/proc/<pid>/status`` VmRSS) is sampled. At the end, once every session has
caught up (how long that takes is reported: the server works through a backlog of reruns),
each session's sliders must equal the plan in its URL and its Accuracy, Loss and FLOPs
the engine's (``Evaluator``) for that plan; no session shows an exception; the server's peak
memory stays under its base (after the demos are loaded) plus ``SERVER_MEMORY_BYTES``.

Run by hand (minutes of two cores): ``PE_SOAK=1 PE_SOAK_SECONDS=120 pytest -s
tests/browser/test_soak_browser.py``. Its figures go to ``test-artifacts/soak.json``.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect

from explorer.data import digits_validation
from explorer.evaluator import Evaluator
from explorer.limits import MAX_FINETUNE_EPOCHS, SERVER_MEMORY_BYTES, MiB
from explorer.load.demos import load_demo
from explorer.plan import Plan
from explorer.ui.format import count, percent

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PE_SOAK") != "1",
                       reason="the soak test runs by hand: set PE_SOAK=1 (PE_SOAK_SECONDS)"),
]

SECONDS = float(os.environ.get("PE_SOAK_SECONDS", "120"))
# Seconds between two key presses (over all sessions): 0.25 is each of the eight sessions
# moving a slider every 2 s, as a person does; 0 hammers (a held arrow key in every tab).
PAUSE = float(os.environ.get("PE_SOAK_PAUSE", "0.25"))
SESSIONS = 8
DEMOS = ("digits-mlp", "digits-cnn", "digits-resnet")
KEYS = ("ArrowRight",) * 4 + ("ArrowLeft",) * 2 + ("PageUp", "PageDown")
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
PRESS_MS = 5_000  # a thumb being redrawn may take a moment to accept a key
SETTLE_MS = 600_000  # every session catches up within this after the last key press
QUIET_MS = 2_000
REPORT = Path(__file__).resolve().parents[2] / "test-artifacts" / "soak.json"
FINETUNE = ("/finetune?model=digits-resnet&g=weights&c=magnitude&scope=layer"
            "&s=layer2.conv1:50")  # 200 epochs: minutes even on an idle machine


class Memory:
    """Samples a process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid, self.every = pid, every
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no VmRSS for process {self.pid}")

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(self.rss())

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @property
    def peak(self) -> int:
        return max(self.samples, default=0)


def layer_sliders(app) -> dict[str, int]:
    """The per-layer sliders by layer name (the 'every layer' control left out)."""
    return {label.partition(" (")[0]: value for label, value in app.slider_values().items()
            if label.endswith("removed %)")}


def agrees(app) -> bool:
    """The session is idle and its sliders show the plan in its URL."""
    plan, sliders = app.plan(), layer_sliders(app)
    return app.page.locator(IDLE).count() > 0 and sliders == {
        name: round(plan.fraction(name) * 100) for name in sliders}


def snapshot(app) -> tuple:
    return app.started, app.finished, app.page.url, app.slider_values()


def settle(apps: list) -> list[float | None]:
    """Wait until every session has caught up with its key presses: idle, its sliders equal
    to its URL's plan, and nothing changed for QUIET_MS. After a burst the server works
    through its backlog of reruns for a long time without a visible change, so a quiet page
    alone does not tell. Returns, per session, the seconds it took (None: not within
    SETTLE_MS, all sessions together)."""
    start = time.monotonic()
    took: list[float | None] = [None] * len(apps)
    while None in took and time.monotonic() - start < SETTLE_MS / 1000:
        waiting = [i for i, t in enumerate(took) if t is None]
        seen = {i: snapshot(apps[i]) for i in waiting}
        apps[0].page.wait_for_timeout(QUIET_MS)  # events of every page arrive meanwhile
        for i in waiting:
            if snapshot(apps[i]) == seen[i] and agrees(apps[i]):
                took[i] = round(time.monotonic() - start - QUIET_MS / 1000, 1)
    return took


def differences(app, evaluate: Callable[[Plan], object]) -> list[str]:
    """What the session shows that is not its plan's (empty when all agree)."""
    plan = app.plan()
    wrong = []
    sliders = layer_sliders(app)
    wanted = {name: round(plan.fraction(name) * 100) for name in sliders}
    if sliders != wanted:
        wrong.append(f"sliders {sliders} but the URL's plan {wanted}")
    metrics = evaluate(plan)
    for label, value in (("Accuracy", percent(metrics.accuracy)),
                         ("Loss", f"{metrics.loss:.4f}"),
                         ("FLOPs per sample", count(metrics.flops["effective"]))):
        if app.metric(label) != value:
            wrong.append(f"{label} {app.metric(label)!r}, engine {value!r}")
    if app.exceptions():
        wrong.append("exception: " + app.exceptions()[0][:300])
    return wrong


@pytest.mark.timeout(SECONDS + SETTLE_MS / 1000 + 900)
def test_eight_sessions_hammer_sliders_while_a_fine_tune_runs(open_app, server_process):
    digits = digits_validation()
    engines = {name: Evaluator(load_demo(name), digits).evaluate for name in DEMOS}
    trainer = open_app(FINETUNE)
    apps = [open_app(f"/prune?model={DEMOS[i % len(DEMOS)]}") for i in range(SESSIONS)]
    box = trainer.page.get_by_label("Epochs", exact=True)
    with trainer.rerun():
        box.fill(str(MAX_FINETUNE_EPOCHS))  # minutes: it outlasts the hammering
        box.press("Enter")
    trainer.page.get_by_role("button", name="Start").click()
    cancel = trainer.page.get_by_role("button", name="Cancel")
    expect(cancel).to_be_visible()
    memory = Memory(server_process.pid)
    base = memory.rss()  # demos loaded, every session open
    rngs = [random.Random(i) for i in range(SESSIONS)]
    thumbs = []
    for i, app in enumerate(apps):
        names = sorted(layer_sliders(app))
        pair = rngs[i].sample(names, 2)
        thumbs.append([app.page.locator("[data-testid='stSlider'] input[type='range']"
                                        f"[aria-label^='{name} (']") for name in pair])
    moves, stalls = [0] * SESSIONS, [0] * SESSIONS
    with memory:
        end = time.monotonic() + SECONDS
        while time.monotonic() < end:
            for i in range(SESSIONS):
                try:
                    rngs[i].choice(thumbs[i]).press(rngs[i].choice(KEYS), timeout=PRESS_MS)
                    moves[i] += 1
                except PlaywrightError:  # the thumb was being redrawn for too long
                    stalls[i] += 1
                time.sleep(PAUSE)
        training = cancel.count() > 0
        caught_up, wrong = settle(apps), {}
        for i, app in enumerate(apps):
            demo = DEMOS[i % len(DEMOS)]
            found = differences(app, engines[demo])
            if caught_up[i] is None:
                found.insert(0, f"not caught up {SETTLE_MS / 1000:.0f} s after the last press")
            if found:
                wrong[f"session {i} ({demo})"] = found
                app.screenshot(f"soak-session-{i}")
        trainer_errors = trainer.exceptions()

    figures = {
        "seconds": SECONDS, "pause_s": PAUSE, "sessions": SESSIONS, "moves": moves,
        "stalls": stalls,
        "runs_started": [app.started for app in apps],
        "runs_finished": [app.finished for app in apps],
        "plans": [app.plan().to_json() for app in apps],
        "caught_up_s": caught_up,  # after the last key press
        "mismatches": wrong, "fine_tune_ran_throughout": training,
        "rss_base_mib": round(base / MiB), "rss_peak_mib": round(memory.peak / MiB),
        "rss_samples": len(memory.samples),
        "ceiling_mib": round((base + SERVER_MEMORY_BYTES) / MiB),
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "plans"}))
    assert not wrong, json.dumps(wrong, indent=1)
    assert trainer_errors == [] and training
    assert memory.peak < base + SERVER_MEMORY_BYTES, figures
    assert min(moves) > 0
