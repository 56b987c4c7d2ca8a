"""Long computations off the script thread: progress, cancel and live partial results.

A sensitivity scan or a fine-tuning run takes seconds to minutes. Run inside the script, it
would freeze the page (no other widget answers until it ends) and could not be cancelled.
Instead a page starts a :class:`Job` — the work runs in a daemon thread and reports through
``report(done, total, message, partial)`` — keeps it in the session, and calls
:func:`watch`: a fragment that reruns every :data:`POLL_SECONDS` draws the progress bar, a
Cancel button and (through ``draw``) the partial result, while the rest of the page stays
usable. When the job ends, one full rerun lets the page draw the result.

The work function must not call Streamlit (it has no script context in its thread), and
must not share mutable state with the script (e.g. build its own Evaluator): the script
keeps running while the job does. It checks ``cancelled()`` between steps and returns what
it has; :class:`~explorer.errors.ExplorerError` becomes the job's ``error`` message, and any
other exception one line naming it — never a traceback on the page.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from explorer.errors import ExplorerError

POLL_SECONDS = 0.5
JOBS_KEY = "jobs"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Report:
    """The latest progress of a job: ``done`` of ``total`` steps, a message, a partial result."""

    done: int = 0
    total: int = 0
    message: str = ""
    partial: Any = None

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0


class Reporter:
    """What the work function receives: ``report(...)`` and ``cancelled()``."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def __call__(self, done: int, total: int, message: str = "", partial: Any = None) -> None:
        self._job.report = Report(done, total, message, partial)

    def cancelled(self) -> bool:
        return self._job.cancel_event.is_set()


Work = Callable[[Reporter], Any]


class Job:
    """One background computation; ``status`` is running, done, cancelled or failed."""

    def __init__(self, label: str, work: Work) -> None:
        self.label = label
        self.report = Report()
        self.result: Any = None
        self.error: str | None = None
        self.cancel_event = threading.Event()
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._work = work
        self._thread = threading.Thread(target=self._run, name=f"job:{label}", daemon=True)

    def start(self) -> Job:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.result = self._work(Reporter(self))
        except ExplorerError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug or an unexpected model: one line, logged in full
            log.exception("job %s failed", self.label)
            self.error = f"{self.label} failed: {type(exc).__name__}: {exc}"
        finally:
            self.seconds = time.monotonic() - self.started

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def status(self) -> str:
        if self.running:
            return "running"
        if self.error is not None:
            return "failed"
        return "cancelled" if self.cancel_event.is_set() else "done"

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, the CLI); True when it has ended."""
        self._thread.join(timeout)
        return not self.running


def start(key: str, label: str, work: Work) -> Job:
    """Start ``work`` as this session's job ``key`` (a running one under that key is
    cancelled first: its result would be stale)."""
    old = get(key)
    if old is not None and old.running:
        old.cancel()
    job = Job(label, work).start()
    st.session_state.setdefault(JOBS_KEY, {})[key] = job
    return job


def get(key: str) -> Job | None:
    return st.session_state.get(JOBS_KEY, {}).get(key)


def forget(key: str) -> None:
    job = st.session_state.get(JOBS_KEY, {}).pop(key, None)
    if job is not None:
        job.cancel()


def watch(key: str, draw: Callable[[Report], None] | None = None) -> Job | None:
    """Draw job ``key``'s progress while it runs (a polling fragment with Cancel); returns
    the job (or None) so the page can draw a finished job's result or error."""
    job = get(key)
    if job is not None and job.running:
        _live(key, draw)
    return job


@st.fragment(run_every=POLL_SECONDS)
def _live(key: str, draw: Callable[[Report], None] | None) -> None:
    job = get(key)
    if job is None or not job.running:
        st.rerun()  # the whole page: it draws the result now (st.rerun does not return)
    report = job.report
    elapsed = time.monotonic() - job.started
    text = f"{job.label}: {report.done} of {report.total}" if report.total else job.label
    if report.message:
        text += f" · {report.message}"
    st.progress(report.fraction, text=f"{text} · {elapsed:.0f} s")
    st.button("Cancel", key=f"{key}::cancel", on_click=job.cancel,
              disabled=job.cancel_event.is_set(), help="stop after the current step; "
              "what is done so far is kept")
    if draw is not None and report.partial is not None:
        draw(report)
