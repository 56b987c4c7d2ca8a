"""Pareto fronts against a brute-force check; baseline curves against counted nonzeros.

Fronts over evaluated plans are chosen on the calibration part of the validation data; the
baselines are measured on both parts (checked against fresh evaluators).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.decide.held_out import SplitEvaluator
from explorer.decide.tradeoff import BLALOCK_RATIOS, baseline_curves, history_front, pareto_front
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache, masks_for
from explorer.plan import Plan


def brute_front(points) -> set[int]:
    """O(n^2): i is on the front unless some j is no worse on both axes and better on one."""
    def dominates(j, i):
        (cj, aj), (ci, ai) = points[j], points[i]
        return cj <= ci and aj >= ai and (cj < ci or aj > ai)

    return {i for i, (_, acc) in enumerate(points) if acc is not None
            and not any(dominates(j, i) for j in range(len(points))
                        if j != i and points[j][1] is not None)}


# small value sets make ties and duplicates common
values = st.integers(0, 6).map(float)
accuracies = st.one_of(st.none(), st.integers(0, 6).map(lambda a: a / 6))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(values, accuracies), max_size=25))
def test_pareto_front_equals_brute_force(points):
    front = pareto_front(points)
    assert set(front) == brute_front(points)
    assert len(front) == len(set(front))
    costs = [points[i][0] for i in front]
    assert costs == sorted(costs)


def test_pareto_front_keeps_duplicates_and_drops_costlier_ties():
    points = [(1.0, 0.9), (1.0, 0.9), (2.0, 0.9), (0.5, 0.5), (3.0, 0.95), (1.0, 0.8)]
    assert pareto_front(points) == [3, 0, 1, 4]


def test_history_front_on_evaluated_plans(mlp, digits):
    judge = SplitEvaluator(mlp, digits)
    plans = [Plan(), Plan(scope="global", amount=0.5), Plan(scope="global", amount=0.9),
             Plan(sparsity={"fc1": 0.9, "fc2": 0.9}), Plan(criterion="random",
                                                           sparsity={"fc1": 0.5}),
             Plan(granularity="neurons", criterion="l1", sparsity={"fc1": 0.5})]
    history = [(p, judge.evaluate(p)) for p in plans]
    calibration = Evaluator(mlp, judge.split.calibration)  # chosen on these images only
    flops = [(m.flops["effective"], m.accuracy) for m in map(calibration.evaluate, plans)]
    size = [(m.nonzero_params, m.accuracy) for m in map(calibration.evaluate, plans)]
    assert set(history_front(history, "flops")) == brute_front(flops)
    assert set(history_front(history, "size")) == brute_front(size)
    assert len(history_front(history, "size")) >= 2  # not a trivial one-point front
    with pytest.raises(PlanError, match="axis"):
        history_front(history, "bytes")


def counted_ratio(bundle, data, plan: Plan) -> float:
    """Parameters / nonzero parameters, counted on the masked tensors."""
    masks = masks_for(bundle, plan, ScoreCache(bundle, data))
    params = {n: p.detach() for n, p in bundle.params().items()}
    pruned = {**params, **masks.apply(params)}
    nonzero = sum(int(torch.count_nonzero(p)) for p in pruned.values())
    return sum(p.numel() for p in pruned.values()) / nonzero


@pytest.mark.parametrize(("model", "granularity", "ratios"), [
    ("mlp", "weights", (*BLALOCK_RATIOS, 500)),
    ("cnn", "neurons", (2, 32)),
])
def test_baseline_curves_reach_each_ratio(request, digits, model, granularity, ratios):
    bundle = request.getfixturevalue(model)
    calls = []
    judge = SplitEvaluator(bundle, digits)
    curves = baseline_curves(judge, granularity, ratios,
                             progress=lambda *args: calls.append(args))
    held_out = Evaluator(bundle, judge.split.held_out)
    assert list(curves) == ["uniform", "global magnitude", "random"]
    fits = [(name, ratio) for name in curves for ratio in ratios]  # in the order fitted
    assert calls == [(i, len(fits), name) for i, (name, _) in enumerate(fits, start=1)]
    for name, points in curves.items():
        reached = [p.ratio for p in points]
        missed = sorted(curves.unreachable.get(name, {}))
        assert sorted(reached + missed) == sorted(float(r) for r in ratios)
        for ratio, plan, (calibration, reported) in points:
            assert counted_ratio(bundle, digits, plan) >= ratio, (name, ratio)
            assert calibration.compression_ratio >= ratio and calibration.accuracy is not None
            assert reported == held_out.evaluate(plan)  # what the page reports beside it
            assert plan.granularity == granularity
            if name == "global magnitude":
                assert plan.scope == "global"
            else:
                assert len(set(plan.sparsity.values())) == 1
                assert plan.criterion == ("random" if name == "random" else
                                          "magnitude" if granularity == "weights" else "l1")
    if model == "mlp":  # biases stay: 500x is past what removing every weight gives
        assert all(500.0 in curves.unreachable[name] for name in curves)
        assert "out of reach" in curves.unreachable["uniform"][500.0]


@pytest.mark.parametrize(("args", "phrase"), [
    (("weights", (2, 1)), "greater than 1"),
    (("channels", (2,)), "granularity"),
])
def test_bad_arguments_raise_plan_error(mlp, digits, args, phrase):
    with pytest.raises(PlanError, match=phrase):
        baseline_curves(SplitEvaluator(mlp, digits), *args)
