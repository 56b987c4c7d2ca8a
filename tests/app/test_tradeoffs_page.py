"""The Trade-offs page in AppTest: points, Pareto front and baselines equal the engine's;
pinning, loading and comparing two plans.

The front is chosen on the calibration part of the digits validation split and reported on
the held-out part; expected values come from fresh evaluators on each part.
"""

from __future__ import annotations

import numpy as np
import pytest

from explorer.data import split_for_decisions
from explorer.decide.tradeoff import BLALOCK_RATIOS
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.plan import Plan
from explorer.ui.format import describe

CNN = "digits-cnn"
PLANS = [
    Plan(sparsity={"classifier.1": 0.9}),
    Plan(sparsity={"features.0": 0.8, "classifier.1": 0.5}),
    Plan(scope="global", amount=0.7),
    Plan(scope="global", amount=0.95),
    Plan(sparsity={"classifier.5": 0.9}),
]


@pytest.fixture
def visited(open_page):
    """The page after the user evaluated every plan of PLANS (the last one current)."""
    at = open_page("tradeoffs", CNN, PLANS[0])
    for plan in PLANS[1:]:
        at.session_state["plan"] = plan
        at.run()
    assert not at.exception, at.exception
    return at


def _dominated(point, others) -> bool:
    return any(c <= point[0] and a >= point[1] and (c, a) != point for c, a in others)


def parts(cnn, digits) -> dict[str, Evaluator]:
    split = split_for_decisions(digits)
    return {"held_out": Evaluator(cnn, split.held_out),
            "calibration": Evaluator(cnn, split.calibration)}


def test_points_and_pareto_front_are_the_engines(visited, charts, cnn, digits):
    evaluators = parts(cnn, digits)
    flops = {p: evaluators["calibration"].evaluate(p).flops["effective"] for p in PLANS}
    chosen = [(flops[p], evaluators["calibration"].evaluate(p).accuracy) for p in PLANS]
    front_plans = [p for p, point in zip(PLANS, chosen, strict=True)
                   if not _dominated(point, chosen)]
    assert visited.radio(key="to_part").value == "held_out"  # the reported numbers first
    for part, evaluator in evaluators.items():
        visited.radio(key="to_part").set_value(part).run()
        figure = charts.of(visited)["workspace"]
        expected = {round(flops[p]): evaluator.evaluate(p).accuracy * 100 for p in PLANS}
        plans = charts.traces(figure, "evaluated plans")[0]  # the FLOPs panel comes first
        shown = dict(zip(np.round(plans["x"]).astype(int).tolist(), plans["y"], strict=True))
        assert shown.keys() == expected.keys()
        for cost, accuracy in expected.items():
            assert shown[cost] == pytest.approx(accuracy), (part, cost)
        # The front is the one chosen on calibration, drawn at this part's accuracy.
        front = charts.traces(figure, "Pareto front")[0]
        by_cost = sorted(front_plans, key=flops.get)
        assert np.round(front["x"]).astype(int).tolist() == [round(flops[p]) for p in by_cost]
        assert list(front["y"]) == pytest.approx(
            [evaluator.evaluate(p).accuracy * 100 for p in by_cost])
    # On calibration: exactly the plotted points no other plotted point beats on both axes.
    points = list(zip(plans["x"], plans["y"], strict=True))
    on_front = set(zip(front["x"], front["y"], strict=True))
    assert on_front == {p for p in points if not _dominated(p, points)}
    assert len(on_front) < len(points)  # the global 95% plan is beaten, for one
    table = visited.dataframe[0].value  # the front's table: both numbers per plan
    held_out = evaluators["held_out"]
    assert sorted(table["calibration accuracy"]) == sorted(
        f"{evaluators['calibration'].evaluate(p).accuracy * 100:.2f}%" for p in front_plans)
    assert sorted(a.split()[0] for a in table["held-out accuracy [95%]"]) == sorted(
        f"{held_out.evaluate(p).accuracy * 100:.2f}%" for p in front_plans)
    captions = " ".join(c.value for c in visited.caption)
    assert "Chosen on 182 calibration images of the 360 digits-val images" in captions


