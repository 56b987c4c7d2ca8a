"""Decisions are chosen on a calibration part and reported on a held-out part.

The split is checked against plain loops (per class, every other image in file order) and a
pure-Python splitmix64; the suggestion and the Pareto front against fresh evaluators and a
plain forward pass on each part. That the held-out part plays no part in a choice is shown
by changing every held-out label: the choice stays the same, only the report moves.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from explorer.data import ValidationSet, split_for_decisions
from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity
from explorer.decide.suggest import suggest
from explorer.decide.targets import Target
from explorer.decide.tradeoff import decision_front, pareto_front
from explorer.errors import DataError
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.masks import ScoreCache
from explorer.plan import Plan

GRID = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9)
MASK64 = (1 << 64) - 1


def by_class(y: torch.Tensor) -> dict[int, list[int]]:
    """Positions of each label, in file order."""
    out: dict[int, list[int]] = {}
    for i, label in enumerate(y.tolist()):
        out.setdefault(label, []).append(i)
    return out


def splitmix64(seed: int, i: int) -> int:
    z = (i + seed * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def relabelled(judge: SplitEvaluator, part: str) -> SplitEvaluator:
    """``judge``'s split (the same images in each part) with every label of ``part`` moved
    to the next class: a right prediction there becomes a wrong one."""
    data = getattr(judge.split, part)
    y = (data.y + 1) % data.num_classes
    changed = ValidationSet(data.x, y, data.num_classes, data.name, data.indices)
    return SplitEvaluator.on_split(judge.bundle, replace(judge.split, **{part: changed}))


def correct_on(bundle, plan: Plan, part: ValidationSet, scored_on: ValidationSet) -> int:
    """Correct predictions of ``plan``'s masked model on ``part``, by a plain forward pass."""
    evaluator = Evaluator(bundle, scored_on)
    logits = full_forward_logits(bundle, evaluator.masks(plan), part.x)
    return int((logits.argmax(1) == part.y).sum())


# ---- the split ---------------------------------------------------------------------------


def test_split_is_stratified_disjoint_covering_and_every_other_image(digits):
    split = split_for_decisions(digits)
    cal, held = split.calibration.indices.tolist(), split.held_out.indices.tolist()
    assert not set(cal) & set(held) and sorted(cal + held) == list(range(len(digits)))
    assert cal == sorted(cal) and held == sorted(held)  # both parts keep file order
    want = sorted(i for members in by_class(digits.y).values() for i in members[::2])
    assert cal == want  # the 1st, 3rd, 5th, ... image of each class
    for part in (split.calibration, split.held_out):
        assert torch.equal(part.x, digits.x[part.indices])
        assert torch.equal(part.y, digits.y[part.indices])
        assert part.num_classes == digits.num_classes
    for label, members in by_class(digits.y).items():
        in_cal = sum(digits.y[i] == label for i in cal)
        assert in_cal == (len(members) + 1) // 2, label
    assert (len(cal), len(held)) == (182, 178)
    text = split.describe()
    assert "182 calibration images of the 360 digits-val images" in text
    assert "the other 178" in text and "1st, 3rd, 5th" in text


def test_split_is_deterministic_and_seeded_by_a_platform_independent_hash(digits):
    first, again = split_for_decisions(digits), split_for_decisions(digits)
    assert torch.equal(first.calibration.indices, again.calibration.indices)
    seeded = split_for_decisions(digits, 0.5, seed=7)
    assert torch.equal(seeded.calibration.indices,
                       split_for_decisions(digits, 0.5, seed=7).calibration.indices)
    assert not torch.equal(seeded.calibration.indices, first.calibration.indices)
    assert not torch.equal(seeded.calibration.indices,
                           split_for_decisions(digits, 0.5, seed=8).calibration.indices)
    # The same rule on an order fixed by a pure-Python splitmix64 of (seed, position).
    want = []
    for members in by_class(digits.y).values():
        ordered = sorted(members, key=lambda i: (splitmix64(7, i), i))
        want += ordered[::2]
    assert seeded.calibration.indices.tolist() == sorted(want)
    assert seeded.to_dict()["seed"] == 7 and "seed 7" in seeded.describe()


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_small_classes_get_an_image_in_each_part(fraction):
    counts = {0: 1, 1: 2, 2: 3, 3: 5, 4: 40}
    y = torch.tensor([c for c, n in counts.items() for _ in range(n)])
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(0))]
    data = ValidationSet(torch.randn(len(y), 4), y, 5, "tiny")
    split = split_for_decisions(data, fraction)
    for label, n in counts.items():
        cal = int((split.calibration.y == label).sum())
        held = int((split.held_out.y == label).sum())
        assert cal + held == n
        if n >= 2:
            assert cal >= 1 and held >= 1, (label, cal, held)
            assert cal == min(max(int(n * fraction + 0.5), 1), n - 1)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.2, True, "half"])
