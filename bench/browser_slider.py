"""Slider release -> updated metric, in headless Chromium, ours vs a naive app, one run.

Starts two Streamlit servers side by side (the Prune page of app.py, and bench/naive_app.py),
then alternately presses ArrowRight on the same layer's slider in each (one key press is one
committed slider value and one rerun) and times until the "FLOPs per sample" metric shows a
new value. Run by hand: ``python bench/browser_slider.py [--moves 15]``.
"""

from __future__ import annotations

import argparse
import contextlib
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
def server(script: str):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", script, "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port),
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def thumb(page, layer: str):
    slider = page.locator("[data-testid='stSlider']").filter(has_text=layer).first
    return slider.locator("input[type='range']")


def move(page, layer: str) -> float:
    """Press ArrowRight on ``layer``'s slider; seconds until the FLOPs metric changes."""
    before = page.evaluate(FLOPS_JS)
    handle = thumb(page, layer)
    handle.focus()
    start = time.perf_counter()
    handle.press("ArrowRight")
    page.wait_for_function(f"(prev) => ({FLOPS_JS})() !== prev", arg=before, polling="raf",
                           timeout=30000)
    elapsed = time.perf_counter() - start
    page.wait_for_selector(IDLE, timeout=30000)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=15)
    parser.add_argument("--layers", default="features.0,classifier.1,classifier.5")
    args = parser.parse_args()
    layers = args.layers.split(",")
    with server("app.py") as ours_url, server("bench/naive_app.py") as naive_url, \
            sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        ours = browser.new_page(viewport={"width": 1600, "height": 1200})
        naive = browser.new_page(viewport={"width": 1600, "height": 1200})
        ours.goto(f"{ours_url}/?model=digits-cnn")
        ours.wait_for_selector(IDLE, timeout=120000)
        ours.goto(f"{ours_url}/?model=digits-cnn")
        ours.wait_for_selector(IDLE, timeout=120000)
        ours.goto(f"{ours_url}/prune?model=digits-cnn")
        naive.goto(naive_url)
        for page in (ours, naive):
            page.wait_for_selector("[data-testid='stMetric']", timeout=120000)
            page.wait_for_selector(IDLE, timeout=120000)
        print(f"{'layer':<16}{'naive ms':>10}{'ours ms':>10}{'speed-up':>10}")
        all_naive, all_ours = [], []
        for layer in layers:
            times = {"ours": [], "naive": []}
            for i in range(args.moves):
                pair = [("ours", ours), ("naive", naive)]
                for kind, page in pair if i % 2 else pair[::-1]:
                    times[kind].append(move(page, layer))
            n = statistics.median(times["naive"]) * 1e3
            o = statistics.median(times["ours"]) * 1e3
            all_naive += times["naive"]
            all_ours += times["ours"]
            print(f"{layer:<16}{n:>10.1f}{o:>10.1f}{n / o:>9.1f}x")
        n, o = statistics.median(all_naive) * 1e3, statistics.median(all_ours) * 1e3
        print(f"{'all':<16}{n:>10.1f}{o:>10.1f}{n / o:>9.1f}x")
        browser.close()


if __name__ == "__main__":
    main()
