"""Slider key press -> updated metric -> idle page, in headless Chromium, side by side.

Starts three Streamlit servers: the Prune page of app.py (ours), bench/naive_app.py with its
metrics drawn first (``NAIVE_METRICS_FIRST=1``, the naive app's best order) and
bench/minimal_app.py (the floor: one slider, one metric). Presses ArrowRight on the same
layer's slider in each in turn (one key press is one committed slider value and one rerun;
the floor has one slider) and times until the "FLOPs per sample" metric shows a new value
and until the page is idle. Run by hand: ``python bench/browser_slider.py [--moves 15]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
FLOPS_JS = """() => {
  for (const m of document.querySelectorAll("[data-testid='stMetric']")) {
    if (m.innerText.startsWith('FLOPs per sample')) {
      return m.querySelector("[data-testid='stMetricValue']").innerText;
    }
  }
  return null;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(script: str, env: dict | None = None):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def thumb(page, layer: str | None):
    sliders = page.locator("[data-testid='stSlider']")
    slider = sliders.first if layer is None else sliders.filter(has_text=layer).first
    return slider.locator("input[type='range']")


def move(page, layer: str | None) -> tuple[float, float]:
    """Press ArrowRight on ``layer``'s slider (None: the first); seconds until the FLOPs
    metric changes and until the page is idle again."""
    before = page.evaluate(FLOPS_JS)
    handle = thumb(page, layer)
    handle.focus()
    start = time.perf_counter()
    handle.press("ArrowRight")
    page.wait_for_function(f"(prev) => ({FLOPS_JS})() !== prev", arg=before, polling="raf",
                           timeout=30000)
    changed = time.perf_counter() - start
    page.wait_for_function(f"() => document.querySelector(\"{IDLE}\") !== null",
                           polling="raf", timeout=30000)
    return changed, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=15)
    parser.add_argument("--layers", default="features.0,classifier.1,classifier.5")
    args = parser.parse_args()
    layers = args.layers.split(",")
    with server("app.py") as ours_url, \
            server("bench/naive_app.py", {"NAIVE_METRICS_FIRST": "1"}) as naive_url, \
            server("bench/minimal_app.py") as floor_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        pages = {kind: browser.new_page(viewport={"width": 1600, "height": 1200})
                 for kind in ("ours", "naive", "floor")}
        pages["ours"].goto(f"{ours_url}/?model=digits-cnn")
        pages["ours"].wait_for_selector(IDLE, timeout=120000)
        pages["ours"].goto(f"{ours_url}/prune?model=digits-cnn")
        pages["naive"].goto(naive_url)
        pages["floor"].goto(floor_url)
        for page in pages.values():
            page.wait_for_selector("[data-testid='stMetric']", timeout=120000)
            page.wait_for_selector(IDLE, timeout=120000)
        kinds = list(pages)
        print(f"{'layer':<14}" + "".join(f"{k + ' metric':>14}{k + ' idle':>12}" for k in kinds)
              + f"{'metric/floor':>14}{'idle/naive':>12}")
        every = {k: ([], []) for k in kinds}
        for layer in layers:
            times = {k: ([], []) for k in kinds}
            for i in range(args.moves):
                order = kinds[i % 3:] + kinds[:i % 3]  # each goes first in turn
                for kind in order:
                    changed, idle = move(pages[kind], None if kind == "floor" else layer)
                    times[kind][0].append(changed)
                    times[kind][1].append(idle)
                    every[kind][0].append(changed)
                    every[kind][1].append(idle)
            _row(layer, times, kinds)
        _row("all", every, kinds)
        browser.close()


def _row(name: str, times: dict, kinds: list[str]) -> None:
    med = {k: (statistics.median(times[k][0]) * 1e3, statistics.median(times[k][1]) * 1e3)
           for k in kinds}
    print(f"{name:<14}" + "".join(f"{med[k][0]:>14.0f}{med[k][1]:>12.0f}" for k in kinds)
          + f"{med['ours'][0] / med['floor'][0]:>13.2f}x"
          + f"{med['ours'][1] / med['naive'][1]:>11.2f}x", flush=True)


if __name__ == "__main__":
    main()
