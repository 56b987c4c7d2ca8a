"""The cached, incremental evaluator against a plain full forward pass, bit for bit."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from explorer.evaluator import Evaluator, full_forward_logits
from explorer.masks import ScoreCache
from explorer.metrics import wilson_interval
from explorer.plan import Plan


def _random_walk(bundle, granularity: str, criterion: str, steps: int, seed: int):
    """A user dragging sliders: one layer's fraction changes per step, sometimes back."""
    rng = random.Random(seed)
    if granularity == "weights":
        units = [[la.name] for la in bundle.layers]
    else:  # coupled layers move together, as the app's linked sliders do
        units = [[la.name for la in bundle.group(g)] for g in bundle.group_names]
    plan = Plan(granularity=granularity, criterion=criterion)
    for _ in range(steps):
        fraction = rng.choice([0.0, 0.2, 0.5, 0.7, 0.9])
        for name in rng.choice(units):
            plan = plan.with_sparsity(name, fraction)
        yield plan


@pytest.mark.parametrize(
    ("granularity", "criterion"), [("weights", "magnitude"), ("neurons", "l1"),
                                   ("neurons", "random"), ("weights", "random")]
)
def test_incremental_equals_full_forward(any_demo, digits, granularity, criterion):
    evaluator = Evaluator(any_demo, digits)
    resumed = 0
    for plan in _random_walk(any_demo, granularity, criterion, steps=12, seed=1):
        masks = evaluator.masks(plan)
        fast = evaluator.logits(masks)
        resumed += evaluator.last_start > 0
        reference = full_forward_logits(any_demo, masks, digits.x)
        assert torch.equal(fast, reference), plan.to_json()
        metrics = evaluator.evaluate(plan)
        assert metrics.correct == int((reference.argmax(1) == digits.y).sum())
        assert metrics.loss == pytest.approx(float(F.cross_entropy(reference, digits.y)), abs=0)
    assert resumed > 0  # the walk did reuse cached prefixes


def test_global_plans_incremental_equals_full(cnn, digits):
    evaluator = Evaluator(cnn, digits)
    for amount in [0.3, 0.6, 0.9, 0.6]:
        plan = Plan(scope="global", amount=amount)
        masks = evaluator.masks(plan)
        assert torch.equal(evaluator.logits(masks), full_forward_logits(cnn, masks, digits.x))


def test_last_layer_change_recomputes_only_the_tail(cnn, digits):
    evaluator = Evaluator(cnn, digits)
    plan = Plan(sparsity={name: 0.5 for name in cnn.layer_names})
    evaluator.evaluate(plan)
    evaluator.evaluate(plan.with_sparsity("classifier.5", 0.7))
    tail_node = cnn.program.nodes[evaluator.last_start]
    assert tail_node.name == cnn.layer("classifier.5").node


def test_no_memory_budget_falls_back_to_full_passes(cnn, digits):
    evaluator = Evaluator(cnn, digits, memory_budget=0)
    plan = Plan(sparsity={"classifier.3": 0.5})
    first = evaluator.evaluate(plan)
    second = evaluator.evaluate(plan.with_sparsity("classifier.5", 0.5))
    assert evaluator.last_start == 0 and not evaluator.incremental
    ref = Evaluator(cnn, digits).evaluate(plan.with_sparsity("classifier.5", 0.5))
    assert second == ref and first.accuracy > 0.9


def test_sessions_sharing_scores_keep_their_own_numbers(cnn, digits):
    shared = ScoreCache(cnn)
    a, b = Evaluator(cnn, digits, shared), Evaluator(cnn, digits, shared)
    plan_a = Plan(sparsity={"features.2": 0.9})
    plan_b = Plan(sparsity={"classifier.1": 0.99, "classifier.3": 0.99})
    ma, mb = a.evaluate(plan_a), b.evaluate(plan_b)
    assert ma == a.evaluate(plan_a) and mb == b.evaluate(plan_b)
    assert ma == Evaluator(cnn, digits).evaluate(plan_a)
    assert mb == Evaluator(cnn, digits).evaluate(plan_b)


def test_dense_plan_reports_the_recorded_accuracy(any_demo, digits):
    metrics = Evaluator(any_demo, digits).evaluate(Plan())
    assert metrics.accuracy == pytest.approx(any_demo.card["validation_accuracy"], abs=1e-6)
    assert metrics.nonzero_params == metrics.params == any_demo.param_count
    assert metrics.flops["effective"] == metrics.flops["dense"] == any_demo.flops
    assert metrics.speedup == 1.0


@pytest.mark.parametrize(("k", "n"), [(0, 10), (350, 360), (360, 360), (171, 360), (1, 1)])
def test_wilson_interval_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)
