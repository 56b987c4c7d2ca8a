"""The Sensitivity page's "Suggest a plan" section in AppTest: the three plans meet the
target as a fresh evaluator measures them, and Apply puts a plan into the sliders.

A suggestion is chosen on the calibration part of the digits validation split (an accuracy
target holds there) and reported on the held-out part: the table shows both.
"""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from explorer.data import split_for_decisions
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache
from explorer.plan import Plan
from explorer.ui.format import with_interval

MLP = "digits-mlp"


def scanned(open_page) -> AppTest:
    """The Sensitivity page on digits-mlp after a finished 10%-step weights scan."""
    at = open_page("sensitivity", MLP)
    at.radio(key="sens_step").set_value("10%").run()
    at.button(key="sens_run").click().run()
    job = at.session_state["jobs"][f"sensitivity::{MLP}"]
    assert job.wait(120) and job.error is None, job.error
    at.run()
    assert not at.exception, at.exception
    return at


def suggested(at: AppTest, kind: str, value: float) -> AppTest:
    at.selectbox(key="sg_kind").set_value(kind).run()
    at.number_input(key=f"sg_{kind}").set_value(value)
    at.button(key="sg_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def applied(at: AppTest, row: str) -> Plan:
    at.button(key=f"sg_apply_{row}").click().run()
    return at.session_state["plan"]


@pytest.mark.parametrize("row", ["suggested", "uniform", "global magnitude"])
def test_flops_target_is_met_by_every_row(open_page, mlp, digits, row):
    at = suggested(scanned(open_page), "flops", 4.0)
    table = at.dataframe[0].value
    assert list(table["plan"]) == ["suggested", "uniform", "global magnitude"]
    plan = applied(at, row)
    assert plan != Plan()
    metrics = Evaluator(mlp, digits).evaluate(plan)
    assert metrics.flops["effective"] * 4 <= metrics.flops["dense"]


def test_accuracy_drop_target_and_the_table(open_page, mlp, digits):
    at = suggested(scanned(open_page), "accuracy_drop", 1.0)
    table = at.dataframe[0].value
    drops = [float(d.split()[0]) for d in table["calibration drop"] if d != "—"]
    assert len(drops) == 3 and all(d <= 1.0 for d in drops)
    captions = " ".join(c.value for c in at.caption)
    assert "Chosen on 182 calibration images of the 360 digits-val images" in captions
    split = split_for_decisions(digits)
    evaluator = Evaluator(mlp, split.calibration)
    plan = applied(at, "suggested")
    dense, pruned = evaluator.evaluate(Plan()), evaluator.evaluate(plan)
    assert dense.accuracy - pruned.accuracy <= 0.01 + 1e-12  # met where it was chosen
    assert pruned.compression_ratio > 1.5  # it did prune, not just stay dense
    # The row shown equals the evaluated plan, on both parts.
    assert table["calibration accuracy"][0] == f"{pruned.accuracy * 100:.2f}%"
    reported = Evaluator(mlp, split.held_out, ScoreCache(mlp, split.calibration)).evaluate(plan)
    assert table["held-out accuracy [95%]"][0] == with_interval(reported)
    held_dense = Evaluator(mlp, split.held_out).evaluate(Plan())
    assert table["held-out drop"][0] == \
        f"{(held_dense.accuracy - reported.accuracy) * 100:.2f} pts"


def test_unreachable_target_is_a_message(open_page):
    at = scanned(open_page)
    at.selectbox(key="sg_kind").set_value("flops").run()
    at.number_input(key="sg_flops").set_value(1000.0)
    at.button(key="sg_run").click().run()
    assert not at.exception
    assert "No suggestion" in at.error[0].value