def test_bad_fractions_are_one_message(digits, fraction):
    with pytest.raises(DataError, match="calibration fraction must be between 0 and 1"):
        split_for_decisions(digits, fraction)


def test_a_set_that_cannot_be_split_says_so():
    data = ValidationSet(torch.randn(3, 4), torch.tensor([0, 1, 2]), 3, "singletons")
    with pytest.raises(DataError, match="singletons: 3 image.*cannot be split"):
        split_for_decisions(data)


def test_split_evaluator_without_data_gives_costs_only(cnn):
    judge = SplitEvaluator(cnn, None)
    assert judge.split is None and judge.report(Plan()) == {}
    calibration, held_out = judge.evaluate(Plan(sparsity={"features.0": 0.5}))
    assert calibration.accuracy is None and calibration == held_out


# ---- decisions: chosen on calibration, reported on held-out -----------------------------


@pytest.fixture(scope="module")
def suggested(mlp, digits):
    """An accuracy-drop suggestion on digits-mlp (its choice depends on the data)."""
    judge = SplitEvaluator(mlp, digits)
    scan = sensitivity(judge.calibration, "weights", "magnitude", GRID)
    return judge, scan, suggest(scan, judge, Target("accuracy_drop", 0.02))


def test_suggestion_chosen_on_calibration_reported_on_held_out(mlp, suggested):
    judge, scan, result = suggested
    calibration, held_out = judge.split.calibration, judge.split.held_out
    assert scan.samples == len(calibration)
    for row in result.rows:
        chosen = Evaluator(mlp, calibration).evaluate(row.plan)
        assert row.metrics.calibration == chosen
        assert chosen.correct == correct_on(mlp, row.plan, calibration, calibration)
        reported = Evaluator(mlp, held_out, ScoreCache(mlp, calibration)).evaluate(row.plan)
        assert row.metrics.held_out == reported and reported.samples == len(held_out)
        assert reported.correct == correct_on(mlp, row.plan, held_out, calibration)
        # the target holds where the choice was made
        assert result.dense.calibration.accuracy - chosen.accuracy <= 0.02 + 1e-12
    assert result.plan != Plan() and result.metrics.held_out.compression_ratio > 1.5
    out = json.loads(json.dumps(result.to_dict()))
    assert out["calibration"]["accuracy"] == result.metrics.calibration.accuracy
    assert out["held_out"]["accuracy"] == result.metrics.held_out.accuracy
    assert out["held_out"]["dense_accuracy"] == result.dense.held_out.accuracy
    assert out["held_out"]["indices"] == held_out.indices.tolist()


def test_held_out_labels_never_change_a_suggestion(suggested):
    judge, _, result = suggested
    other = relabelled(judge, "held_out")
    scan = sensitivity(other.calibration, "weights", "magnitude", GRID)
    again = suggest(scan, other, Target("accuracy_drop", 0.02))
    assert [row.plan for row in again.rows] == [row.plan for row in result.rows]
    assert [row.metrics.calibration for row in again.rows] == \
        [row.metrics.calibration for row in result.rows]
    # only the report moved: every held-out label is now wrong for a right prediction
    assert again.metrics.held_out.accuracy < 0.1 < result.metrics.held_out.accuracy


def test_calibration_labels_do_change_a_suggestion(suggested):
    """The converse: the choice reads the calibration labels (else the test above is empty)."""
    judge, _, result = suggested
    other = relabelled(judge, "calibration")  # every calibration label wrong
    scan = sensitivity(other.calibration, "weights", "magnitude", GRID)
    again = suggest(scan, other, Target("accuracy_drop", 0.02))
    assert again.plan != result.plan


PLANS = [Plan(), Plan(scope="global", amount=0.5), Plan(scope="global", amount=0.9),
         Plan(sparsity={"fc1": 0.9, "fc2": 0.9}), Plan(sparsity={"fc1": 0.95, "fc2": 0.95}),
         Plan(criterion="random", sparsity={"fc1": 0.5}), Plan(sparsity={"fc3": 0.8}),
         Plan(granularity="neurons", criterion="l1", sparsity={"fc1": 0.5})]


def test_front_is_chosen_on_calibration_and_reported_on_held_out(mlp, digits):
    judge = SplitEvaluator(mlp, digits)
    judged = [judge.evaluate(p) for p in PLANS]

    def flops(m):
        return m.flops["effective"]

    calibration = Evaluator(mlp, judge.split.calibration)
    points = [(flops(m), m.accuracy) for m in map(calibration.evaluate, PLANS)]
    front = decision_front(judged, flops)
    assert front == pareto_front(points) and len(front) >= 2
    held_out = Evaluator(mlp, judge.split.held_out)
    for i in front:  # the numbers a page reports for the front
        assert judged[i].held_out == held_out.evaluate(PLANS[i])
    changed = relabelled(judge, "held_out")
    assert decision_front([changed.evaluate(p) for p in PLANS], flops) == front
