"""Sensitivity scans against a plain loop of fresh evaluators, one per (unit, fraction)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from explorer.data import split_for_decisions
from explorer.decide.sensitivity import DEFAULT_GRID, base_problem, scan_base, sensitivity
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.plan import Plan

GRID = (0.0, 0.3, 0.7)


def fresh(bundle, data, plan: Plan):
    return Evaluator(bundle, data).evaluate(plan)


def expected_units(bundle, granularity: str) -> dict[str, tuple[str, ...]]:
    """Units computed independently of the module: layers, or layers sharing a group."""
    if granularity == "weights":
        return {la.name: (la.name,) for la in bundle.layers}
    units: dict[str, tuple[str, ...]] = {}
    for la in bundle.layers:
        if la.neuron_reason is None:
            units[la.group] = (*units.get(la.group, ()), la.name)
    return units


@pytest.mark.parametrize(
    ("model", "granularity", "criterion", "base"),
    [
        ("cnn", "weights", "magnitude", None),
        ("cnn", "weights", "magnitude", Plan(sparsity={"features.0": 0.4})),
        ("resnet", "neurons", "l1", None),
    ],
)
def test_equals_fresh_evaluations(request, digits, model, granularity, criterion, base):
    bundle = request.getfixturevalue(model)
    result = sensitivity(Evaluator(bundle, digits), granularity, criterion, GRID, base=base)
    units = expected_units(bundle, granularity)
    assert [u.unit for u in result.units] == list(units)
    if granularity == "neurons":
        assert any(len(members) > 1 for members in units.values())  # coupled groups present
    base = base or Plan(granularity=granularity, criterion=criterion)
    for curve in result.units:
        assert curve.layers == units[curve.unit]
        assert curve.fractions == GRID
        for i, fraction in enumerate(GRID):
            plan = base
            for member in curve.layers:
                plan = plan.with_sparsity(member, fraction)
            want = fresh(bundle, digits, plan)
            assert curve.accuracy[i] == want.accuracy, (curve.unit, fraction)
            assert curve.loss[i] == want.loss, (curve.unit, fraction)
            assert curve.flops_effective[i] == want.flops["effective"]
    assert not result.cancelled and result.samples == len(digits)


def test_fraction_zero_is_dense_and_skipped_layers_have_reasons(resnet, digits):
    result = sensitivity(Evaluator(resnet, digits), "neurons", "l1", (0.0, 0.5))
    dense = fresh(resnet, digits, Plan())
    for curve in result.units:
        assert (curve.accuracy[0], curve.loss[0]) == (dense.accuracy, dense.loss)
        assert curve.flops_effective[0] == dense.flops["effective"]
    fixed = [la.name for la in resnet.layers if not la.neuron_prunable]
    assert fixed and list(result.skipped) == fixed
    assert all("cannot be removed" in reason for reason in result.skipped.values())
    covered = [n for u in result.units for n in u.layers] + list(result.skipped)
    assert sorted(covered) == sorted(resnet.layer_names)


def test_default_grid():
    assert DEFAULT_GRID[0] == 0.0 and DEFAULT_GRID[-1] == 0.95 and len(DEFAULT_GRID) == 20


def test_progress_counts_to_the_total(cnn, digits):
    calls = []
    sensitivity(
        Evaluator(cnn, digits),
        "weights",
        "magnitude",
        (0.0, 0.5),
        progress=lambda done, total, _: calls.append((done, total)),
    )
    total = 2 * len(cnn.layers)
    assert calls == [(i, total) for i in range(1, total + 1)]


def test_cancel_stops_early_with_partial_result(cnn, digits):
    evaluated = []
    result = sensitivity(
        Evaluator(cnn, digits),
        "weights",
        "magnitude",
        GRID,
        progress=lambda done, total, _: evaluated.append(done),
        cancelled=lambda: len(evaluated) >= 4,
    )
    assert result.cancelled and evaluated == [1, 2, 3, 4]
    assert [len(u.fractions) for u in result.units] == [3, 1]
    assert json.loads(json.dumps(result.to_dict()))["cancelled"] is True


def test_partial_results_grow_to_the_final_one(resnet, digits):
    snapshots, counts = [], []

    def progress(done, total, so_far):
        counts.append((done, total))
        snapshots.append(so_far)

    final = sensitivity(Evaluator(resnet, digits), "neurons", "l1", GRID, progress=progress)
    assert len(snapshots) == len(final.units) * len(GRID)
    points = [sum(len(u.fractions) for u in s.units) for s in snapshots]
    assert points == list(range(1, len(snapshots) + 1))
    assert counts == [(done, len(snapshots)) for done in points]  # done counts the points
    for snapshot in snapshots:  # every curve so far is a prefix of the final one
        assert not snapshot.cancelled and snapshot.skipped == final.skipped
        for curve in snapshot.units:
            whole = final.unit(curve.unit)
            n = len(curve.fractions)
            assert curve.layers == whole.layers and curve.fractions == whole.fractions[:n]
            assert curve.accuracy == whole.accuracy[:n] and curve.loss == whole.loss[:n]
    assert snapshots[-1] == final

def test_without_data_accuracy_is_none(cnn):
    result = sensitivity(Evaluator(cnn, None), "weights", "magnitude", (0.0, 0.5))
    curve = result.units[0]
    assert curve.accuracy == (None, None) and curve.loss == (None, None)
    assert curve.flops_effective[1] < curve.flops_effective[0]


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"grid": (0.0, 1.0)}, "fractions must be"),
        ({"criterion": "nope"}, "criterion"),
        ({"base": Plan(scope="global", amount=0.5)}, "per-layer"),
        ({"base": Plan(sparsity={"no.such": 0.5})}, "does not have"),
    ],
)
def test_bad_arguments_raise_plan_error(cnn, digits, kwargs, phrase):
    args = {"granularity": "weights", "criterion": "magnitude", **kwargs}
    with pytest.raises(PlanError, match=phrase):
        sensitivity(Evaluator(cnn, digits), **args)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "explorer.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_json_one_entry_per_unit(cnn, digits):
    """The CLI scans the calibration part and reports the dense model on both parts."""
    out = run_cli("sensitivity", "--model", "digits-cnn", "--grid", "0,0.5", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    split = split_for_decisions(digits)
    for part, data in (("calibration", split.calibration), ("held_out", split.held_out)):
        block, dense = got.pop(part), Evaluator(cnn, data).evaluate(Plan())
        assert block["indices"] == data.indices.tolist() and block["samples"] == len(data)
        assert block["accuracy"] == block["dense_accuracy"] == dense.accuracy
        assert block["accuracy_ci"] == list(dense.accuracy_ci)
    assert got.pop("split")["rule"] == split.rule()
    assert (got["granularity"], got["criterion"], got["grid"]) == (
        "weights",
        "magnitude",
        [0.0, 0.5],
    )
    assert [u["unit"] for u in got["units"]] == cnn.layer_names
    assert (got.pop("bn_recalibrated"), got.pop("bn_note")) == (False, None)  # no BatchNorm
    want = sensitivity(Evaluator(cnn, split.calibration), "weights", "magnitude", (0.0, 0.5))
    assert got == json.loads(json.dumps(want.to_dict())) and got["samples"] == 182


def test_cli_takes_granularity_and_criterion_from_the_plan(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(
        Plan(granularity="neurons", criterion="l2", sparsity={"features.0": 0.25}).to_json()
    )
    out = run_cli("sensitivity", "--model", "digits-cnn", "--plan", str(path), "--grid", "0.5")
    assert out.returncode == 0, out.stderr
    assert "sensitivity of neurons by l2" in out.stdout and "removed" in out.stdout
    bad = run_cli("sensitivity", "--model", "digits-cnn", "--grid", "0,x")
    assert bad.returncode == 2 and "--grid" in bad.stderr and "Traceback" not in bad.stderr


def test_the_scan_base_is_chosen_by_the_engine(cnn, digits):
    """The Sensitivity page's "other layers" choice: dense, or the plan's fractions."""
    plan = Plan(granularity="neurons", criterion="redundancy", merge=True,
                sparsity={"features.0": 0.25})
    assert scan_base(None, "weights", "taylor") == Plan(criterion="taylor")
    base = scan_base(plan, "neurons", "l2")
    assert (base.criterion, base.merge, base.fraction("features.0")) == ("l2", False, 0.25)
    assert scan_base(plan, "neurons", "redundancy").merge
    assert base_problem(plan, "neurons") is None
    assert "prunes neurons, this scan weights" in base_problem(plan, "weights")
    assert "global plan" in base_problem(Plan(scope="global", amount=0.5), "weights")
    with pytest.raises(PlanError, match="global plan"):
        scan_base(Plan(scope="global", amount=0.5), "weights", "magnitude")
    result = sensitivity(Evaluator(cnn, digits), "neurons", "l2", (0.0, 0.5), base=plan)
    assert result.base == base
