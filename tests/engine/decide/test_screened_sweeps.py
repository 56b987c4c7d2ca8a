"""Sweeps at real size: a scan screened on the stratified subset, each point saying on how
many images it ran, and decisions taken from it checked on every image (issue 11, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from explorer.data import stratified_subset
from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity, tolerance_points
from explorer.decide.suggest import suggest
from explorer.decide.targets import Target
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache
from explorer.ui.charts.sensitivity import unit_lines

GRID = (0.0, 0.3, 0.6, 0.9)


def test_screened_points_are_the_subsets_numbers_and_say_so(cnn, digits):
    scores = ScoreCache(cnn, digits)
    evaluator = Evaluator(cnn, digits, scores, estimate_samples=60, batch_size=30)
    scan = sensitivity(evaluator, "weights", "magnitude", GRID, screen=True)
    assert not scan.exact and scan.samples == 60
    assert scan.to_dict()["exact"] is False
    # independent evaluators on the subset itself and on every image (magnitude scores
    # read no data)
    on_subset = Evaluator(cnn, stratified_subset(digits, 60), ScoreCache(cnn, None))
    on_all = Evaluator(cnn, digits, ScoreCache(cnn, None), estimate_samples=0)
    refined_somewhere = False
    for curve in scan.units:
        plans = [scan.base.with_sparsity(curve.unit, f) for f in curve.fractions]
        screened = [on_subset.evaluate(p) for p in plans]
        tolerance = tolerance_points(screened)  # where the unit stops holding up
        assert 1 <= len(tolerance) <= 2 and tolerance == sorted(tolerance)
        last, base = tolerance[0], screened[0].accuracy
        assert screened[last].accuracy_ci[1] >= base  # still holding up on the subset
        assert all(m.accuracy_ci[1] < base for m in screened[last + 1:])  # then not
        assert tolerance[1:] == ([last + 1] if last + 1 < len(GRID) else [])
        assert curve.samples == tuple(len(digits) if i in tolerance else 60
                                      for i in range(len(GRID)))
        refined_somewhere |= tolerance != [0, 1]
        for i, (accuracy, loss) in enumerate(zip(curve.accuracy, curve.loss, strict=True)):
            m = on_all.evaluate(plans[i]) if i in tolerance else screened[i]
            assert accuracy == m.accuracy
            assert loss == pytest.approx(m.loss, abs=1e-6)
    assert refined_somewhere, "some unit should hold up beyond its first fraction"
    figure = unit_lines(scan)  # estimates drawn open, points on every image filled
    for trace, curve in zip(figure.data, scan.units, strict=True):
        assert list(trace.marker.symbol) == ["circle-open" if n == 60 else "circle"
                                             for n in curve.samples]
    exact = sensitivity(evaluator, "weights", "magnitude", GRID)
    assert exact.exact and exact.samples == len(digits)
    assert all(c.samples == (len(digits),) * len(GRID) for c in exact.units)
    plain = sensitivity(Evaluator(cnn, digits, scores, estimate_samples=0), "weights",
                        "magnitude", GRID)
    assert [c.accuracy for c in exact.units] == [c.accuracy for c in plain.units]


def test_screening_without_an_estimate_phase_is_exact(cnn, digits):
    evaluator = Evaluator(cnn, digits)  # 360 small images: the whole set is the estimate
    screened = sensitivity(evaluator, "weights", "magnitude", GRID, screen=True)
    plain = sensitivity(evaluator, "weights", "magnitude", GRID)
    assert screened == plain and screened.exact


@pytest.mark.parametrize("target", ["flops=2", "drop=0.02"])
def test_a_suggestion_from_a_screened_scan_meets_its_target_on_every_image(cnn, digits,
                                                                          target):
    judge = SplitEvaluator(cnn, digits)
    calibration = judge.split.calibration
    judge.calibration = Evaluator(cnn, calibration, judge.scores, estimate_samples=40)
    scan = sensitivity(judge.calibration, "weights", "magnitude", GRID, screen=True)
    assert not scan.exact and scan.samples == 40
    result = suggest(scan, judge, Target.parse(target), baselines=False)
    fresh = Evaluator(cnn, calibration, ScoreCache(cnn, calibration), estimate_samples=0)
    got, dense = fresh.evaluate(result.plan), fresh.evaluate(scan.base)
    assert got.samples == len(calibration)
    if target.startswith("flops"):
        assert got.speedup >= 2
    else:
        assert dense.accuracy - got.accuracy <= 0.02 + 1e-12
    assert result.plan.sparsity  # it did prune something


def test_cli_scans_say_whether_they_are_exact():
    for extra in ([], ["--exact"]):
        out = subprocess.run([sys.executable, "-m", "explorer.cli", "sensitivity", "--model",
                              "digits-mlp", "--grid", "0,0.5", "--json", *extra],
                             capture_output=True, text=True, timeout=300, check=True)
        report = json.loads(out.stdout)
        assert report["exact"] is True  # digits is small: screening is the whole set
        assert all(u["samples"] == [report["samples"]] * 2 for u in report["units"])
