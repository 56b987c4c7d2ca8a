"""Browser fixtures: one Streamlit server per test module, one headless Chromium per session.

Every wait is bounded. A rerun is seen two ways: the ``ForwardMsg`` frames on the page's
websocket (a run starts with ``session_status_changed(script_is_running=True)`` and ends with
``script_finished``) and the ``data-test-script-state`` attribute of ``stApp``. The frames
are the reliable signal: a fast fragment rerun can go running -> notRunning within one React
render, and the attribute then never changes in the DOM.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import pytest
from playwright.sync_api import Browser, Locator, Page, WebSocket, expect, sync_playwright
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from explorer.evaluator import Evaluator
from explorer.metrics import Metrics
from explorer.plan import Plan
from explorer.ui.urls import plan_from_query

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"

SERVER_START_S = 90
LOAD_MS = 90_000  # a page's first run; on a fresh server it loads the model and data
ACTION_MS = 30_000  # one rerun after a click or a key press
SETTLE_MS = 5_000  # how long a rerun may take to start after an action (a busy page is slow)
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"

expect.set_options(timeout=ACTION_MS)
SERVERS: dict[str, subprocess.Popen] = {}  # url: the server process (its CPU time, memory)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _streamlit() -> list[str]:
    script = Path(sys.executable).with_name("streamlit")
    return [str(script)] if script.exists() else [sys.executable, "-m", "streamlit"]


def _wait_until_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamlit exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    pytest.fail(f"streamlit not ready after {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (`make chromium`) "
                    "to run the browser tests")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server_url(browser: Browser, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh Streamlit server running app.py from the repo root, for one test module.

    Its output goes to ``test-artifacts/streamlit-<module>.log``.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / f"streamlit-{request.module.__name__.rpartition('.')[2]}.log"
    command = [*_streamlit(), "run", "app.py", "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port),
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with log.open("w") as out:
        proc = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        SERVERS[url] = proc
        try:
            _wait_until_ready(url, proc, log)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


@pytest.fixture(scope="module")
def server_process(server_url: str) -> subprocess.Popen:
    """The module's Streamlit server process: read its /proc figures (CPU time, memory)."""
    return SERVERS[server_url]


@pytest.fixture(scope="module")
def app_url(browser: Browser, server_url: str) -> str:
    """The module's server after one session has opened ``/``: the demo model is loaded
    (into the cache every session shares), so no test pays for it in its own waits."""
    context = browser.new_context()
    try:
        AppPage(context.new_page(), server_url).goto("/")
    finally:
        context.close()
    return server_url


