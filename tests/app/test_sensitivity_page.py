"""The Sensitivity page in AppTest: a background scan whose charts equal the engine's scan.

Expected curves come from :func:`explorer.decide.sensitivity.sensitivity` run here on a fresh
evaluator of the calibration part of the digits validation split (the page scans there, so
the suggestions below are reported on the held-out part), the dense reference from a fresh
evaluation; the page runs its scan as a job in
another thread, which the tests wait for (``Job.wait``) before rerunning the page.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from explorer.data import digits_train, split_for_decisions
from explorer.decide.sensitivity import DEFAULT_GRID, sensitivity
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.plan import Plan
from explorer.ui import jobs
from explorer.ui.state import NO_DATA_NOTE

COARSE = tuple(round(i / 10, 2) for i in range(10))  # the page's "10%" step


def calibration(digits):
    return split_for_decisions(digits).calibration


def job_of(at: AppTest, model: str) -> jobs.Job | None:
    return at.session_state["jobs"].get(f"sensitivity::{model}") if "jobs" in at.session_state \
        else None


def scan(at: AppTest, model: str, step: str = "10%", **choices: str) -> AppTest:
    """Set the controls, press Run, wait for the job and rerun: the finished page."""
    at.radio(key="sens_step").set_value(step)
    for key, value in choices.items():
        (at.selectbox if key.startswith("sens_criterion") else at.radio)(key=key).set_value(value)
    at.run()
    at.button(key="sens_run").click().run()
    assert not at.exception, at.exception
    job = job_of(at, model)
    assert job is not None and job.wait(120) and job.error is None, job and job.error
    at.run()
    assert not at.exception, at.exception
    return at


def lines(at: AppTest, charts) -> dict[str, dict]:
    return {t["name"]: t for t in charts.of(at)["sens_lines"]["data"]}


def test_weight_scan_equals_the_engine(open_page, charts, mlp, digits):
    at = open_page("sensitivity", "digits-mlp")
    assert not at.get("plotly_chart") and [b.label for b in at.button] == ["Run", "Recompute"]
    assert at.button(key="sens_recompute").disabled  # nothing cached yet
    scan(at, "digits-mlp")

    engine = sensitivity(Evaluator(mlp, calibration(digits)), "weights", "magnitude", COARSE)
    dense = Evaluator(mlp, calibration(digits)).evaluate(Plan())
    drawn = lines(at, charts)
    assert list(drawn) == mlp.layer_names == [u.unit for u in engine.units]
    for curve in engine.units:
        assert list(drawn[curve.unit]["x"]) == [f * 100 for f in COARSE]
        assert list(drawn[curve.unit]["y"]) == [a * 100 for a in curve.accuracy]
    figure = charts.of(at)["sens_lines"]
    assert [s["y0"] for s in figure["layout"]["shapes"]] == [dense.accuracy * 100]

    heat = charts.of(at)["sens_heatmap"]["data"][0]
    assert list(heat["y"]) == mlp.layer_names
    want = np.array([[(dense.accuracy - a) * 100 for a in u.accuracy] for u in engine.units])
    np.testing.assert_allclose(np.array(heat["z"], dtype=float), want, rtol=0, atol=1e-9)
    assert np.array(heat["z"]).shape == (3, len(COARSE))

    captions = " ".join(c.value for c in at.caption)
    assert "on 182 calibration images" in captions
    assert "Chosen on 182 calibration images of the 360 digits-val images" in captions
    held_out = Evaluator(mlp, split_for_decisions(digits).held_out).evaluate(Plan())
    assert f"{held_out.accuracy * 100:.2f}% on the 178 held-out images" in captions

    at.radio(key="sens_measure").set_value("loss").run()
    drawn = lines(at, charts)
    for curve in engine.units:
        assert list(drawn[curve.unit]["y"]) == list(curve.loss)
    assert at.session_state["sensitivity"]["digits-mlp"] == engine  # for later sections


def test_second_run_is_served_from_the_cache_in_any_session(open_page, charts):
    at = open_page("sensitivity", "digits-mlp")
    scan(at, "digits-mlp")
    first = charts.of(at)
    assert not any("Cached" in i.value for i in at.info)

    started = time.perf_counter()
    at.button(key="sens_run").click().run()
    assert job_of(at, "digits-mlp") is None  # no job: the stored scan is drawn at once
    assert any("Cached" in i.value for i in at.info)
    assert charts.of(at) == first

    other = open_page("sensitivity", "digits-mlp")  # another session, same process
    assert other.button(key="sens_recompute").disabled  # the default 5% grid: not cached
    other.radio(key="sens_step").set_value("10%").run()
    assert not other.button(key="sens_recompute").disabled
    other.button(key="sens_run").click().run()
    assert job_of(other, "digits-mlp") is None and charts.of(other) == first
    assert time.perf_counter() - started < 30  # two page runs, no scan

    other.button(key="sens_recompute").click().run()  # a fresh scan on request
    job = job_of(other, "digits-mlp")
    assert job is not None and job.wait(60)
    other.run()
    assert not any("Cached" in i.value for i in other.info) and charts.of(other) == first


def test_neuron_units_are_coupled_groups_with_skipped_layers(open_page, charts, resnet,
                                                             digits):
    at = open_page("sensitivity", "digits-resnet")
    scan(at, "digits-resnet", sens_granularity="neurons")
    groups: dict[str, list[str]] = {}
    for layer in resnet.layers:  # independent of the page: layers sharing a group
        if layer.neuron_reason is None:
            groups.setdefault(layer.group, []).append(layer.name)
    drawn = lines(at, charts)
    labels = [g if m == [g] else f"{g} [{' + '.join(m)}]" for g, m in groups.items()]
    assert list(drawn) == labels and any("+" in label for label in labels)
    engine = sensitivity(Evaluator(resnet, calibration(digits), bn_calibration=digits_train()),
                         "neurons", "l1", COARSE)  # BatchNorm recalibrated, the default
    for label, curve in zip(labels, engine.units, strict=True):
        assert list(drawn[label]["y"]) == [a * 100 for a in curve.accuracy]
    skipped = [la.name for la in resnet.layers if not la.neuron_prunable]
    text = " ".join(m.value for m in at.markdown)
    assert skipped and all(f"**{name}**" in text for name in skipped)


def test_current_plan_as_base(open_page, charts, mlp, digits):
    plan = Plan(sparsity={"fc1": 0.6, "fc3": 0.3})
    at = open_page("sensitivity", "digits-mlp", plan)
    scan(at, "digits-mlp", sens_base="the current plan")
    engine = sensitivity(Evaluator(mlp, calibration(digits)), "weights", "magnitude", COARSE,
                         base=plan)
    drawn = lines(at, charts)
    for curve in engine.units:
        assert list(drawn[curve.unit]["y"]) == [a * 100 for a in curve.accuracy]
    base = Evaluator(mlp, calibration(digits)).evaluate(plan).accuracy
    dense = Evaluator(mlp, calibration(digits)).evaluate(Plan()).accuracy
    shapes = charts.of(at)["sens_lines"]["layout"]["shapes"]
    assert sorted(s["y0"] for s in shapes) == sorted([dense * 100, base * 100])
    heat = charts.of(at)["sens_heatmap"]["data"][0]  # drop against the base plan
    np.testing.assert_allclose(np.array(heat["z"], dtype=float)[1],
                               [(base - a) * 100 for a in engine.unit("fc2").accuracy])


def test_global_plan_cannot_be_the_base(open_page):
    at = open_page("sensitivity", "digits-mlp", Plan(scope="global", amount=0.5))
    at.radio(key="sens_base").set_value("the current plan").run()
    assert not at.exception
    assert any("global plan" in w.value for w in at.warning)
    assert at.button(key="sens_run").disabled


@pytest.fixture
def slow_evaluations(monkeypatch) -> None:
    """Every evaluation 50 ms slower (the numbers unchanged): a scan as long as one on a
    bigger model, so that Cancel surely lands midway."""
    evaluate = Evaluator.evaluate

    def slow(self, plan):
        time.sleep(0.05)
        return evaluate(self, plan)

    monkeypatch.setattr(Evaluator, "evaluate", slow)


def test_cancel_keeps_a_flagged_partial_result(open_page, charts, cnn, digits,
                                               slow_evaluations):
    at = open_page("sensitivity", "digits-cnn")
    at.button(key="sens_run").click().run()  # the full 20-point grid: 100 evaluations
    job = job_of(at, "digits-cnn")
    assert job is not None and job.running
    deadline = time.monotonic() + 60
    while job.report.done < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    at.run()
    assert at.button(key="sens_run").disabled  # one scan at a time
    bar = at.get("progress")[0].proto
    assert f"of {len(cnn.layers) * 20}" in bar.text and f"unit 1 of {len(cnn.layers)}" in bar.text
    at.button(key="sensitivity::digits-cnn::cancel").click().run()
    assert job.wait(60)
    at.run()
    assert not at.exception, at.exception

    result = at.session_state["sens_shown"]["digits-cnn"].result
    assert result.cancelled and len(result.units) < len(cnn.layers)
    done = sum(len(u.fractions) for u in result.units)
    assert 2 <= done < len(cnn.layers) * len(DEFAULT_GRID)
    whole = sum(len(u.fractions) == len(DEFAULT_GRID) for u in result.units)
    assert any(f"Cancelled after {whole} of {len(cnn.layers)} units" in w.value
               for w in at.warning)
    engine = sensitivity(Evaluator(cnn, calibration(digits)), "weights", "magnitude",
                         DEFAULT_GRID[:len(result.units[0].fractions)])
    drawn = lines(at, charts)  # the partial curves are the engine's numbers
    assert list(drawn["features.0"]["y"]) == [a * 100 for a in engine.units[0].accuracy]
    assert "sensitivity" not in at.session_state  # not a finished scan

    at.button(key="sens_run").click().run()  # not cached: a new job starts
    job = job_of(at, "digits-cnn")
    assert job is not None and job.running
    job.cancel()
    job.wait(60)


def test_architecture_only_model_explains_instead_of_scanning(open_page):
    at = open_page("sensitivity", "resnet18-cifar")
    assert not at.exception, at.exception
    assert any(NO_DATA_NOTE in i.value for i in at.info)
    assert not at.button and not at.get("plotly_chart")


def test_job_reports_errors_as_one_line_and_cancels():
    def failing(report: jobs.Reporter):
        raise PlanError("no such layer")

    def crashing(report: jobs.Reporter):
        raise ZeroDivisionError("division by zero")

    def counting(report: jobs.Reporter):
        for i in range(1000):
            if report.cancelled():
                return i
            report(i, 1000, "counting", partial=i)
            time.sleep(0.01)
        return 1000

    job = jobs.Job("scan", failing).start()
    assert job.wait(10) and job.status == "failed" and job.error == "no such layer"
    job = jobs.Job("scan", crashing).start()
    assert job.wait(10) and job.error == "scan failed: ZeroDivisionError: division by zero"
    job = jobs.Job("count", counting).start()
    deadline = time.monotonic() + 10
    while job.report.done < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.status == "running" and 0 < job.report.fraction < 1
    job.cancel()
    assert job.wait(10) and job.status == "cancelled" and 3 <= job.result < 1000
    assert job.seconds is not None and job.seconds > 0


@pytest.mark.parametrize("total", [0, 4])
def test_report_fraction(total):
    assert jobs.Report(6, total).fraction == (1.0 if total else 0.0)


def test_blocks_scan_drops_each_block_alone_as_the_engine_does(open_page, charts, resnet,
                                                               digits):
    at = open_page("sensitivity", "digits-resnet")
    at.radio(key="sens_granularity").set_value("blocks").run()
    assert not at.exception, at.exception
    shown = {w.key for w in [*at.radio, *at.selectbox, *at.checkbox]}
    assert {"sens_step", "sens_base", "sens_exact"}.isdisjoint(shown)  # no grid, no base
    assert any(f"{len(resnet.blocks)} blocks, each dropped once" in c.value for c in at.caption)
    at.button(key="sens_run").click().run()
    job = job_of(at, "digits-resnet")
    assert job is not None and job.wait(120) and job.error is None, job and job.error
    at.run()
    assert not at.exception, at.exception

    engine = sensitivity(Evaluator(resnet, calibration(digits), bn_calibration=digits_train()),
                         "blocks", "influence", ())
    dense = Evaluator(resnet, calibration(digits), bn_calibration=digits_train()).evaluate(Plan())
    figures = charts.of(at)
    assert "sens_lines" not in figures and "sens_heatmap" not in figures
    bars = figures["sens_blocks"]["data"][0]
    assert list(bars["x"]) == [b.name for b in resnet.blocks] == [u.unit for u in engine.units]
    assert list(bars["y"]) == [u.accuracy[-1] * 100 for u in engine.units]
    assert [s["y0"] for s in figures["sens_blocks"]["layout"]["shapes"]] == [dense.accuracy * 100]
    table = at.dataframe[0].value
    assert list(table["block dropped"]) == [u.unit for u in sorted(
        engine.units, key=lambda u: dense.accuracy - u.accuracy[-1])]
    assert list(table["FLOPs per sample"]) == [u.flops_effective[-1] for u in sorted(
        engine.units, key=lambda u: dense.accuracy - u.accuracy[-1])]
    captions = " ".join(c.value for c in at.caption)
    assert "blocks, each dropped alone from the dense model" in captions
    assert "Blocks dropped" in captions  # the suggestion's place: the Prune page
    assert at.session_state["sensitivity"]["digits-resnet"] == engine
