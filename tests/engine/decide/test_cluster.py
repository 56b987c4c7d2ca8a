"""Sweeps through an executor, without Ray: the shares merged in order are the sweep itself.

:class:`~explorer.decide.cluster.InProcess` runs the same shares a Ray cluster's workers
run (one unit, one criterion); the sweep merges them. Its results are compared with the
plain per-point loop, and the CLI refuses ``--ray`` without the extra or with a malformed
address in one line. (The Ray cluster itself: test_cluster_ray.py.)
"""

from __future__ import annotations

import sys

import pytest

from explorer.cli import main
from explorer.decide import compare_criteria as compare
from explorer.decide.cluster import ClusterError, InProcess, RayCluster, checked_address
from explorer.decide.sensitivity import sensitivity
from explorer.evaluator import Evaluator

GRID = (0.0, 0.5, 0.9)


def test_sensitivity_by_shares_equals_the_plain_scan(cnn, digits):
    plain = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID)
    heard = []
    shared = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID,
                         executor=InProcess(), progress=lambda d, t, s: heard.append((d, t)))
    assert shared == plain
    total = len(plain.units) * len(GRID)
    assert heard == [(len(GRID) * (i + 1), total) for i in range(len(plain.units))]


def test_screened_neuron_scan_by_shares_equals_the_plain_scan(mlp, digits):
    """Screening refines each unit's tolerance on every image: inside the unit's share."""
    def scan(executor):
        return sensitivity(Evaluator(mlp, digits, estimate_samples=100), "neurons",
                           "activation", GRID, screen=True, executor=executor)

    plain = scan(None)
    assert not plain.exact and any(max(u.samples) == len(digits) for u in plain.units)
    assert scan(InProcess()) == plain


def test_cancelled_scan_by_shares_keeps_the_finished_units(cnn, digits):
    plain = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID)
    finished = []
    stopped = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID,
                          executor=InProcess(), progress=lambda d, t, s: finished.append(d),
                          cancelled=lambda: len(finished) >= 2)
    assert stopped.cancelled and stopped.units == plain.units[:2]


@pytest.mark.parametrize("layer", [None, "features.0"])
def test_compare_by_shares_equals_the_plain_sweep(cnn, digits, layer):
    def curves(executor):
        evaluator = Evaluator(cnn, digits)
        if layer is None:
            return compare.global_curves(evaluator, "neurons", [0.0, 0.5], executor=executor)
        return compare.layer_curves(evaluator, "neurons", layer, [0.0, 0.5],
                                    executor=executor)

    plain = curves(None)
    shared = curves(InProcess())
    assert shared == plain and list(shared) == list(plain)
    assert shared.errors == plain.errors


def test_ray_option_without_the_extra_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as when absent
    with pytest.raises(ClusterError, match=r"pip install -e '\.\[ray\]'"):
        RayCluster("local")
    assert main(["sensitivity", "--model", "digits-mlp", "--ray", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install -e '.[ray]'" in err


@pytest.mark.parametrize("address", ["", "head", "http://head:10001", "ray://head", "a b:1",
                                     "head:99999", "head:0"])
def test_a_malformed_address_is_refused_in_one_line(address, capsys):
    with pytest.raises(ClusterError, match=r"A Ray address \(--ray\) is local"):
        checked_address(address)
    assert main(["compare", "--model", "digits-mlp", "--ray", address]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_baselines_by_shares_equal_the_plain_curves(cnn, digits):
    """Each (baseline, ratio) fit is a share on a SplitEvaluator; 10000x is out of reach
    and is reported, not raised, alike."""
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.tradeoff import baseline_curves

    def curves(executor):
        heard = []
        found = baseline_curves(SplitEvaluator(cnn, digits), "neurons", (2, 10000),
                                progress=lambda d, t, n: heard.append((d, t, n)),
                                executor=executor)
        return found, heard

    plain, plain_heard = curves(None)
    shared, shared_heard = curves(InProcess())
    assert shared == plain and shared.unreachable == plain.unreachable
    assert set(plain.unreachable) == set(plain) and all(plain.values())
    assert shared_heard == plain_heard and len(plain_heard) == 6


def test_suggestion_verified_by_shares_equals_the_plain_one(mlp, digits):
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.suggest import suggest
    from explorer.decide.targets import Target

    def suggestion(executor):
        judge = SplitEvaluator(mlp, digits)
        scan = sensitivity(judge.calibration, "neurons", "l1", GRID)
        return suggest(scan, judge, Target("flops", 2.0), executor=executor)

    plain = suggestion(None)
    shared = suggestion(InProcess())
    assert shared.to_dict() == plain.to_dict() and [r.name for r in shared.rows] == [
        "suggested", "uniform", "global magnitude"]
    assert all(r.metrics is not None for r in plain.rows)