class AppPage:
    """One browser session of the app (its own context, so its own Streamlit session)."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.started = 0  # script runs begun, as the server reported them
        self.finished = 0  # script runs (full or fragment) ended
        page.on("websocket", self._watch)

    def _watch(self, socket_: WebSocket) -> None:
        socket_.on("framereceived", self._on_frame)

    def _on_frame(self, payload: bytes | str) -> None:
        if isinstance(payload, str):
            return
        msg = ForwardMsg()
        msg.ParseFromString(payload)
        kind = msg.WhichOneof("type")
        if kind == "session_status_changed" and msg.session_status_changed.script_is_running:
            self.started += 1
        elif kind == "script_finished":
            self.finished += 1

    # -- waiting ---------------------------------------------------------------------------
    def _poll(self, condition: Callable[[], bool], timeout_ms: float) -> bool:
        """Let Playwright deliver events until ``condition()`` holds; False on timeout."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not condition():
            if time.monotonic() > deadline:
                return False
            self.page.wait_for_timeout(50)
        return True

    def wait_idle(self, timeout: float = ACTION_MS) -> None:
        """Wait until no script runs and every element is drawn (lazily loaded widgets,
        metrics and exceptions show a skeleton first)."""
        self.page.wait_for_selector(IDLE, state="attached", timeout=timeout)
        expect(self.page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=timeout)

    @contextmanager
    def rerun(self, timeout: float = ACTION_MS) -> Iterator[None]:
        """Around an action: wait for the rerun it causes to start (or SETTLE_MS if none
        does) and to finish, then for the app to be idle."""
        started, finished = self.started, self.finished
        yield
        begun = self._poll(lambda: self.started > started or self.finished > finished,
                           SETTLE_MS)
        if begun and not self._poll(lambda: self.finished > finished, timeout):
            raise AssertionError(f"a rerun did not finish within {timeout / 1000:.0f} s")
        self.wait_idle(timeout)

    def goto(self, path: str = "/") -> None:
        """Open ``path`` (with its query string) and wait for the first run to finish."""
        finished = self.finished
        self.page.goto(self.base_url + path, timeout=LOAD_MS)
        if not self._poll(lambda: self.finished > finished, LOAD_MS):
            raise AssertionError(f"the first run of {path} did not finish")
        self.wait_idle(LOAD_MS)
        self.page.locator("h1").first.wait_for(state="attached", timeout=ACTION_MS)

    def wait_for_plan(self, wanted: Callable[[Plan], bool], timeout: float = ACTION_MS) -> Plan:
        """The plan in the URL once ``wanted(plan)`` holds (the URL follows each rerun)."""
        if not self._poll(lambda: wanted(self.plan()), timeout):
            raise AssertionError(f"the URL never held the wanted plan; it is {self.page.url}")
        return self.plan()

    def wait_for_query(self, key: str, value: str, timeout: float = ACTION_MS) -> None:
        """Wait until the URL's ``key`` is ``value``: a page that reruns itself (st.rerun
        after an upload) syncs the URL in its second run, which may start after the app
        looked idle."""
        if not self._poll(lambda: self.query().get(key) == value, timeout):
            raise AssertionError(f"the URL never had {key}={value}; it is {self.page.url}")

    # -- reading ---------------------------------------------------------------------------
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlparse(self.page.url).query))

    def plan(self) -> Plan:
        """The plan the app mirrors into the URL query string."""
        return plan_from_query(self.query())

    def metric_value(self, label: str) -> Locator:
        """The value element of the metric labelled exactly ``label``."""
        label_ = self.page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
        return self.page.get_by_test_id("stMetric").filter(has=label_).get_by_test_id(
            "stMetricValue")

    def metric(self, label: str) -> str:
        """The displayed value of the metric labelled ``label``."""
        return (self.metric_value(label).text_content() or "").strip()

    def slider(self, label: str) -> Locator:
        """The thumb (a range input) of the slider labelled ``label``."""
        quoted = json.dumps(label, ensure_ascii=False)
        return self.page.locator(
            f"[data-testid='stSlider'] input[type='range'][aria-label={quoted}]")

    def slider_values(self) -> dict[str, int]:
        thumbs = self.page.locator("[data-testid='stSlider'] input[type='range']")
        return {t.get_attribute("aria-label"): int(t.input_value()) for t in thumbs.all()}

    def nav_link(self, title: str) -> Locator:
        """The sidebar link of the st.navigation page titled ``title``."""
        return self.page.locator(
            f"[data-testid='stSidebarNavLink']:has(span[label={json.dumps(title)}])")

    def exceptions(self) -> list[str]:
        return self.page.get_by_test_id("stException").all_inner_texts()

    # -- acting ----------------------------------------------------------------------------
    def press(self, slider_label: str, key: str, times: int = 1) -> None:
        """Press ``key`` on a slider's thumb ``times`` times; each press is one rerun."""
        thumb = self.slider(slider_label)
        for _ in range(times):
            with self.rerun():
                thumb.press(key)

    def choose_file(self, uploader_label: str, name: str, content: bytes) -> None:
        """Choose ``content`` as file ``name`` in the uploader ``uploader_label`` and wait
        until it reached the server: a form submitted while the chip still says "Cancel
        upload of ..." carries no file (seen in CI: Load pressed, nothing loaded)."""
        uploader = self.page.get_by_test_id("stFileUploader").filter(has_text=uploader_label)
        uploader.locator("input[type='file']").set_input_files(
            files=[{"name": name, "mimeType": "application/octet-stream", "buffer": content}])
        expect(uploader.get_by_role("button", name=f"Remove {name}", exact=True)).to_be_visible()

    def navigate(self, title: str, path: str) -> None:
        """Click the sidebar link ``title`` and wait until page ``path`` has run."""
        with self.rerun():
            self.nav_link(title).click()
        self.page.wait_for_url(lambda url: urlparse(url).path == path, timeout=ACTION_MS)

    def screenshot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def _opener(browser: Browser, base_url: str) -> Iterator[Callable[[str], AppPage]]:
    contexts = []

    def open_(path: str = "/") -> AppPage:
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(ACTION_MS)
        contexts.append(context)
        app = AppPage(context.new_page(), base_url)
        app.goto(path)
        return app

    yield open_
    for context in contexts:
        context.close()


@pytest.fixture
def open_app(browser: Browser, app_url: str) -> Iterator[Callable[[str], AppPage]]:
    """Factory: ``open_app("/prune?model=...")`` opens a new browser session on that URL."""
    yield from _opener(browser, app_url)


@pytest.fixture
def open_cold_app(browser: Browser, server_url: str) -> Iterator[Callable[[str], AppPage]]:
    """Like ``open_app``, on the module's server as it is (its first session may be ours)."""
    yield from _opener(browser, server_url)


@pytest.fixture(scope="session")
def cnn_metrics(cnn, digits) -> Callable[[Plan], Metrics]:
    """The engine's metrics of a plan on the digits CNN: the reference the app must show."""
    return Evaluator(cnn, digits).evaluate
