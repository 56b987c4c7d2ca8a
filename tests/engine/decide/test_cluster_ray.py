"""Sweeps on a real local Ray cluster (two workers, 127.0.0.1) against the same sweeps here.

One cluster for the module (starting Ray takes seconds). Every comparison runs torch on one
thread here, as the workers do, so the floats must be identical: the same graph, batches
and scores. Cancel must stop the workers' processes; a worker killed mid-sweep must fail
the sweep with a ClusterError, never return a partial result.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from processes import gone

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from explorer.bundle import export_program  # noqa: E402
from explorer.cli import main  # noqa: E402
from explorer.decide import compare_criteria as compare  # noqa: E402
from explorer.decide.cluster import ClusterError, RayCluster  # noqa: E402
from explorer.decide.sensitivity import DEFAULT_GRID, sensitivity  # noqa: E402
from explorer.evaluator import Evaluator  # noqa: E402
from explorer.load.model_file import load_model  # noqa: E402

GRID = (0.0, 0.3, 0.6, 0.9)


@pytest.fixture(scope="module")
def cluster():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with RayCluster("local") as started:
        yield started
    torch.set_num_threads(threads)


def test_sensitivity_on_ray_is_the_in_process_scan(cluster, cnn, digits):
    here = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID)
    heard = []
    there = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID,
                        executor=cluster, progress=lambda d, t, s: heard.append(d))
    assert there == here and not there.cancelled
    assert len(cluster.worker_pids) == 2 and heard[-1] == len(here.units) * len(GRID)
    assert gone(cluster.worker_pids)  # a finished sweep's workers are stopped too


def test_compare_on_ray_is_the_in_process_sweep(cluster, mlp, digits):
    """Every neuron criterion, the data-driven ones with scores computed here and sent."""
    here = compare.global_curves(Evaluator(mlp, digits), "neurons", [0.0, 0.5, 0.8])
    there = compare.global_curves(Evaluator(mlp, digits), "neurons", [0.0, 0.5, 0.8],
                                  executor=cluster)
    assert there == here and list(there) == list(here) and there.errors == here.errors
    assert len(here) >= 5


def test_cancel_stops_the_workers_and_keeps_what_finished(cluster, cnn, digits):
    here = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID)
    heard = []
    stopped = sensitivity(Evaluator(cnn, digits), "weights", "magnitude", GRID,
                          executor=cluster, progress=lambda d, t, s: heard.append(d),
                          cancelled=lambda: bool(heard))
    assert stopped.cancelled and 1 <= len(stopped.units) < len(here.units)
    assert all(u == here.unit(u.unit) for u in stopped.units)
    assert gone(cluster.worker_pids)


def test_a_worker_killed_mid_sweep_fails_the_sweep(cluster, cnn, digits):
    killed = []

    def kill_one(done, total, so_far):  # a share finished, others are running
        if not killed:
            killed.append(cluster.worker_pids[0])
            os.kill(killed[0], signal.SIGKILL)

    with pytest.raises(ClusterError, match="died mid-sweep"):
        sensitivity(Evaluator(cnn, digits), "weights", "magnitude", DEFAULT_GRID,
                    executor=cluster, progress=kill_one)
    assert killed
    assert gone(cluster.worker_pids)


def test_cli_ray_local_prints_the_in_process_json(cluster, capsys):
    args = ["sensitivity", "--model", "digits-resnet", "--grid", "0,0.6", "--json"]
    assert main(args) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*args, "--ray", "local"]) == 0
    assert json.loads(capsys.readouterr().out) == here
    assert here["bn_recalibrated"]  # the calibration images travel with the recipe


def test_cli_an_address_where_nothing_answers_is_one_line(cluster, capsys):
    assert main(["compare", "--model", "digits-mlp", "--ray", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No Ray cluster answers at '127.0.0.1:9'" in err


def test_a_model_known_only_as_a_graph_sweeps_alike(cluster, cnn, digits, tmp_path):
    """A .pt2 upload (no Python class) travels as its graph module and is exported again."""
    path = tmp_path / "cnn.pt2"
    torch.export.save(export_program(cnn.model, torch.zeros(2, 1, 8, 8)), path)
    upload = load_model(path)
    here = sensitivity(Evaluator(upload, digits), "neurons", "l1", GRID[:2])
    there = sensitivity(Evaluator(upload, digits), "neurons", "l1", GRID[:2],
                        executor=cluster)
    assert there == here and here.units


def test_baselines_on_ray_are_the_in_process_curves(cluster, cnn, digits):
    """A SplitEvaluator travels as both parts over one model and score cache."""
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.tradeoff import baseline_curves

    here = baseline_curves(SplitEvaluator(cnn, digits), "neurons", (2, 4, 10000))
    there = baseline_curves(SplitEvaluator(cnn, digits), "neurons", (2, 4, 10000),
                            executor=cluster)
    assert there == here and there.unreachable == here.unreachable
    assert all(len(points) == 2 for points in here.values()) and len(here.unreachable) == 3
    assert len(cluster.worker_pids) == 2


def test_suggestion_verified_on_ray_is_the_in_process_one(cluster, mlp, digits):
    """The data-driven criterion's scores are computed here and sent, as for a scan."""
    from explorer.decide.held_out import SplitEvaluator
    from explorer.decide.suggest import suggest
    from explorer.decide.targets import Target

    def suggestion(executor):
        judge = SplitEvaluator(mlp, digits)
        scan = sensitivity(judge.calibration, "neurons", "activation", GRID,
                           executor=executor)
        return suggest(scan, judge, Target.parse("drop=0.02"), executor=executor)

    here = suggestion(None)
    assert suggestion(cluster).to_dict() == here.to_dict()
    assert all(row.metrics is not None for row in here.rows)


def test_cli_suggest_ray_local_prints_the_in_process_json(cluster, capsys):
    args = ["suggest", "--model", "digits-mlp", "--target", "flops=2", "--grid", "0,0.5,0.9",
            "--json"]
    assert main(args) == 0
    here = json.loads(capsys.readouterr().out)
    assert main([*args, "--ray", "local"]) == 0
    assert json.loads(capsys.readouterr().out) == here
    assert [row["name"] for row in here["rows"]] == ["suggested", "uniform", "global magnitude"]


def test_cancel_is_heard_while_waiting_for_free_workers(cluster, resnet, digits):
    """A second sweep waits for the CPUs a first one holds (two app sessions, one cluster);
    its Cancel still ends it at once, and the first sweep is untouched."""
    running, stop_first, out = threading.Event(), threading.Event(), {}

    def hold(done, total, so_far) -> None:  # the first sweep's workers stay up meanwhile
        running.set()
        stop_first.wait(60)

    def first() -> None:
        out["first"] = sensitivity(Evaluator(resnet, digits), "weights", "magnitude", GRID,
                                   executor=cluster, progress=hold,
                                   cancelled=stop_first.is_set)

    thread = threading.Thread(target=first)
    thread.start()
    assert running.wait(120)  # the first sweep's workers hold both CPUs
    start = time.monotonic()
    second = sensitivity(Evaluator(resnet, digits), "weights", "magnitude", GRID,
                         executor=cluster, cancelled=lambda: time.monotonic() - start > 1)
    waited = time.monotonic() - start
    assert second.cancelled and second.units == () and waited < 10
    stop_first.set()
    thread.join(120)
    assert out["first"].cancelled and out["first"].units  # stopped by its own cancel only
