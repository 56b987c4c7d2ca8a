"""Background jobs are bounded per server and per session, and stop when their session ends.

The registry is the real one (``explorer.ui.jobs.Registry``) with the limits of
``explorer/limits.py``; its work functions block on an Event so the tests decide when a job
ends. Only the session-liveness question ("does the server still hold this websocket?") is
given as a function where no Streamlit server runs; the browser test
(tests/browser/test_jobs_browser.py) asks the real runtime.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from explorer.limits import (
    MAX_FINETUNE_EPOCHS,
    MAX_ITERATIVE_STEPS,
    MAX_JOBS_PER_SESSION,
    MAX_RUNNING_JOBS,
)
from explorer.plan import Plan
from explorer.ui import jobs

APPTEST_SESSION = "test session id"  # what AppTest's script context calls its session


class Blocking:
    """Work functions that run until ``release()`` (or their cancellation)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started: list[jobs.Job] = []

    def work(self, report: jobs.Reporter) -> str:
        while not self.gate.wait(0.01):
            if report.cancelled():
                return "cancelled"
        return "done"

    def job(self, label: str, session: str | None, registry: jobs.Registry,
            replacing: jobs.Job | None = None) -> jobs.Job:
        job = jobs.Job(label, self.work, session, registry).start(replacing)
        self.started.append(job)
        return job

    def release(self) -> None:
        self.gate.set()
        for job in self.started:
            assert job.wait(10), f"{job.label} did not end"


@pytest.fixture
def blocking() -> Iterator[Blocking]:
    work = Blocking()
    yield work
    work.release()


def test_the_server_runs_at_most_max_jobs_and_a_finished_one_frees_a_slot(blocking):
    registry = jobs.Registry()
    running = [blocking.job(f"job {i}", f"session {i}", registry)
               for i in range(MAX_RUNNING_JOBS)]
    assert all(job.running for job in running) and len(registry.running()) == MAX_RUNNING_JOBS

    extra = jobs.Job("one more", blocking.work, "another session", registry)
    with pytest.raises(jobs.JobRefused, match=f"The server is busy with {MAX_RUNNING_JOBS} "
                       "other jobs .*; try again when one ends"):
        extra.start()
    assert not extra.running and extra not in registry.running()  # nothing started

    running[0].cancel()  # ends at its next step and leaves the registry
    assert running[0].wait(10) and running[0].result == "cancelled"
    assert blocking.job("one more", "another session", registry).running


def test_a_session_runs_at_most_its_share_and_cancelling_frees_it(blocking):
    registry = jobs.Registry()
    mine = [blocking.job(f"scan {i}", "tab A", registry) for i in range(MAX_JOBS_PER_SESSION)]
    names = ", ".join(job.label for job in mine)
    with pytest.raises(jobs.JobRefused, match=f"This session already runs "
                       f"{MAX_JOBS_PER_SESSION} jobs \\({names}\\): cancel one first"):
        jobs.Job("fine-tuning", blocking.work, "tab A", registry).start()
    assert blocking.job("fine-tuning", "tab B", registry).running  # another session may
    # A job replacing one of the session's own (same page, new settings) is not refused.
    assert blocking.job("scan 0 again", "tab A", registry, replacing=mine[0]).running
    mine[0].cancel()
    mine[1].cancel()  # a cancelled job no longer counts, even before its thread has ended
    assert blocking.job("fine-tuning", "tab A", registry).running


def test_jobs_without_a_streamlit_server_run_to_the_end():
    """No runtime (AppTest, notebooks, the CLI): no session can end, whatever its id."""
    registry = jobs.Registry(grace=0)  # the real liveness check, and no grace at all
    checks = []

    def work(report: jobs.Reporter) -> int:
        for _ in range(50):
            checks.append(report.cancelled())
            time.sleep(0.002)
        return len(checks) - 1

    for session in (None, APPTEST_SESSION):
        checks.clear()
        job = jobs.Job("count", work, session, registry).start()
        assert job.wait(10) and job.status == "done" and job.result == 49
        assert job.stopped_because is None and len(checks) == 50 and not any(checks)
    assert registry.running() == []


def test_a_job_stops_once_its_session_has_been_gone_for_the_grace_period(blocking):
    alive = {"tab A", "tab B"}
    registry = jobs.Registry(grace=0.5, is_active=lambda session: session in alive)
    orphan = blocking.job("fine-tuning", "tab A", registry)
    kept = blocking.job("fine-tuning", "tab B", registry)

    alive.discard("tab B")  # a network blip: back before the grace period ends
    time.sleep(0.2)
    alive.add("tab B")
    gone = time.monotonic()
    alive.discard("tab A")  # the tab is closed
    assert orphan.wait(5), "a job of a closed session kept running"
    stopped = time.monotonic() - gone
    assert 0.5 <= stopped < 2, stopped
    assert orphan.status == "cancelled" and orphan.result == "cancelled"
    assert orphan.stopped_because == jobs.SESSION_ENDED
    time.sleep(0.5)
    assert kept.running and not kept.cancel_event.is_set()
    assert registry.running() == [kept]


@pytest.fixture
def full_server(blocking) -> Iterator[None]:
    """The app's registry filled with other sessions' jobs."""
    for i in range(MAX_RUNNING_JOBS):
        blocking.job(f"job {i}", f"someone else {i}", jobs.REGISTRY)
    yield
    blocking.release()


def test_fine_tune_page_says_the_server_is_busy_and_starts_nothing(open_page, full_server):
    at = open_page("finetune", "digits-mlp", Plan(sparsity={"fc1": 0.5}))
    epochs = at.number_input(key="ft_epochs")
    assert epochs.max == MAX_FINETUNE_EPOCHS
    at.radio(key="ft_mode").set_value("iterative pruning").run()
    assert at.number_input(key="ft_steps").max == MAX_ITERATIVE_STEPS
    at.radio(key="ft_mode").set_value("fine-tune the plan").run()
    at.button(key="ft_start").click().run()
    assert not at.exception, at.exception
    [error] = at.error
    assert error.value == (f"Cannot start: The server is busy with {MAX_RUNNING_JOBS} other "
                           f"jobs (at most {MAX_RUNNING_JOBS} run at once); try again when "
                           "one ends.")
    assert "jobs" not in at.session_state or "finetune" not in at.session_state["jobs"]
    assert not at.button(key="ft_start").disabled  # the page is intact: try again later


def test_sensitivity_page_says_the_session_runs_enough_jobs(open_page, blocking):
    for i in range(MAX_JOBS_PER_SESSION):  # this AppTest session's own jobs
        blocking.job(f"round trip {i}", APPTEST_SESSION, jobs.REGISTRY)
    at = open_page("sensitivity", "digits-mlp")
    at.button(key="sens_run").click().run()
    assert not at.exception, at.exception
    [error] = at.error
    assert error.value.startswith(f"This session already runs {MAX_JOBS_PER_SESSION} jobs "
                                  "(round trip 0, round trip 1): cancel one first")
    assert "jobs" not in at.session_state or not at.session_state["jobs"]
    blocking.release()
    at.button(key="sens_run").click().run()  # a slot is free again: the scan starts
    job = at.session_state["jobs"]["sensitivity::digits-mlp"]
    assert job.wait(120) and job.error is None and job.session == APPTEST_SESSION
