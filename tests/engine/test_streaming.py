"""Evaluation streams the validation set in batches: the numbers are the all-at-once ones,
and what is kept for resuming stays within its byte budget (issue 11, memory)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from explorer import evaluator as evaluator_module
from explorer.activations import BATCH_BYTES, node_bytes
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.masks import ScoreCache
from explorer.plan import Plan


def walk(bundle, granularity: str, steps: int, seed: int):
    """One layer's (or coupled group's) fraction changes per step, as a slider drag does."""
    rng = random.Random(seed)
    units = list(bundle.units(granularity).values())
    plan = Plan(granularity=granularity, criterion="magnitude" if granularity == "weights"
                else "l1")
    for _ in range(steps):
        fraction = rng.choice([0.0, 0.3, 0.6, 0.9])
        for name in rng.choice(units):
            plan = plan.with_sparsity(name, fraction)
        yield plan


@pytest.mark.parametrize("granularity", ["weights", "neurons"])
def test_streaming_equals_all_at_once(any_demo, digits, granularity):
    scores = ScoreCache(any_demo, digits)
    whole = Evaluator(any_demo, digits, scores, batch_size=len(digits))
    streamed = Evaluator(any_demo, digits, scores, batch_size=37)  # 10 batches, the last short
    for plan in walk(any_demo, granularity, steps=10, seed=3):
        a, b = whole.evaluate(plan), streamed.evaluate(plan)
        assert b.correct == a.correct and b.samples == a.samples == len(digits)
        assert b.loss == pytest.approx(a.loss, abs=1e-6)
        reference = full_forward_logits(any_demo, streamed.masks(plan), digits.x)
        assert torch.allclose(streamed.logits(streamed.masks(plan)), reference, atol=1e-5)
    assert streamed.incremental and streamed.last_start > 0  # batches resume mid-graph


def test_a_tiny_budget_keeps_some_batches_and_changes_no_number(cnn, digits):
    batch = 40  # 9 batches
    scores = ScoreCache(cnn, digits)
    roomy = Evaluator(cnn, digits, scores, batch_size=batch)
    roomy.evaluate(Plan())  # one (dense) state per batch: what a batch's state takes
    budget = 3 * 2 * roomy.kept_bytes // roomy.kept_batches  # dense and last of 3 batches
    tight = Evaluator(cnn, digits, scores, memory_budget=budget, batch_size=batch)
    none = Evaluator(cnn, digits, scores, memory_budget=0, batch_size=batch)
    for plan in walk(cnn, "weights", steps=8, seed=5):
        metrics = [e.evaluate(plan) for e in (tight, roomy, none)]
        assert metrics[0] == metrics[1] == metrics[2]
        assert tight.kept_bytes <= budget
    assert 0 < tight.kept_batches < 9  # some batches resume, the rest run whole
    assert roomy.kept_batches == 9 and not none.incremental and none.kept_bytes == 0


def test_default_batches_hold_about_the_batch_bytes(cnn, digits):
    evaluator = Evaluator(cnn, digits)
    per_image, _ = node_bytes(cnn)
    assert evaluator.batch_size == BATCH_BYTES // per_image
    assert evaluator.batch_size >= len(digits)  # the demos run as one batch, as before


def test_progress_follows_the_batches_and_ends_on_the_exact_figures(cnn, digits):
    evaluator = Evaluator(cnn, digits, batch_size=100)  # 4 batches: 100, 100, 100, 60
    plan = Plan(sparsity={"features.2": 0.6})
    seen = []
    final = evaluator.evaluate(plan, progress=lambda d, t, m: seen.append((d, t, m)))
    assert [(d, t) for d, t, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert [m.samples for _, _, m in seen] == [100, 200, 300, 360]
    whole = Evaluator(cnn, digits).evaluate(plan)  # one batch
    assert seen[-1][2] is final and final.correct == whole.correct
    assert final.loss == pytest.approx(whole.loss, abs=1e-6)
    masks = evaluator.masks(plan)
    logits = full_forward_logits(cnn, masks, digits.x[:200])  # an independent reference
    assert seen[1][2].correct == int((logits.argmax(1) == digits.y[:200]).sum())


def test_a_cancelled_evaluation_returns_what_it_has_and_leaves_no_trace(cnn, digits):
    scores = ScoreCache(cnn, digits)
    evaluator = Evaluator(cnn, digits, scores, batch_size=100)
    first, second = Plan(sparsity={"features.0": 0.5}), Plan(sparsity={"classifier.1": 0.8})
    evaluator.evaluate(first)
    calls = []
    partial = evaluator.evaluate(second, cancelled=lambda: calls.append(1) or len(calls) >= 2)
    assert partial.samples == 200 and len(calls) == 2  # stopped after the second batch
    fresh = Evaluator(cnn, digits, scores, batch_size=100)
    for plan in (second, first, second.with_sparsity("features.2", 0.4)):
        assert evaluator.evaluate(plan) == fresh.evaluate(plan)  # never remembered, exact


@pytest.mark.parametrize(("available", "budget"), [(2**30, 64 * 2**20), (4 * 2**30, 256 * 2**20),
                                                   (64 * 2**30, 512 * 2**20)])
def test_the_default_budget_follows_the_machine(cnn, monkeypatch, available, budget):
    monkeypatch.setattr(evaluator_module, "available_memory", lambda: available)
    assert Evaluator(cnn, None).memory_budget == budget
    assert Evaluator(cnn, None, memory_budget=0).memory_budget == 0


def test_cli_memory_budget_keeps_the_numbers(tmp_path):
    def scan(*extra: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "explorer.cli", "sensitivity", "--model",
                              "digits-cnn", "--grid", "0,0.5,0.9", "--json", *extra],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    assert scan("--memory-budget", "0") == scan()  # partial budgets: the engine test above
    bad = subprocess.run([sys.executable, "-m", "explorer.cli", "broke", "--model",
                          "digits-cnn", "--memory-budget", "12X"], capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "a memory size is a number of bytes" in bad.stderr
