"""The app's memory setting: what a session's evaluators keep for resuming slider moves."""

from __future__ import annotations

from pagetest import metric, open_url

from explorer.evaluator import Evaluator, default_memory_budget
from explorer.plan import Plan
from explorer.ui.format import percent


def _picker(at):
    return next(s for s in at.sidebar.selectbox if s.label == "Memory for fast slider moves")


def test_none_rebuilds_the_evaluators_keeping_nothing_and_changes_no_number(cnn, digits):
    at = open_url("prune", model="digits-cnn", s="features.2:50")
    assert _picker(at).value == "auto"
    before = at.session_state["evaluators"]["digits-cnn"]
    assert before.memory_budget == default_memory_budget() and before.kept_batches > 0
    _picker(at).set_value("none").run()
    assert not at.exception
    after = at.session_state["evaluators"]["digits-cnn"]
    assert after is not before and after.memory_budget == 0 and after.kept_batches == 0
    expected = Evaluator(cnn, digits).evaluate(Plan(sparsity={"features.2": 0.5}))
    assert metric(at, "Accuracy") == percent(expected.accuracy)
    assert _picker(at).value == "none"  # the choice stays on the next run
    at.run()
    assert _picker(at).value == "none"
    assert at.session_state["evaluators"]["digits-cnn"] is after


def test_a_budget_reaches_the_split_evaluators_too():
    at = open_url("sensitivity", model="digits-mlp")
    _picker(at).set_value("64 MiB").run()
    assert not at.exception
    judge = at.session_state["split_evaluators"]["digits-mlp"][2]
    # the split's two evaluators share the budget: half each (explorer.decide.held_out)
    assert judge.calibration.memory_budget == judge.held_out.memory_budget == 32 * 2**20
