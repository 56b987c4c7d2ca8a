"""Criteria curves against independent evaluations: a fresh evaluator for every point."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from explorer import criteria
from explorer import plan as plan_module
from explorer.decide import compare_criteria as compare
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.plan import Plan

GRID = [0.0, 0.5, 0.8]


def registered(granularity: str) -> list[str]:
    return [name for g, name in criteria.REGISTRY if g == granularity]


def fresh(bundle, digits, plan: Plan):
    """The reference: a new evaluator per plan, with no cached scores, states or metrics.

    A zero memory budget keeps it from caching activations: one plain full forward pass.
    """
    return Evaluator(bundle, digits, memory_budget=0).evaluate(plan)


def assert_point(point: compare.Point, metrics, fraction: float) -> None:
    assert point.fraction == fraction
    assert point.accuracy == metrics.accuracy
    assert point.loss == metrics.loss
    assert point.flops_effective == metrics.flops["effective"]


@pytest.mark.parametrize(("granularity", "layer"), [("weights", "features.2"),
                                                    ("neurons", "classifier.1")])
def test_layer_curves_equal_fresh_evaluations(cnn, digits, granularity, layer):
    curves = compare.layer_curves(Evaluator(cnn, digits), granularity, layer, GRID)
    assert list(curves) == registered(granularity)
    assert curves.errors == {}
    for name, points in curves.items():
        assert len(points) == len(GRID)
        for point, fraction in zip(points, GRID, strict=True):
            plan = Plan(granularity=granularity, criterion=name, sparsity={layer: fraction})
            assert_point(point, fresh(cnn, digits, plan), fraction)


@pytest.mark.parametrize("granularity", ["weights", "neurons"])
def test_global_curves_equal_fresh_evaluations(cnn, digits, granularity):
    amounts = [0.5, 0.8]  # 0 is the dense model: see the next test
    curves = compare.global_curves(Evaluator(cnn, digits), granularity, amounts)
    assert list(curves) == registered(granularity)
    for name, points in curves.items():
        for point, amount in zip(points, amounts, strict=True):
            plan = Plan(granularity=granularity, criterion=name, scope="global", amount=amount)
            assert_point(point, fresh(cnn, digits, plan), amount)


def test_fraction_zero_is_dense_for_every_criterion_and_random_is_included(cnn, digits):
    dense = fresh(cnn, digits, Plan())
    evaluator = Evaluator(cnn, digits)
    for granularity in ("weights", "neurons"):
        for curves in (compare.layer_curves(evaluator, granularity, "features.0", [0.0]),
                       compare.global_curves(evaluator, granularity, [0.0])):
            assert "random" in curves
            assert set(curves) | set(curves.errors) == set(registered(granularity))
            for points in curves.values():
                assert points[0].accuracy == dense.accuracy
                assert points[0].loss == dense.loss
                assert points[0].flops_effective == dense.flops["dense"]


def test_neuron_sweep_moves_the_coupled_group_together(resnet, digits):
    # layer1.conv2 adds into the residual stream that stem.0 starts: one group of channels
    members = compare.swept_layers(Evaluator(resnet, digits), "neurons", "layer1.conv2")
    assert sorted(members) == ["layer1.conv2", "stem.0"]
    grid = [0.0, 0.5]
    curves = compare.layer_curves(Evaluator(resnet, digits), "neurons", "layer1.conv2", grid)
    for name, points in curves.items():
        for point, fraction in zip(points, grid, strict=True):
            plan = Plan(granularity="neurons", criterion=name,
                        sparsity={"stem.0": fraction, "layer1.conv2": fraction})
            metrics = fresh(resnet, digits, plan)
            assert_point(point, metrics, fraction)
            kept = {la.name: la.neurons_kept for la in metrics.layers}
            assert kept["stem.0"] == kept["layer1.conv2"] == 16 - round(fraction * 16)


def test_other_layers_follow_the_base_plan(cnn, digits):
    base = Plan(granularity="weights", criterion="magnitude", sparsity={"classifier.1": 0.7})
    curves = compare.layer_curves(Evaluator(cnn, digits), "weights", "features.2", [0.5],
                                  base=base)
    for name, points in curves.items():
        plan = Plan(granularity="weights", criterion=name,
                    sparsity={"classifier.1": 0.7, "features.2": 0.5})
        assert_point(points[0], fresh(cnn, digits, plan), 0.5)


def test_sweeps_one_criterion_in_order_and_resumes_after_the_swept_layer(cnn, digits):
    evaluator = Evaluator(cnn, digits)
    seen, starts = [], []
    evaluate = evaluator.evaluate

    def spy(plan: Plan):
        metrics = evaluate(plan)
        seen.append((plan.criterion, plan.fraction("classifier.3")))
        starts.append(evaluator.last_start)
        return metrics

    evaluator.evaluate = spy
    compare.layer_curves(evaluator, "weights", "classifier.3", GRID)
    names = registered("weights")
    assert seen == [(name, f) for name in names for f in GRID]
    assert all(start > 0 for start in starts[1:])  # the dense prefix is reused


@dataclass(frozen=True)
class NeedsData:
    name: str = "needs-data"
    granularity: str = "neurons"

    def score(self, layer, ctx):
        raise PlanError("Criterion 'needs-data' needs validation data; load a data set.")


def test_a_failing_criterion_is_reported_not_raised(cnn, digits, monkeypatch):
    monkeypatch.setitem(criteria.REGISTRY, ("neurons", "needs-data"), NeedsData())
    monkeypatch.setattr(plan_module, "CRITERIA", {
        **plan_module.CRITERIA, "neurons": (*plan_module.CRITERIA["neurons"], "needs-data")})
    calls = []
    curves = compare.layer_curves(Evaluator(cnn, digits), "neurons", "features.2", GRID,
                                  progress=lambda *args: calls.append(args))
    assert "needs-data" not in curves
    assert "needs validation data" in curves.errors["needs-data"]
    assert set(curves) == set(registered("neurons")) - {"needs-data"}
    total = len(registered("neurons")) * len(GRID)
    assert calls[-1] == (total, total, "needs-data")  # done, total, the criterion swept
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)


def test_accuracy_table_reads_the_curves(cnn, digits):
    curves = compare.layer_curves(Evaluator(cnn, digits), "weights", "features.0", GRID)
    table = compare.accuracy_table(curves)
    for name, points in curves.items():
        assert table[name] == {0.5: points[1].accuracy, 0.8: points[2].accuracy}
    assert compare.accuracy_table(curves, [0.3])["random"] == {0.3: None}


def test_default_grid():
    assert compare.default_fractions("neurons") == [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7,
                                                    0.8, 0.9]
    assert compare.default_fractions("weights")[-2:] == [0.9, 0.95]


@pytest.mark.parametrize(("granularity", "layer", "fractions", "message"), [
    ("neurons", "classifier.5", GRID, "cannot be removed"),
    ("weights", "features.9", GRID, "no prunable layer"),
    ("weights", "features.0", [0.5, 1.0], "in \\[0, 1\\)"),
    ("channels", "features.0", GRID, "granularity must be"),
])
def test_bad_requests_say_what_was_expected(cnn, digits, granularity, layer, fractions, message):
    with pytest.raises(PlanError, match=message):
        compare.layer_curves(Evaluator(cnn, digits), granularity, layer, fractions)
