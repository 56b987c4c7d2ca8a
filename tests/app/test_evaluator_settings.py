"""The app's evaluator settings: what a session's evaluators keep for resuming slider moves
(a sidebar choice), and how many torch threads a script run uses."""

from __future__ import annotations

from dataclasses import replace

from pagetest import metric, open_url

from explorer.evaluator import Evaluator, default_memory_budget
from explorer.limits import SMALL_EVALUATION_FLOPS
from explorer.plan import Plan
from explorer.ui.format import percent
from explorer.ui.state import TORCH_THREADS, run_threads


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


def test_a_small_evaluation_runs_on_one_thread_a_large_one_on_the_default(cnn, digits):
    assert cnn.flops * len(digits) < SMALL_EVALUATION_FLOPS
    assert run_threads(cnn, digits) == 1
    assert run_threads(replace(cnn, flops=1_110_845_440), digits) == TORCH_THREADS
    assert run_threads(cnn, None) == 1  # costs only
