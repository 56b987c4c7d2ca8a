"""Compare criteria at real size: points screened on the stratified subset with their
interval, the table's fractions (where criteria are ranked) always on every image, and each
point saying which it is (issue 11, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from explorer.data import stratified_subset
from explorer.decide import compare_criteria as compare
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache
from explorer.metrics import wilson_interval
from explorer.plan import Plan

GRID = (0.0, 0.3, 0.5, 0.8, 0.9)


def _check(curves, plan_at, scores, model, digits) -> None:
    on_subset = Evaluator(model, stratified_subset(digits, 60), scores)  # same scores
    on_all = Evaluator(model, digits, scores, estimate_samples=0)
    assert set(curves) and not curves.errors
    for name, points in curves.items():
        for p in points:
            decides = p.fraction in compare.TABLE_FRACTIONS
            reference = (on_all if decides else on_subset).evaluate(plan_at(name, p.fraction))
            assert p.exact is decides
            assert p.samples == (len(digits) if decides else 60)
            assert p.accuracy == reference.accuracy
            assert p.loss == pytest.approx(reference.loss, abs=1e-6)
            assert p.accuracy_ci == reference.accuracy_ci
            assert p.accuracy_ci == wilson_interval(round(p.accuracy * p.samples), p.samples)


def test_a_screened_layer_sweep_is_the_subsets_numbers_off_the_table(cnn, digits):
    scores = ScoreCache(cnn, digits)
    evaluator = Evaluator(cnn, digits, scores, estimate_samples=60, batch_size=30)
    layer = cnn.layer_names[1]
    curves = compare.layer_curves(evaluator, "weights", layer, GRID, screen=True)

    def plan_at(name, fraction):
        return Plan(granularity="weights", criterion=name).with_sparsity(layer, fraction)

    _check(curves, plan_at, scores, cnn, digits)
    table = compare.accuracy_table(curves)
    exact = compare.layer_curves(Evaluator(cnn, digits, scores), "weights", layer, GRID)
    assert table == compare.accuracy_table(exact)  # the ranking rests on every image
    assert all(p.exact and p.samples == len(digits) for ps in exact.values() for p in ps)


def test_a_screened_global_sweep_of_neurons(mlp, digits):
    scores = ScoreCache(mlp, digits)
    evaluator = Evaluator(mlp, digits, scores, estimate_samples=60, batch_size=30)
    curves = compare.global_curves(evaluator, "neurons", GRID, screen=True)

    def plan_at(name, amount):
        return Plan(granularity="neurons", criterion=name, scope="global", amount=amount)

    _check(curves, plan_at, scores, mlp, digits)
    point = curves["random"][1]
    assert point.to_dict()["exact"] is False
    assert point.to_dict()["accuracy_ci"] == list(point.accuracy_ci)


def test_without_an_estimate_phase_screening_is_exact(cnn, digits):
    evaluator = Evaluator(cnn, digits)  # 360 small images: the whole set is the estimate
    layer = cnn.layer_names[0]
    assert compare.layer_curves(evaluator, "weights", layer, GRID, screen=True) == \
        compare.layer_curves(evaluator, "weights", layer, GRID)


def test_cli_compare_reports_each_criterion_and_the_table():
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "compare", "--model",
                          "digits-mlp", "--granularity", "neurons", "--layer", "fc1",
                          "--grid", "0,0.5,0.8", "--json"],
                         capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(out.stdout)
    assert report["sweep"] == "layer" and report["layers"][0] == "fc1"
    assert "random" in report["criteria"] and not report["errors"]
    for name, points in report["criteria"].items():
        assert [p["fraction"] for p in points] == [0.0, 0.5, 0.8]
        assert all(p["exact"] and p["samples"] == report["samples"] for p in points)
        assert report["table"][name] == {"0.5": points[1]["accuracy"],
                                         "0.8": points[2]["accuracy"]}
    bad = subprocess.run([sys.executable, "-m", "explorer.cli", "compare", "--model",
                          "digits-mlp", "--layer", "nope"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope" in bad.stderr


def test_screened_baselines_are_each_parts_subset_numbers(cnn, digits):
    """The trade-off baselines at real size: the same fitted plans as the exact curves, each
    measured on the stratified subsets of both parts, and drawn with their intervals."""
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.tradeoff import baseline_curves
    from explorer.ui.charts.tradeoffs import workspace

    judge = SplitEvaluator(cnn, digits)
    exact = baseline_curves(judge, "weights", ratios=(2, 8))
    assert not judge.refines  # digits is small: no estimate phase, screening is exact
    assert baseline_curves(judge, "weights", ratios=(2, 8), screen=True) == exact
    for part in ("calibration", "held_out"):
        evaluator = getattr(judge, part)
        setattr(judge, part, Evaluator(cnn, evaluator.data, judge.scores, estimate_samples=40))
    assert judge.refines
    screened = baseline_curves(judge, "weights", ratios=(2, 8), screen=True)
    assert screened.unreachable == exact.unreachable
    for name, curve in screened.items():
        assert [p.plan for p in curve] == [p.plan for p in exact[name]]  # fitted on cost
        for point in curve:
            for part in ("calibration", "held_out"):
                data = getattr(judge, part).data
                reference = Evaluator(cnn, stratified_subset(data, 40), judge.scores)
                got, want = getattr(point.metrics, part), reference.evaluate(point.plan)
                assert got.samples == 40 and got.correct == want.correct
                assert got.accuracy_ci == want.accuracy_ci
    figure = workspace([], {}, screened, judge.dense())
    bars = [t.error_y for t in figure.data if t.name in screened]
    assert bars and all(b.array is not None and max(b.array) > 0 for b in bars)
    plain = workspace([], {}, exact, judge.dense())  # exact points carry no bars
    assert all(t.error_y.array is None for t in plain.data if t.name in exact)
