"""Targets, fitted baselines and suggested plans, checked against an independent reference.

The reference recomputes what a plan achieves without the evaluator or its cost model:
nonzero parameters counted on the masked tensors, FLOPs from the weight densities (weights)
or from ``FlopCounterMode`` on the physically shrunk model (neurons), accuracy from a plain
forward pass of the original module with the masked parameters swapped in.

Suggestions are chosen on the calibration part of the digits validation split and reported
on the held-out part: targets are checked on the calibration images (accuracy) or on both
(costs), and each row's held-out metrics against a fresh evaluator and the reference there.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity
from explorer.decide.suggest import Estimate, greedy_path, suggest
from explorer.decide.targets import STEPS, Target, fit, global_plan, uniform_plan
from explorer.errors import DataError, PlanError
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.export.shrink import shrink
from explorer.masks import ScoreCache, masks_for
from explorer.plan import Plan

GRID = tuple(round(i / 10, 1) for i in range(10))  # coarse: 0, 0.1, ..., 0.9
FIXTURES = {"digits-mlp": "mlp", "digits-cnn": "cnn", "digits-resnet": "resnet"}


def reference(bundle, data, plan: Plan, scored_on=None) -> dict:
    """Speed-up, compression ratio and accuracy of ``plan`` on ``data``, recomputed
    independently (masks from scores on ``scored_on``, default ``data``)."""
    masks = masks_for(bundle, plan, ScoreCache(bundle, scored_on or data))
    params = {n: p.detach() for n, p in bundle.params().items()}
    pruned = {**params, **masks.apply(params)}
    total = sum(p.numel() for p in pruned.values())
    nonzero = sum(int(torch.count_nonzero(p)) for p in pruned.values())
    if plan.granularity == "neurons":
        small = shrink(bundle, masks)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            small(data.x[:1])
        flops = counter.get_total_flops()
    else:
        flops = bundle.flops - sum(la.flops for la in bundle.layers) + sum(
            la.flops * int(torch.count_nonzero(pruned[la.weight])) / pruned[la.weight].numel()
            for la in bundle.layers)
    correct = int((full_forward_logits(bundle, masks, data.x).argmax(1) == data.y).sum())
    return {"speedup": bundle.flops / flops, "compression": total / nonzero,
            "correct": correct, "accuracy": correct / len(data)}


def dense_correct(bundle, data) -> int:
    with torch.no_grad():
        return int((bundle.model(data.x).argmax(1) == data.y).sum())


def meets(bundle, data, plan: Plan, target: Target) -> bool:
    got = reference(bundle, data, plan)
    if target.kind == "flops":
        return got["speedup"] >= target.value
    if target.kind == "size":
        return got["compression"] >= target.value
    return (dense_correct(bundle, data) - got["correct"]) / len(data) <= target.value + 1e-12


@pytest.fixture(scope="module")
def scans(request, digits):
    """(split evaluator, coarse sensitivity scan on its calibration part) per (model,
    granularity), computed once."""
    cache = {}

    def get(model: str, granularity: str):
        if (model, granularity) not in cache:
            bundle = request.getfixturevalue(FIXTURES[model])
            judge = SplitEvaluator(bundle, digits)
            criterion = "magnitude" if granularity == "weights" else "l1"
            cache[model, granularity] = judge, sensitivity(
                judge.calibration, granularity, criterion, GRID)
        return cache[model, granularity]

    return get


# ---- targets -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind", "value"), [
    ("flops=4", "flops", 4.0), ("size= 8", "size", 8.0), ("drop=0.01", "accuracy_drop", 0.01),
    ("drop=1%", "accuracy_drop", 0.01), ("accuracy_drop=0", "accuracy_drop", 0.0),
])
def test_target_parse(text, kind, value):
    target = Target.parse(text)
    assert (target.kind, target.value) == (kind, pytest.approx(value))


@pytest.mark.parametrize(("args", "phrase"), [
    (("flops", 1.0), "greater than 1"), (("size", 0.5), "greater than 1"),
    (("accuracy_drop", 1.0), r"\[0, 1\)"), (("accuracy_drop", -0.1), r"\[0, 1\)"),
    (("speed", 2.0), "kind must be one of"), (("flops", float("nan")), "finite"),
    (("size", True), "finite number"),
])
def test_bad_targets_raise_plan_error(args, phrase):
    with pytest.raises(PlanError, match=phrase):
        Target(*args)


@pytest.mark.parametrize("text", ["flops", "flops=four", "=3"])
def test_bad_target_text_raises_plan_error(text):
    with pytest.raises(PlanError):
        Target.parse(text)


# ---- fit: the smallest (cost) or largest (accuracy) fraction -------------------------------


@pytest.mark.parametrize(("model", "granularity", "scope", "text"), [
    ("digits-cnn", "weights", "layer", "flops=4"),
    ("digits-cnn", "weights", "global", "size=8"),
    ("digits-mlp", "neurons", "layer", "size=3"),
    ("digits-mlp", "neurons", "global", "flops=2.5"),
])
def test_cost_fit_is_the_smallest_fraction_that_meets(request, digits, model, granularity,
                                                      scope, text):
    bundle = request.getfixturevalue(FIXTURES[model])
    criterion = "magnitude" if granularity == "weights" else "l1"

    def family(f):
        if scope == "global":
            return global_plan(granularity, criterion, f)
        return uniform_plan(bundle, granularity, criterion, f)

    target = Target.parse(text)
    fraction, plan, metrics = fit(Evaluator(bundle, digits), family, target)
    assert plan == family(fraction) and round(fraction * STEPS) == fraction * STEPS
    assert meets(bundle, digits, plan, target)
    assert not meets(bundle, digits, family(fraction - 1 / STEPS), target)
    assert metrics.accuracy == reference(bundle, digits, plan)["accuracy"]


def test_accuracy_fit_is_the_largest_fraction_before_a_failure(mlp, digits):
    target = Target("accuracy_drop", 0.01)

    def family(f):
        return uniform_plan(mlp, "weights", "magnitude", f)

    fraction, plan, _ = fit(Evaluator(mlp, digits), family, target)
    assert 0 < fraction < 0.999
    assert meets(mlp, digits, plan, target)
    assert not meets(mlp, digits, family(fraction + 1 / STEPS), target)
    # no coarser fraction below it failed: it is before the first failure
    assert all(meets(mlp, digits, family(f / 20), target) for f in range(1, 20)
               if f / 20 < fraction)


def test_unreachable_cost_targets_say_how_far_they_get(mlp, cnn, digits):
    with pytest.raises(PlanError, match="out of reach") as info:
        fit(Evaluator(cnn, digits), lambda f: uniform_plan(cnn, "weights", "magnitude", f),
            Target("size", 1000))
    best = float(re.search(r"at most ([\d.]+)x", str(info.value)).group(1))
    # biases are never removed: the ratio can never pass parameters / biases
    biases = sum(cnn.params()[la.bias].numel() for la in cnn.layers)
    assert 100 < best <= cnn.param_count / biases
    with pytest.raises(PlanError, match="instead of neurons"):
        fit(Evaluator(mlp, digits), lambda f: global_plan("neurons", "l1", f),
            Target("flops", 10_000))


def test_accuracy_fit_needs_data(cnn):
    with pytest.raises(DataError, match="validation data"):
        fit(Evaluator(cnn, None), lambda f: global_plan("weights", "magnitude", f),
            Target("accuracy_drop", 0.01))


# ---- suggest -------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "granularity", "text"), [
    ("digits-cnn", "weights", "size=8"),
    ("digits-cnn", "weights", "drop=0.01"),
    ("digits-mlp", "weights", "flops=3"),
    ("digits-mlp", "neurons", "size=3"),
    ("digits-mlp", "weights", "drop=0.02"),
    ("digits-mlp", "neurons", "drop=0.03"),
    ("digits-cnn", "neurons", "flops=2"),
    ("digits-resnet", "neurons", "flops=2"),
    ("digits-resnet", "neurons", "drop=0.02"),
])
def test_suggestion_and_baselines_meet_the_target(request, scans, digits, model,
                                                  granularity, text):
    bundle = request.getfixturevalue(FIXTURES[model])
    judge, scan = scans(model, granularity)
    target = Target.parse(text)
    result = suggest(scan, judge, target)
    check_suggestion(bundle, judge, scan, result)


def check_suggestion(bundle, judge, scan, result) -> None:
    """Every row meets the target on the calibration images it was chosen on (by the
    reference and a fresh evaluator; a cost target on the held-out images too), and its
    held-out metrics are a fresh evaluator's and the reference's there; the plan is a valid
    per-layer plan with coupled layers equal, refined to no more than it needs."""
    target, granularity = result.target, scan.granularity
    calibration, held_out = judge.split.calibration, judge.split.held_out
    assert result.split is judge.split
    assert [row.name for row in result.rows] == ["suggested", "uniform", "global magnitude"]
    dense_held_out = Evaluator(bundle, held_out).evaluate(Plan())
    assert result.dense == (Evaluator(bundle, calibration).evaluate(Plan()), dense_held_out)
    for row in result.rows:
        assert row.error is None, row.error
        assert meets(bundle, calibration, row.plan, target), (row.name, row.plan.to_json())
        fresh = Evaluator(bundle, calibration).evaluate(row.plan)
        assert row.metrics.calibration == fresh and target.meets(fresh, result.dense.calibration)
        reported = Evaluator(bundle, held_out, ScoreCache(bundle, calibration)).evaluate(row.plan)
        assert row.metrics.held_out == reported and reported.samples == len(held_out)
        assert reported.accuracy == reference(bundle, held_out, row.plan, calibration)["accuracy"]
        if not target.needs_accuracy:
            assert meets(bundle, held_out, row.plan, target)
    plan = result.plan
    assert (plan.granularity, plan.criterion, plan.scope) == (granularity, scan.criterion, "layer")
    plan.check(bundle)
    for group in bundle.group_names if granularity == "neurons" else []:
        assert len({plan.fraction(la.name) for la in bundle.group(group)}) == 1, group
    if granularity == "weights" and not target.needs_accuracy:
        # the last move is refined: no more pruning than the target needs
        assert target.achieved(result.metrics.held_out) < target.value * 1.01
    uniform = result.rows[1]
    assert set(uniform.plan.sparsity.values()) == {uniform.fraction}
    assert result.rows[2].plan.scope == "global"


def test_suggestion_meets_and_beats_uniform_at_4x_fewer_flops(cnn, scans):
    judge, scan = scans("digits-cnn", "weights")
    result = suggest(scan, judge, Target("flops", 4))
    check_suggestion(cnn, judge, scan, result)
    suggested, uniform, _ = result.rows
    assert suggested.metrics.calibration.accuracy > uniform.metrics.calibration.accuracy
    assert suggested.metrics.held_out.accuracy > uniform.metrics.held_out.accuracy


def test_greedy_path_takes_the_cheapest_damage_per_saving():
    a = Estimate(("a",), (0.0, 0.5, 0.9), damage=(0.0, 0.5, 0.6), saving=(0.0, 1.0, 2.0))
    b = Estimate(("b",), (0.0, 0.5, 0.9), damage=(0.0, 0.1, 1.0), saving=(0.0, 1.0, 2.0))
    # b's first step costs 0.1 per unit saved; a jumps its bump (0.3 per unit to index 2,
    # cheaper than 0.5 to index 1); b's last step (0.9) comes last
    assert greedy_path([a, b]) == [(1, 1), (0, 2), (1, 2)]
    flat = Estimate(("c",), (0.0, 0.5), damage=(0.0, 0.0), saving=(0.0, 0.0))
    assert greedy_path([flat]) == []  # a move that saves nothing is never taken


def test_suggestion_out_of_the_grids_reach(mlp, digits):
    judge = SplitEvaluator(mlp, digits)
    scan = sensitivity(judge.calibration, "weights", "magnitude", (0.0, 0.25, 0.5))
    with pytest.raises(PlanError, match="out of reach of the sensitivity grid"):
        suggest(scan, judge, Target("size", 4))


@pytest.mark.parametrize(("change", "error", "phrase"), [
    ({"cancelled": True}, PlanError, "cancelled"),
    ({"model": "digits-mlp"}, PlanError, "not of 'digits-cnn'"),
    ({"base": Plan(sparsity={"features.0": 0.5})}, PlanError, "dense model"),
    ({"units": ()}, PlanError, "no weights"),
    ({"samples": 360}, PlanError, "run the scan on the calibration part"),
])
def test_unusable_scans_raise(scans, change, error, phrase):
    judge, scan = scans("digits-cnn", "weights")
    with pytest.raises(error, match=phrase):
        suggest(replace(scan, **change), judge, Target("flops", 2))


def test_scan_without_data_raises_data_error(cnn):
    judge = SplitEvaluator(cnn, None)
    scan = sensitivity(judge.calibration, "weights", "magnitude", (0.0, 0.5))
    with pytest.raises(DataError, match="validation data"):
        suggest(scan, judge, Target("flops", 2))


def test_to_dict_is_json(scans):
    import json

    judge, scan = scans("digits-mlp", "weights")
    result = suggest(scan, judge, Target("flops", 2))
    data = json.loads(json.dumps(result.to_dict()))
    assert data["target"] == {"kind": "flops", "value": 2.0}
    assert Plan.from_dict(data["rows"][0]["plan"]) == result.plan
    assert [r["name"] for r in data["rows"]] == ["suggested", "uniform", "global magnitude"]
    for part in ("calibration", "held_out"):
        block, metrics = data[part], getattr(result.metrics, part)
        assert block["indices"] == getattr(judge.split, part).indices.tolist()
        assert (block["samples"], block["accuracy"]) == (metrics.samples, metrics.accuracy)
        assert block["accuracy_ci"] == list(metrics.accuracy_ci)
        assert data["rows"][0][part]["accuracy"] == metrics.accuracy
