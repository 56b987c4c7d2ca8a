"""The Latency page in AppTest: Measure runs the engine as a job; the page shows its numbers.

The job runs in another thread; the tests wait for it (``Job.wait``) and rerun the page.
Times differ between two runs, so what is compared with the engine is what does not depend
on the clock (the theoretical speed-up, which forms are measured, the layers and their FLOPs
shares) and, for the clock's figures, that the page shows the job's own result.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui import jobs

NEURONS_50 = Plan(granularity="neurons", criterion="l1", scope="global", amount=0.5)


def measured(at: AppTest, model: str) -> AppTest:
    """Press Measure, wait for the job and rerun: the finished page."""
    at.button(key="latency_measure").click().run()
    assert not at.exception, at.exception
    job = at.session_state["jobs"][f"latency::{model}"]
    assert job.wait(120) and job.error is None, job.error
    return at.run()


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_measure_shows_theoretical_and_measured_speedups_and_layers(open_page, charts, mlp):
    at = open_page("latency", "digits-mlp", NEURONS_50)
    assert not at.exception, at.exception
    assert any("press **Measure**" in i.value for i in at.info)
    at = measured(at, "digits-mlp")
    assert not at.exception, at.exception
    _, plan, result = at.session_state["latency_results"]["digits-mlp"]
    assert plan == NEURONS_50 and result.batch == 1 and result.threads == 1
    speedup = Evaluator(mlp, None).evaluate(NEURONS_50).speedup
    assert metric(at, "Theoretical speed-up (FLOPs)") == f"{speedup:.2f}x"
    assert metric(at, "Measured speed-up") == f"{result.measured:.2f}x"
    forms = next(d.value for d in at.dataframe if "p50 (ms)" in d.value.columns)
    assert list(forms["form"]) == ["dense", "masked", "sparse", "shrunk", "onnx"]
    assert forms.set_index("form").loc["shrunk", "p50 (ms)"] == pytest.approx(
        result.latency_ms["shrunk"].p50)
    onnx = forms.set_index("form").loc["onnx"]
    if result.onnx_dense is None:  # the optional onnx extra is not installed
        assert "ONNX Runtime is not installed" in onnx["note"]
    else:
        assert onnx["p50 (ms)"] == pytest.approx(result.latency_ms["onnx"].p50)
        assert f"{result.onnx_speedup:.2f}x the dense model in ONNX Runtime" in onnx["note"]
    bars = charts.of(at)["latency_layers"]
    flops = charts.traces(bars, "FLOPs")[0]
    metrics = Evaluator(mlp, None).evaluate(NEURONS_50)
    assert list(flops["x"]) == mlp.layer_names
    assert list(flops["y"]) == pytest.approx(
        [m.flops_effective / metrics.flops["effective"] * 100 for m in metrics.layers])


def test_batch_and_threads_controls_reach_the_measurement(open_page):
    at = open_page("latency", "digits-cnn")
    at.select_slider(key="latency_batch").set_value(8)
    at.number_input(key="latency_threads").set_value(1)
    at = measured(at.run(), "digits-cnn")
    result = at.session_state["latency_results"]["digits-cnn"][2]
    assert result.batch == 8
    assert any("Batch 8, 1 thread(s)" in c.value for c in at.caption)
    # another plan afterwards: the old figures stay, flagged
    at.session_state["plan"] = NEURONS_50
    at.run()
    assert any("earlier plan" in w.value for w in at.warning)


def test_a_failing_measurement_is_one_message_with_the_page_intact(open_page):
    needs_data = Plan(granularity="neurons", criterion="activation", scope="global",
                      amount=0.5)  # an architecture-only model has no images to score on
    at = open_page("latency", "resnet18-cifar", needs_data)
    at.button(key="latency_measure").click().run()
    job = at.session_state[jobs.JOBS_KEY].get("latency::resnet18-cifar")
    if job is not None:  # still running when the click's rerun drew the page
        assert job.wait(60)
        at.run()
    assert not at.exception
    assert any("The measurement failed" in e.value and "needs validation data" in e.value
               for e in at.error)
    assert at.button(key="latency_measure")  # the controls are still there
    at.run()  # any later rerun (another control, a fragment) keeps saying why
    assert any("The measurement failed" in e.value for e in at.error)
