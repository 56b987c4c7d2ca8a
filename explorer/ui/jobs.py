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

Jobs are bounded and never outlive their user. The server-wide :data:`REGISTRY` admits at
most :data:`~explorer.limits.MAX_RUNNING_JOBS` running jobs and
:data:`~explorer.limits.MAX_JOBS_PER_SESSION` per browser session; one more is refused with
:class:`JobRefused` (a message for the page) and nothing starts. A job started from a
session that Streamlit's runtime no longer holds (its tab was closed: the websocket went and
Streamlit moved the session to its store for reconnects) for
:data:`~explorer.limits.ORPHANED_JOB_SECONDS` is cancelled at its next ``cancelled()``
check. Without a runtime (AppTest, notebooks, the CLI) there is no session to lose: jobs run
to the end unless cancelled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx

from explorer.errors import ExplorerError
from explorer.limits import MAX_JOBS_PER_SESSION, MAX_RUNNING_JOBS, ORPHANED_JOB_SECONDS

POLL_SECONDS = 0.5
JOBS_KEY = "jobs"
SESSION_ENDED = "its browser session ended (the tab was closed)"
log = logging.getLogger(__name__)


class JobRefused(ExplorerError):
    """One more job would pass a bound on running jobs (per server or per session)."""


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
        return self._job.cancelled()


Work = Callable[[Reporter], Any]


def session_active(session_id: str) -> bool:
    """False only when a Streamlit server runs and no longer holds this session's websocket."""
    return not Runtime.exists() or Runtime.instance().is_active_session(session_id)


class Registry:
    """The running jobs of one server, by browser session; the bounds on jobs hold here.

    Thread-safe: sessions start jobs from their script threads, jobs leave from their own.
    A cancelled job still winding down (until its next step) no longer counts.
    """

    def __init__(self, max_running: int = MAX_RUNNING_JOBS,
                 max_per_session: int = MAX_JOBS_PER_SESSION,
                 grace: float = ORPHANED_JOB_SECONDS,
                 is_active: Callable[[str], bool] = session_active) -> None:
        self.max_running, self.max_per_session, self.grace = max_running, max_per_session, grace
        self._is_active = is_active
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._gone_since: dict[str, float] = {}  # session: when it was first seen gone

    def admit(self, job: Job, replacing: Job | None = None) -> None:
        """Count ``job`` as running, or raise :class:`JobRefused` if a bound is reached
        (``replacing``, a job this one supersedes, is not counted)."""
        with self._lock:
            others = [j for j in self._counted() if j is not replacing]
            mine = [j for j in others if job.session is not None and j.session == job.session]
            if len(mine) >= self.max_per_session:
                names = ", ".join(j.label for j in mine)
                raise JobRefused(f"This session already runs {len(mine)} jobs ({names}): "
                                 f"cancel one first (at most {self.max_per_session} per "
                                 "session).")
            if len(others) >= self.max_running:
                raise JobRefused(f"The server is busy with {len(others)} other jobs (at most "
                                 f"{self.max_running} run at once); try again when one ends.")
            self._jobs.append(job)

    def leave(self, job: Job) -> None:
        with self._lock:
            if job in self._jobs:
                self._jobs.remove(job)
            if job.session is not None and all(j.session != job.session for j in self._jobs):
                self._gone_since.pop(job.session, None)

    def running(self) -> list[Job]:
        """The jobs that count against the bounds now (running, not cancelled)."""
        with self._lock:
            return self._counted()

    def _counted(self) -> list[Job]:
        return [j for j in self._jobs if not j.cancel_event.is_set()]

    def session_ended(self, session: str | None) -> bool:
        """True once ``session`` has been gone from the server for the grace period."""
        if session is None:
            return False
        now = time.monotonic()
        active = self._is_active(session)
        with self._lock:
            if active:
                self._gone_since.pop(session, None)
                return False
            return now - self._gone_since.setdefault(session, now) >= self.grace


REGISTRY = Registry()


class Job:
    """One background computation; ``status`` is running, done, cancelled or failed.

    ``session`` is the browser session that started it (None outside a Streamlit script);
    ``stopped_because`` says why a job was cancelled other than by its user."""

    def __init__(self, label: str, work: Work, session: str | None = None,
                 registry: Registry = REGISTRY) -> None:
        self.label = label
        self.session = session
        self.report = Report()
        self.result: Any = None
        self.error: str | None = None
        self.stopped_because: str | None = None
        self.cancel_event = threading.Event()
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._work = work
        self._registry = registry
        self._thread = threading.Thread(target=self._run, name=f"job:{label}", daemon=True)

    def start(self, replacing: Job | None = None) -> Job:
        """Run the work in its thread; raises :class:`JobRefused` (and starts nothing) when
        the registry's bounds are reached. ``replacing`` is not counted against them."""
        self._registry.admit(self, replacing)
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
            self._registry.leave(self)

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

    def cancelled(self) -> bool:
        """True once cancelled: by its user, or because its browser session ended."""
        if not self.cancel_event.is_set() and self._registry.session_ended(self.session):
            self.stopped_because = SESSION_ENDED
            log.warning("job %r cancelled after %.0f s: %s", self.label,
                        time.monotonic() - self.started, SESSION_ENDED)
            self.cancel_event.set()
        return self.cancel_event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends (tests, the CLI); True when it has ended."""
        self._thread.join(timeout)
        return not self.running


def start(key: str, label: str, work: Work) -> Job:
    """Start ``work`` as this session's job ``key`` (a running one under that key is
    cancelled: its result would be stale). Raises :class:`JobRefused`, with nothing
    started or cancelled, when the session or the server already runs as many jobs as
    allowed."""
    old = get(key)
    old = old if old is not None and old.running else None
    ctx = get_script_run_ctx(suppress_warning=True)
    job = Job(label, work, session=ctx.session_id if ctx is not None else None)
    job.start(replacing=old)
    if old is not None:
        old.cancel()
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
