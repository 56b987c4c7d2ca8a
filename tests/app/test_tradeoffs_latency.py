"""The Trade-offs page's measured speed-up axis in AppTest: a job times the history's plans.

Times differ between runs, so what is checked against the engine is what does not depend on
the clock (which plans are drawn, at which accuracy, the batch and threads named on the
axis) and, for the clock's figures, that the chart draws the job's own results.
"""

from __future__ import annotations

import pytest

from explorer.plan import Plan

CNN = "digits-cnn"
PLANS = [
    Plan(granularity="neurons", criterion="l1", scope="global", amount=0.5),
    Plan(scope="global", amount=0.9),
]
MEASURED = "to_measured"


@pytest.fixture
def visited(open_page):
    at = open_page("tradeoffs", CNN, PLANS[0])
    at.session_state["plan"] = PLANS[1]
    at.run()
    assert not at.exception, at.exception
    return at


def test_measured_speedup_axis_times_the_plans_in_a_job(visited, charts):
    at = visited
    accuracy = list(charts.traces(charts.of(at)["workspace"], "evaluated plans")[0]["y"])
    at.radio(key="to_x").set_value("measured").run()
    assert not at.exception, at.exception
    assert "workspace" not in charts.of(at)
    at.selectbox(key="to_lat_batch").set_value(8).run()
    button = at.button(key="to_lat_measure")
    assert button.label == "Measure 2 plan(s)"
    button.click().run()
    job = at.session_state["jobs"][f"to_latency::{CNN}"]
    assert job.wait(120) and job.error is None, job.error
    at.run()
    assert not at.exception, at.exception
    results = at.session_state[MEASURED]
    by_setting = {key[1:]: done for key, done in results.items()}
    done = by_setting[8, 1]
    assert set(done) == {p.key for p in PLANS} and not by_setting.get((1, 1))
    figure = charts.of(at)["to_measured_chart"]
    assert "measured" in figure["layout"]["title"]["text"]
    assert "batch 8, 1 thread(s)" in figure["layout"]["xaxis"]["title"]["text"]
    plans = charts.traces(figure, "evaluated plans")[0]
    assert list(plans["x"]) == pytest.approx([done[p.key] for p in PLANS])
    assert all(v > 0 for v in plans["x"])
    assert list(plans["y"]) == pytest.approx(accuracy)  # the same plans, the same accuracy
    assert at.button(key="to_lat_measure").label == "Measure 0 plan(s)"
    assert any("Measured: 2 of 2 plans" in c.value for c in at.caption)
    # FLOPs and size come back, the measurements kept
    at.radio(key="to_x").set_value("cost").run()
    assert "workspace" in charts.of(at) and at.session_state[MEASURED] == results


def test_before_measuring_only_the_dense_model_is_drawn_at_one(visited, charts):
    at = visited
    at.radio(key="to_x").set_value("measured").run()
    figure = charts.of(at)["to_measured_chart"]
    dense = charts.traces(figure, "dense model")[0]
    assert list(dense["x"]) == [1.0]
    assert not list(charts.traces(figure, "evaluated plans")[0]["x"])  # none measured yet
    assert any("Measured: 0 of 2 plans" in c.value for c in at.caption)
