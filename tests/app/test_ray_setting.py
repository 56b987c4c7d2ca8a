"""The sidebar's "Run sweeps on" setting (issue 15).

It exists only where the server was started with PE_ALLOW_RAY=1 (it sends the model and data
away); a bad or dead address is one error box with the page intact; on a local two-worker Ray
cluster (one for the module, held as the app holds it) the Sensitivity page's scan equals the
engine's in-process scan on one torch thread, the page's Cancel stops the workers, and the
Compare criteria curves and the Trade-offs baselines equal the pages' in-process ones.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
import streamlit as st
import torch
from processes import gone
from streamlit.testing.v1 import AppTest

from explorer.data import split_for_decisions
from explorer.decide.sensitivity import sensitivity
from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui import cluster, jobs, state
from explorer.ui.layout import RAY_PICKER_KEY

PAGES = Path(__file__).resolve().parents[2] / "app_pages"

COARSE = tuple(round(i / 10, 2) for i in range(10))  # the page's "10%" step
HAS_RAY = importlib.util.find_spec("ray") is not None


def field(at: AppTest) -> list:
    return [t for t in at.sidebar.text_input if t.key == RAY_PICKER_KEY]


def job_of(at: AppTest, model: str) -> jobs.Job:
    return at.session_state["jobs"][f"sensitivity::{model}"]


def run_scan(at: AppTest, model: str) -> jobs.Job:
    at.button(key="sens_run").click().run()
    assert not at.exception, at.exception
    job = job_of(at, model)
    assert job.wait(120)
    at.run()
    return job


def test_no_setting_unless_the_server_allows_it(open_page, monkeypatch):
    """Not shown, and a Ray address put in the session anyway is not used: a dead one
    would fail the scan."""
    monkeypatch.delenv(cluster.ALLOW_ENV, raising=False)
    at = open_page("sensitivity", "digits-mlp")
    assert field(at) == [] and not cluster.allowed()
    at.session_state[state.RAY_KEY] = "127.0.0.1:9"
    at.radio(key="sens_step").set_value("10%").run()
    job = run_scan(at, "digits-mlp")
    assert job.error is None and not job.result[1].cancelled


@pytest.mark.parametrize(("address", "phrase"), [
    ("head", "A Ray address (--ray) is local, HOST:PORT or ray://HOST:PORT"),
    ("127.0.0.1:9", "No Ray cluster answers at '127.0.0.1:9'" if HAS_RAY
     else "pip install -e '.[ray]'"),
])
def test_a_bad_or_dead_address_is_one_error_with_the_page_intact(open_page, monkeypatch,
                                                                  address, phrase):
    monkeypatch.setenv(cluster.ALLOW_ENV, "1")
    at = open_page("sensitivity", "digits-mlp")
    [box] = field(at)
    assert box.value == "" and "SENT" in box.help
    box.input(address).run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.sidebar.error]
    assert len(errors) == 1 and phrase in errors[0] and "\n" not in errors[0]
    assert at.session_state[state.RAY_KEY] is None  # sweeps stay in this process
    assert field(at)[0].value == address  # kept, to be corrected
    assert at.title[0].value == "Sensitivity" and not at.button(key="sens_run").disabled
    field(at)[0].input("").run()
    assert not at.sidebar.error  # the message goes with the next choice


@pytest.fixture(scope="module")
def local_ray():
    """The app's connection to a local two-worker cluster, made once for the module."""
    pytest.importorskip("ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    held = cluster.CONNECTION.connect("local")
    yield held
    cluster.CONNECTION.close()
    torch.set_num_threads(threads)


def test_scan_on_a_local_cluster_equals_the_in_process_scan(local_ray, open_page,
                                                            monkeypatch, mlp, digits):
    monkeypatch.setenv(cluster.ALLOW_ENV, "1")
    at = open_page("sensitivity", "digits-mlp")
    field(at)[0].input("local").run()
    assert not at.sidebar.error and at.session_state[state.RAY_KEY] == "local"
    assert any("Ray cluster at local" in c.value for c in at.sidebar.caption)
    at.radio(key="sens_step").set_value("10%").run()
    before = local_ray.worker_pids
    job = run_scan(at, "digits-mlp")
    assert job.error is None, job.error
    calibration = split_for_decisions(digits).calibration
    here = sensitivity(Evaluator(mlp, calibration), "weights", "magnitude", COARSE)
    assert job.result[1] == here and at.session_state["sensitivity"]["digits-mlp"] == here
    assert local_ray.worker_pids != before and len(local_ray.worker_pids) == 2


def test_cancel_on_the_page_stops_the_workers(local_ray, open_page, monkeypatch):
    monkeypatch.setenv(cluster.ALLOW_ENV, "1")
    at = open_page("sensitivity", "digits-resnet")  # the 5% grid: 20 points per unit
    field(at)[0].input("local").run()
    before = local_ray.worker_pids
    at.button(key="sens_run").click().run()
    at.button(key="sensitivity::digits-resnet::cancel").click().run()
    job = job_of(at, "digits-resnet")
    assert job.wait(120) and job.error is None, job.error
    assert job.result[1].cancelled
    if local_ray.worker_pids != before:  # cancelled once the workers had started
        assert gone(local_ray.worker_pids)
    assert freed(local_ray)  # either way no worker of the scan holds a CPU any more


def freed(held, seconds: float = 20.0) -> bool:
    """Whether every CPU of the cluster is free again within ``seconds``."""
    end = time.monotonic() + seconds
    total = held.ray.cluster_resources()["CPU"]
    while held.ray.available_resources().get("CPU", 0) < total and time.monotonic() < end:
        time.sleep(0.2)
    return held.ray.available_resources().get("CPU", 0) == total


def opened(page: str, model: str, address: str | None) -> AppTest:
    """``page`` first run with sweeps on ``address`` (None: this process), fresh caches."""
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(PAGES / f"{page}.py"), default_timeout=120)
    at.session_state["model"], at.session_state["plan"] = model, Plan()
    at.session_state["undo"], at.session_state[state.RAY_KEY] = [], address
    at.run()
    assert not at.exception, at.exception
    return at


def test_compare_and_baselines_on_a_local_cluster_equal_this_process(local_ray, monkeypatch,
                                                                      charts):
    monkeypatch.setenv(cluster.ALLOW_ENV, "1")

    def curves(address):
        at = opened("compare", "digits-mlp", address)
        at.radio(key="cmp_mode").set_value("whole model, global").run()
        at.button(key="cmp_compute").click().run()
        assert not at.exception and not at.error, at.exception or at.error
        [(found, _)] = at.session_state["compare_curves"].values()
        return found

    def baselines(address):
        figure = charts.of(opened("tradeoffs", "digits-cnn", address))["workspace"]
        return {name: charts.traces(figure, name)[0]
                for name in ("uniform", "global magnitude", "random")}

    here = curves(None)
    before = local_ray.worker_pids
    there = curves("local")
    assert local_ray.worker_pids != before  # it ran on the cluster's workers
    assert there == here and there.errors == here.errors and len(here) >= 3
    here = baselines(None)
    before = local_ray.worker_pids
    there = baselines("local")
    assert local_ray.worker_pids != before
    for name, trace in here.items():
        assert len(trace["y"]) == 5  # compression 2x ... 32x
        for axis in ("x", "y", "text"):
            assert list(there[name][axis]) == list(trace[axis])
