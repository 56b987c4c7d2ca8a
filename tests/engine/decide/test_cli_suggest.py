"""``pruning-explorer suggest`` as a user runs it: a real subprocess, JSON and a plan file.

The suggestion is chosen on the calibration part of the digits validation split and
reported on the held-out part; the JSON says which images are which.
"""

from __future__ import annotations

import json
import subprocess
import sys

from explorer.cli import main
from explorer.data import split_for_decisions
from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity
from explorer.decide.suggest import suggest
from explorer.decide.targets import Target
from explorer.evaluator import Evaluator
from explorer.plan import Plan

GRID = "0,0.2,0.4,0.6,0.8,0.9"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "explorer.cli", *args], capture_output=True, text=True,
        timeout=300,
    )


def test_json_and_plan_file_meet_the_target_and_equal_the_engine(mlp, digits, tmp_path):
    out_path = tmp_path / "suggested.json"
    out = run_cli("suggest", "--model", "digits-mlp", "--target", "flops=3", "--grid", GRID,
                  "--json", "--out", str(out_path))
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert (got["model"], got["granularity"], got["criterion"]) == (
        "digits-mlp", "weights", "magnitude")
    assert [row["name"] for row in got["rows"]] == ["suggested", "uniform", "global magnitude"]
    plan = Plan.from_json(out_path.read_text())
    assert plan.to_dict() == got["plan"] == got["rows"][0]["plan"]
    split = split_for_decisions(digits)
    for part in ("calibration", "held_out"):  # which images chose, which report
        data = getattr(split, part)
        assert got[part]["indices"] == data.indices.tolist()
        assert got[part]["samples"] == len(data) == got["rows"][0][part]["samples"]
    assert sorted(got["calibration"]["indices"] + got["held_out"]["indices"]) == list(range(360))
    for row in got["rows"]:  # each plan, evaluated afresh, has 3x fewer FLOPs on all images
        plan = Plan.from_dict(row["plan"])
        metrics = Evaluator(mlp, digits).evaluate(plan)
        assert metrics.flops["effective"] * 3 <= metrics.flops["dense"], row["name"]
        for part in ("calibration", "held_out"):
            fresh = Evaluator(mlp, getattr(split, part)).evaluate(plan)
            assert row[part]["accuracy"] == fresh.accuracy, (row["name"], part)
            assert row[part]["accuracy_ci"] == list(fresh.accuracy_ci)
    assert got["held_out"]["accuracy"] == got["rows"][0]["held_out"]["accuracy"]
    judge = SplitEvaluator(mlp, digits)
    scan = sensitivity(judge.calibration, "weights", "magnitude",
                       [float(f) for f in GRID.split(",")])
    want = suggest(scan, judge, Target("flops", 3)).to_dict()
    assert got["rows"] == json.loads(json.dumps(want["rows"]))


def test_text_output_shows_the_three_rows_for_neurons():
    out = run_cli("suggest", "--model", "digits-mlp", "--target", "drop=2%", "--granularity",
                  "neurons", "--grid", GRID)
    assert out.returncode == 0, out.stderr
    assert "accuracy at most 2 points below the dense model, neurons by l1" in out.stdout
    assert "Chosen on 182 calibration images of the 360 digits-val images" in out.stdout
    assert "reported on the other 178, held out" in out.stdout
    for name in ("suggested", "uniform (", "global magnitude ("):
        assert f"\n  {name}" in out.stdout
    assert "suggested fractions removed: fc1" in out.stdout


def test_errors_exit_2_with_the_message(capsys):
    out = run_cli("suggest", "--model", "digits-mlp", "--target", "size=500", "--grid", GRID)
    assert out.returncode == 2
    assert "out of reach" in out.stderr and "Traceback" not in out.stderr
    assert main(["suggest", "--model", "digits-mlp", "--target", "fast=2"]) == 2
    assert "target kind must be one of" in capsys.readouterr().err
