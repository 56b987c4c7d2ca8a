"""Sweeps at real size: a scan screened on the stratified subset, each point saying on how
many images it ran, and decisions taken from it checked on every image (issue 11, item 3)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from explorer.data import stratified_subset
from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity
from explorer.decide.suggest import suggest
from explorer.decide.targets import Target
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache

GRID = (0.0, 0.3, 0.6, 0.9)


def test_screened_points_are_the_subsets_numbers_and_say_so(cnn, digits):
    scores = ScoreCache(cnn, digits)
    evaluator = Evaluator(cnn, digits, scores, estimate_samples=60, batch_size=30)
    scan = sensitivity(evaluator, "weights", "magnitude", GRID, screen=True)
    assert not scan.exact and scan.samples == 60
    assert scan.to_dict()["exact"] is False
    # an independent evaluator on the subset itself (magnitude scores read no data)
    on_subset = Evaluator(cnn, stratified_subset(digits, 60), ScoreCache(cnn, None))
    for curve in scan.units:
        assert curve.samples == (60,) * len(GRID)
        for fraction, accuracy, loss in zip(curve.fractions, curve.accuracy, curve.loss,
                                            strict=True):
            m = on_subset.evaluate(scan.base.with_sparsity(curve.unit, fraction))
            assert accuracy == m.accuracy
            assert loss == pytest.approx(m.loss, abs=1e-6)
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