def test_baselines_reach_each_compression_ratio(visited, charts, cnn, digits):
    figure = charts.of(visited)["workspace"]  # held-out accuracy
    costs = Evaluator(cnn, None)  # compression is arithmetic: no data needed
    for name in ("uniform", "global magnitude", "random"):
        trace = charts.traces(figure, name)[0]
        assert list(trace["text"]) == [f"{r}x" for r in BLALOCK_RATIOS]
        assert np.all(np.diff(trace["x"]) < 0)  # more compression, fewer FLOPs
    # The global-magnitude point at 4x is the global plan whose compression first reaches 4x
    # (found here by bisection over four-decimal amounts), at its held-out accuracy.
    trace = charts.traces(figure, "global magnitude")[0]
    index = list(trace["text"]).index("4x")
    lo, hi = 0, 9_990  # amount / 10,000: lo does not reach 4x, hi does
    while hi - lo > 1:
        mid = (lo + hi) // 2
        reaches = costs.evaluate(Plan(scope="global", amount=mid / 10_000)).compression_ratio >= 4
        lo, hi = (lo, mid) if reaches else (mid, hi)
    reached = parts(cnn, digits)["held_out"].evaluate(Plan(scope="global", amount=hi / 10_000))
    assert trace["y"][index] == pytest.approx(reached.accuracy * 100)


def test_pin_compare_and_load(visited, charts, cnn, digits):
    at = visited
    at.text_input(key="to_pin_name").input("half of fc1")
    at.session_state["plan"] = PLANS[1]
    at.button(key="to_pin").click().run()
    assert not at.exception, at.exception
    pinned = at.dataframe[1].value
    assert list(pinned["plan"]) == ["half of fc1"]
    # Compare the dense model (A) with the pinned plan (B).
    at.selectbox(key="to_a").select("dense model")
    at.selectbox(key="to_b").select("half of fc1").run()
    metrics = at.dataframe[2].value  # front, pinned, metrics, layers
    evaluator = Evaluator(cnn, digits)
    accuracy = evaluator.evaluate(PLANS[1]).accuracy
    row = metrics[metrics[""] == "accuracy"].iloc[0]
    assert row["half of fc1"] == f"{accuracy * 100:.2f}%"
    layers = at.dataframe[3].value
    assert list(layers["removed % (half of fc1)"]) == pytest.approx(
        [m.sparsity * 100 for m in evaluator.evaluate(PLANS[1]).layers], abs=0.05)
    # Per-class accuracy, checked against a plain forward pass of the masked model.
    predicted = full_forward_logits(cnn, evaluator.masks(PLANS[1]), digits.x).argmax(1)
    bars = charts.traces(charts.of(at)["to_per_class"], "half of fc1")[0]
    for c in range(10):
        mine = digits.y == c
        assert bars["y"][c] == pytest.approx(
            float((predicted[mine] == c).float().mean()) * 100)
    # Load the pinned plan back into the sliders.
    at.selectbox(key="to_pinned_pick").select("half of fc1")
    at.session_state["plan"] = PLANS[0]
    at.run()
    at.button(key="to_pinned_load").click().run()
    assert at.session_state["plan"] == PLANS[1]
    # Unpin: gone from the table.
    at.button(key="to_unpin").click().run()
    assert not at.exception
    assert "half of fc1" not in at.selectbox(key="to_b").options


def test_architecture_only_model_explains_instead_of_failing(open_page):
    at = open_page("tradeoffs", "resnet18-cifar")
    assert not at.exception
    assert "needs data" in at.info[0].value


def test_a_plan_on_the_front_loads_into_the_sliders(visited, cnn, digits):
    at = visited
    evaluator = parts(cnn, digits)["calibration"]  # where the front is chosen
    flops = {p: evaluator.evaluate(p).flops["effective"] for p in PLANS}
    accuracy = {p: evaluator.evaluate(p).accuracy for p in PLANS}
    front = [p for p in PLANS if not any(
        flops[q] <= flops[p] and accuracy[q] >= accuracy[p] and q != p for q in PLANS)]
    picker = next(s for s in at.selectbox if s.label == "A plan on the front")
    assert len(picker.options) == len(front)
    cheapest = min(front, key=flops.get)
    label = next(o for o in picker.options if o == describe(cheapest))
    at.session_state["plan"] = Plan()
    picker.select(label).run()
    at.button(key="to_front_load").click().run()
    assert not at.exception, at.exception
    assert at.session_state["plan"] == cheapest
