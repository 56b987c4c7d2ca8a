"""Latency sensitivity and the latency target, against independent timings.

Absolute milliseconds depend on the machine and its load (two cores shared by every test
and engineer here); what is checked is signs and ratios measured in the same test with
``torch.utils.benchmark`` directly, with loose bounds (a factor of 2). Models: digits-cnn at
batch 32, where shrinking ``features.2`` by 75% saves about half the forward time, far
above the noise.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils import benchmark

from explorer.decide.held_out import SplitEvaluator
from explorer.decide.sensitivity import sensitivity
from explorer.decide.suggest import LATENCY_TRIES, further_goal, suggest
from explorer.decide.targets import LatencyTable, Target
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.export.latency import latency_clock, measure
from explorer.export.latency_sensitivity import TableCache, latency_sensitivity
from explorer.export.shrink import shrink
from explorer.plan import Plan

FAST = 0.02  # seconds per timing of one model in one round
BATCH = 32
# A re-measured suggestion must reach this share of its target: two timings of the same plan
# on this shared 2-core machine differ by up to ~20% even counted in the timing thread's CPU
# time (caches and memory bandwidth are shared too), so a plan that met N when the
# suggestion measured it is re-measured >= 0.8 N.
TOLERANCE = 0.8


def seconds(module, x) -> float:
    with torch.no_grad():
        module(x)
        return benchmark.Timer("m(x)", globals={"m": module, "x": x},
                               num_threads=1).blocked_autorange(min_run_time=0.1).median


def reference_ratio(dense, pruned, x) -> float:
    """dense time / pruned time, three interleaved turns, each side its least median."""
    turns = [(seconds(dense, x), seconds(pruned, x)) for _ in range(3)]
    return min(d for d, _ in turns) / min(p for _, p in turns)


def table_of(sens) -> LatencyTable:
    return LatencyTable(sens.dense_ms, sens.saved(), sens.batch, sens.threads, sens.form)


@pytest.fixture(scope="module")
def cnn_neurons(cnn):
    return latency_sensitivity(cnn, "neurons", (0.25, 0.5, 0.75), batch=BATCH,
                               min_run_time=FAST)


def test_a_units_saving_agrees_with_an_independent_timing_of_its_shrunk_model(cnn,
                                                                              cnn_neurons):
    row = next(u for u in cnn_neurons.units if u.unit == "features.2")
    saved, pruned = row.saved_ms[-1], row.pruned_ms[-1]
    plan = Plan(granularity="neurons", criterion="l1", sparsity={"features.2": 0.75})
    own = shrink(cnn, Evaluator(cnn, None).masks(plan)).eval()  # made and timed here
    x = torch.randn((BATCH, *cnn.input_shape))
    reference = reference_ratio(cnn.model, own, x)
    assert reference > 1.2 and saved > 0  # the same sign: the shrunk model is faster
    assert reference / 2 <= (pruned + saved) / pruned <= reference * 2
    assert cnn_neurons.form == "shrunk" and cnn_neurons.rounds >= 3
    assert [u.unit for u in cnn_neurons.units] == list(cnn.units("neurons"))


def test_weights_time_csr_linear_layers_and_say_why_convolutions_are_not(cnn):
    sens = latency_sensitivity(cnn, "weights", (0.9,), batch=BATCH, min_run_time=FAST)
    convs = {"features.0", "features.2"}
    assert set(sens.skipped) == convs
    assert all("dense kernels" in why for why in sens.skipped.values())
    assert [u.unit for u in sens.units] == [n for n in cnn.layer_names if n not in convs]
    assert sens.form == "sparse"


def test_a_table_is_measured_once_per_model_granularity_grid_batch_and_threads(mlp):
    cache = TableCache()
    first = cache.get(mlp, "neurons", (0.5,), batch=4, min_run_time=FAST)
    assert cache.get(mlp, "neurons", [0.5, 0.5], batch=4) is first
    assert cache.get(mlp, "neurons", (0.5,), batch=8, min_run_time=FAST) is not first
    with pytest.raises(PlanError, match="between 0 and 1"):
        cache.get(mlp, "neurons", (0.0, 1.0))


def test_the_table_interpolates_and_estimates_the_sum_of_unit_savings(cnn):
    table = LatencyTable(10.0, {("features.0",): {0.5: 2.0, 1.0: 4.0},
                                ("features.2",): {0.5: 3.0}}, 1, 1, "shrunk")
    assert table.saved(("features.0",), 0.25) == pytest.approx(1.0)
    assert table.saved(("features.2",), 0.9) == pytest.approx(3.0)
    metrics = Evaluator(cnn, None).evaluate(Plan(
        granularity="neurons", criterion="l1", sparsity={"features.0": 0.5, "features.2": 0.5}))
    kept = {la.name: 1 - la.neurons_kept / la.neurons for la in metrics.layers}
    expected = 10.0 / (10.0 - table.saved(("features.0",), kept["features.0"])
                       - table.saved(("features.2",), kept["features.2"]))
    assert table.speedup(metrics) == pytest.approx(expected)
    assert Target.parse("latency=2").with_table(table).achieved(metrics) == expected
    with pytest.raises(PlanError, match="greater than 1"):
        Target.parse("latency=0.5")


def test_the_latency_suggestion_meets_its_target_when_measured_again(cnn, digits,
                                                                     cnn_neurons):
    judge = SplitEvaluator(cnn, digits)
    scan = sensitivity(judge.calibration, "neurons", "l1", (0.0, 0.25, 0.5, 0.75))
    target = Target.parse("latency=1.5").with_table(table_of(cnn_neurons))
    evaluator = Evaluator(cnn, None)

    def timed(plan: Plan) -> float:
        return measure(cnn, plan, BATCH, 1, min_run_time=0.2, evaluator=evaluator,
                       layers=False, clock=latency_clock(1)).measured

    result = suggest(scan, judge, target, baselines=False, measure=timed)
    check = result.latency
    assert check.met and check.measured >= 1.5 and 1 <= check.tries <= LATENCY_TRIES
    again = measure(cnn, result.plan, BATCH, 1, min_run_time=0.3, layers=False,
                    clock=latency_clock(1)).measured
    assert again >= TOLERANCE * 1.5
    assert result.to_dict()["latency"]["measured"] == check.measured


def test_the_next_goal_supposes_each_saving_shrinks_as_the_measured_one_did():
    # 1.91x estimated is 47.6% of the time saved, 1.45x measured 31.0%: 65% delivered; a
    # measured 1.5x (33.3% saved) then needs 51.2% estimated, 2.048x
    assert further_goal(1.5, 1.91, 1.45) == pytest.approx(2.0481, abs=1e-4)
    # what it predicts comes true where every saving does shrink by one share
    dense, saved = 10.0, 4.0  # ms; the machine delivers 60% of it
    assert further_goal(1.5, dense / (dense - saved), dense / (dense - 0.6 * saved)
                        ) == pytest.approx(dense / (dense - (dense - dense / 1.5) / 0.6))
    assert further_goal(3.0, 2.0, 1.2) is None  # would need more than all the time saved
    assert further_goal(1.5, 2.0, 0.9) is None  # measured slower: no share to go by


def shortfall_machine(cnn, share: float):
    """digits-cnn's neurons, a table estimating each unit to save 3 ms per whole at batch
    32 out of 10 ms, and a ``measure`` timing of a machine that delivers ``share`` of every
    estimated saving; the plans it measured."""
    units = list(cnn.units("neurons").values())

    def table(delivered: float) -> LatencyTable:
        return LatencyTable(10.0, {u: {f: delivered * 3.0 * f for f in (0.25, 0.5, 0.75)}
                                   for u in units}, BATCH, 1, "shrunk")

    evaluator, measured = Evaluator(cnn, None), []

    def measure(plan: Plan) -> float:
        measured.append(plan)
        return table(share).speedup(evaluator.evaluate(plan))

    return table(1.0), measure, measured


def test_a_latency_plan_measured_short_goes_further_and_reports_what_it_measured(cnn,
                                                                                 digits):
    judge = SplitEvaluator(cnn, digits)
    scan = sensitivity(judge.calibration, "neurons", "l1", (0.0, 0.25, 0.5, 0.75))
    table, measure, measured = shortfall_machine(cnn, 0.6)
    result = suggest(scan, judge, Target("latency", 1.5).with_table(table), baselines=False,
                     measure=measure)
    check = result.latency
    # the table's 1.5x plan measures 1.25x; the next goal (2.25x estimated) meets it
    assert check.met and check.tries == 2 == len(measured) and result.plan == measured[-1]
    assert check.measured == pytest.approx(measure(result.plan)) and check.measured >= 1.5
    assert check.estimated >= 2.25
    # beyond what the grid's furthest plan measures (2.17x here): that plan, MISSED
    table, measure, measured = shortfall_machine(cnn, 0.6)
    result = suggest(scan, judge, Target("latency", 3.0).with_table(table), baselines=False,
                     measure=measure)
    check = result.latency
    assert not check.met and check.tries == len(measured) < LATENCY_TRIES
    assert set(result.plan.sparsity.values()) == {0.75}  # every unit at the grid's end
    plans = list(measured)  # measuring them again appends to measured
    assert check.measured == max(measure(p) for p in plans)
    assert "MISSED 3x by 0.83x (28% short)" in check.describe()


def test_no_latency_suggestion_where_nothing_gets_faster(cnn, digits):
    judge = SplitEvaluator(cnn, digits)
    scan = sensitivity(judge.calibration, "weights", "magnitude", (0.0, 0.5))
    flat = LatencyTable(2.0, {("classifier.1",): {0.5: -0.3}}, BATCH, 1, "sparse")
    with pytest.raises(PlanError, match="prune neurons"):
        suggest(scan, judge, Target("latency", 2).with_table(flat), measure=lambda p: 1.0)
    with pytest.raises(PlanError, match="measured latency table"):
        suggest(scan, judge, Target("latency", 2), measure=lambda p: 1.0)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_suggest_latency_json_carries_the_measured_speedup():
    out = run_cli("suggest", "--model", "digits-cnn", "--granularity", "neurons",
                  "--target", "latency=1.5", "--batch", "32", "--grid", "0,0.5,0.9", "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    report = result["latency"]
    assert set(report) == {"target", "estimated", "measured", "met", "tries", "batch",
                           "threads", "form", "baselines_measured"}
    assert (report["batch"], report["threads"], report["target"]) == (32, 1, 1.5)
    assert math.isfinite(report["measured"]) and report["met"] == (report["measured"] >= 1.5)
    assert result["target"] == {"kind": "latency", "value": 1.5}
    assert set(report["baselines_measured"]) <= {"uniform", "global magnitude"}


@pytest.mark.parametrize(("args", "says"), [
    (("--target", "latency=0.5"), ("greater than 1",)),
    # Weights plans run dense kernels; whether a CSR layer gains a little depends on the
    # machine (none did on one CPU, 1.04x at most on another): either way 2x is refused.
    (("--target", "latency=2", "--granularity", "weights"), ("prune neurons", "out of reach")),
])
def test_cli_bad_latency_targets_are_one_line_and_exit_2(args, says):
    out = run_cli("suggest", "--model", "digits-cnn", "--batch", "32", *args)
    assert out.returncode == 2 and any(s in out.stderr for s in says), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error:")
