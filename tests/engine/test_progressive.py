"""Progressive evaluation: a fixed stratified subset answers first, the rest refines it to
exactly the full evaluation (issue 11, item 2)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
from torch.nn.utils import prune

from explorer.data import stratified_subset
from explorer.evaluator import (
    ESTIMATE_SECONDS,
    MIN_ESTIMATE,
    NOMINAL_FLOP_RATE,
    Evaluator,
    estimate_size,
    full_forward_logits,
)
from explorer.masks import ScoreCache
from explorer.plan import Plan

PLANS = [Plan(sparsity={"features.2": 0.7}), Plan(sparsity={"classifier.1": 0.9}),
         Plan(sparsity={"features.0": 0.5, "features.2": 0.8, "classifier.1": 0.6})]


def pruned_correct(cnn, plan: Plan, x: torch.Tensor, y: torch.Tensor) -> int:
    """Correct predictions of a copy pruned with torch.nn.utils.prune (L1, per layer): an
    independent reference for the magnitude plans above."""
    model = copy.deepcopy(cnn.model)
    for name, fraction in plan.sparsity.items():
        prune.l1_unstructured(model.get_submodule(name), "weight", amount=fraction)
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum())


def test_the_estimate_comes_first_and_is_the_stratified_subsets(cnn, digits):
    subset = stratified_subset(digits, 50)
    evaluator = Evaluator(cnn, digits, estimate_samples=50, batch_size=64)
    for plan in PLANS:
        heard: list = []
        final = evaluator.evaluate(plan, progress=lambda done, total, m, h=heard: h.append(m))
        first = heard[0]
        assert first.samples == 50  # the first report is the whole subset, no more
        assert first.correct == pruned_correct(cnn, plan, subset.x, subset.y)
        assert [m.samples for m in heard] == sorted(m.samples for m in heard)
        assert final.samples == len(digits)
        assert final.correct == pruned_correct(cnn, plan, digits.x, digits.y)


def test_the_final_value_is_the_full_evaluation(any_demo, digits):
    scores = ScoreCache(any_demo, digits)
    plain = Evaluator(any_demo, digits, scores, estimate_samples=0)
    progressive = Evaluator(any_demo, digits, scores, estimate_samples=40, batch_size=50)
    assert not plain.refines and progressive.refines and progressive.estimate_samples == 40
    plan = Plan()
    for name in any_demo.prunable_layers("weights")[:3]:
        plan = plan.with_sparsity(name, 0.6)
        a, b = plain.evaluate(plan), progressive.evaluate(plan)
        assert (a.correct, a.samples) == (b.correct, b.samples)
        assert b.loss == pytest.approx(a.loss, abs=1e-6)
        masks = progressive.masks(plan)  # logits come back in file order
        assert torch.allclose(progressive.logits(masks),
                              full_forward_logits(any_demo, masks, digits.x), atol=1e-5)
    assert progressive.last_start > 0  # the estimate's layout still resumes prefixes


def test_a_cancelled_refinement_keeps_the_estimate_and_is_not_remembered(cnn, digits):
    evaluator = Evaluator(cnn, digits, estimate_samples=60, batch_size=60)
    plan = PLANS[0]
    partial = evaluator.evaluate(plan, cancelled=lambda: True)
    assert partial.samples == 60
    assert partial.correct == pruned_correct(cnn, plan, *_xy(stratified_subset(digits, 60)))
    full = evaluator.evaluate(plan)
    assert full.samples == len(digits)
    assert full.correct == pruned_correct(cnn, plan, digits.x, digits.y)


def _xy(data):
    return data.x, data.y


def test_estimate_size_follows_the_models_flops(cnn):
    assert estimate_size(cnn, 360) == 360  # a tiny model: the whole set is quick
    cifar_resnet18 = replace(cnn, flops=1_110_845_440)  # the zoo's resnet18-cifar
    heavy = int(ESTIMATE_SECONDS * NOMINAL_FLOP_RATE / cifar_resnet18.flops)
    assert heavy == 40  # "a few dozen CIFAR-size images" on 2 cores (issue 11)
    assert estimate_size(cifar_resnet18, 3000) == heavy
    assert estimate_size(cifar_resnet18, 30) == 30
    assert estimate_size(replace(cnn, flops=10**15), 3000) == MIN_ESTIMATE


def test_half_the_set_or_more_is_no_estimate(cnn, digits):
    """An estimate on most of the set would save nothing: file order, one pass."""
    evaluator = Evaluator(cnn, digits, estimate_samples=len(digits) // 2 + 1)
    assert not evaluator.refines and evaluator.estimate_samples == len(digits)
    heard = []
    evaluator.evaluate(PLANS[1], progress=lambda done, total, m: heard.append(m.samples))
    assert len(digits) // 2 + 1 not in heard


def test_estimate_alone_is_the_subsets_metrics_and_resumes(cnn, digits):
    """What a sweep screens with: the subset's numbers, from the subset's batches only."""
    evaluator = Evaluator(cnn, digits, estimate_samples=45, batch_size=20)  # 3 batches
    subset = stratified_subset(digits, 45)
    for plan in PLANS:
        screened = evaluator.estimate(plan)
        assert screened.samples == 45
        assert screened.correct == pruned_correct(cnn, plan, subset.x, subset.y)
        assert evaluator.estimate(plan) is screened  # remembered
    plan = Plan(sparsity={"classifier.1": 0.3})
    evaluator.estimate(plan)
    assert evaluator.last_start > 0  # the last layer's change resumed the kept prefix
    small = Evaluator(cnn, digits)  # no estimate phase: the exact value
    assert small.estimate(plan) == small.evaluate(plan)
