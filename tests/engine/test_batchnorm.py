"""BatchNorm recalibration (issue 16): each pruned plan's running statistics re-estimated on
calibration images, equal to what torch's own BatchNorm computes in training mode with
``momentum=None`` over the same batches, without touching the shared model."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from explorer.batchnorm import (
    CALIBRATION_IMAGES,
    batches,
    calibration_for,
    calibration_images,
    norms_of,
    recalibrated,
)
from explorer.data import digits_train
from explorer.evaluator import Evaluator
from explorer.plan import Plan

PLANS = [
    Plan(granularity="neurons", criterion="l1", scope="global", amount=0.3),
    Plan(granularity="neurons", criterion="random", scope="global", amount=0.5),
    Plan(granularity="weights", criterion="magnitude", scope="global", amount=0.8),
    Plan(granularity="neurons", criterion="l1").with_sparsity("layer2.conv1", 0.5),
]


def torch_recalibrated(bundle, overrides: dict, names: list[str], inputs) -> dict:
    """The independent reference: a copy of the model with the plan's tensors written in,
    the named BatchNorm modules reset and put in training mode with momentum=None (a
    cumulative average), the others in eval mode, run over the same batches."""
    model = copy.deepcopy(bundle.model).eval()
    with torch.no_grad():
        for name, tensor in overrides.items():
            model.get_parameter(name).copy_(tensor)
        for name in names:
            norm = model.get_submodule(name)
            assert isinstance(norm, torch.nn.BatchNorm2d)
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        for x in inputs:
            model(x)
    return {k: v for k, v in model.state_dict().items() if "running_" in k}


@pytest.mark.parametrize("plan", PLANS, ids=lambda p: p.describe() if hasattr(p, "describe")
                         else str(p.key)[:40])
def test_statistics_equal_torchs_batchnorm_in_training_mode(resnet, digits, plan):
    evaluator = Evaluator(resnet, digits)
    masks = evaluator.masks(plan)
    params = resnet.params()
    overrides = {n: masks.value(n, params) for n in {**masks.masks, **masks.updates}}
    inputs = batches(calibration_images(digits_train()))
    program = resnet.program
    norms = norms_of(program)
    assert len(norms) == 9  # every BatchNorm of digits-resnet
    before = {k: v.clone() for k, v in resnet.model.state_dict().items()}
    stats, keys = recalibrated(program, norms, overrides, masks.keys, inputs)
    first = min(program.first_use[p] for p in masks.keys)
    chosen = [n for n in norms if n.node >= first]  # the norms after the first change
    assert set(stats) == {b for n in chosen for b in (n.mean, n.var)} == set(keys)
    reference = torch_recalibrated(resnet, overrides,
                                   [n.mean.rsplit(".", 1)[0] for n in chosen], inputs)
    for name, value in stats.items():
        torch.testing.assert_close(value, reference[name], rtol=0, atol=0)
    for name, value in resnet.model.state_dict().items():  # the shared model is untouched
        assert torch.equal(value, before[name]), name


def test_recalibrated_evaluation_resumes_exactly_and_the_dense_model_is_unchanged(resnet,
                                                                                  digits):
    train = digits_train()
    raw = Evaluator(resnet, digits)
    kept = Evaluator(resnet, digits, bn_calibration=train, batch_size=100)
    fresh = Evaluator(resnet, digits, bn_calibration=train, memory_budget=0)
    assert kept.recalibrates and not raw.recalibrates
    dense = kept.evaluate(Plan())
    assert dense.correct == raw.evaluate(Plan()).correct and dense.bn_recalibrated
    gains = []
    for plan in [*PLANS, PLANS[-1].with_sparsity("layer3.conv1", 0.5), PLANS[-1]]:
        got, want = kept.evaluate(plan), fresh.evaluate(plan)
        assert got.correct == want.correct and got.loss == pytest.approx(want.loss, abs=1e-6)
        assert got.bn_recalibrated and not raw.evaluate(plan).bn_recalibrated
        gains.append(got.accuracy - raw.evaluate(plan).accuracy)
    assert kept.kept_batches > 0 and kept.last_start > 0  # a later change resumed mid-way
    # the recalibration passes resumed from the calibration batches' kept dense states too
    assert kept.kept_calibration_batches == len(batches(calibration_images(train))) == 4
    assert fresh.kept_calibration_batches == 0
    for plan in PLANS:
        got, want = kept.bn_statistics(plan), fresh.bn_statistics(plan)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert max(gains[:3]) > 0.2  # the stale statistics understate pruned plans by far
    # a model without BatchNorm is judged as before
    assert norms_of(Evaluator(resnet, None).bundle.program)


def test_without_batchnorm_or_images_nothing_changes(cnn, digits):
    assert norms_of(cnn.program) == ()
    assert calibration_for(cnn, None, validation_is_digits=True) == (None, None)
    evaluator = Evaluator(cnn, digits, bn_calibration=digits_train())
    assert not evaluator.recalibrates
    plan = PLANS[0]
    assert evaluator.evaluate(plan) == Evaluator(cnn, digits).evaluate(plan)


def test_which_images_calibrate(resnet):
    train = digits_train()
    got, note = calibration_for(resnet, None, validation_is_digits=True)
    assert note is None and torch.equal(got.x, train.x)
    assert calibration_for(resnet, None, validation_is_digits=True, enabled=False) == (None,
                                                                                        None)
    none, note = calibration_for(resnet, None, validation_is_digits=False)
    assert none is None and "no calibration images" in note
    assert len(calibration_images(train)) == CALIBRATION_IMAGES
    assert [len(b) for b in batches(torch.zeros(129, 1))] == [64, 65]  # no batch of one


def _scripted(bundle, path) -> None:
    torch.jit.save(torch.jit.script(copy.deepcopy(bundle.model).eval()), str(path))


def _npz(data, path) -> None:
    np.savez(path, x=data.x.numpy(), y=data.y.numpy())


def test_cli_says_which_accuracy_it_reports(resnet, digits, tmp_path):
    plan = tmp_path / "plan.json"  # weights: an upload's masks equal the demo's
    plan.write_text(PLANS[2].to_json())
    _scripted(resnet, tmp_path / "resnet.pt")
    _npz(digits, tmp_path / "val.npz")
    _npz(digits_train(), tmp_path / "cal.npz")

    def run(*extra) -> tuple[dict, str]:
        out = subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", "--plan",
                              str(plan), "--json", *extra], capture_output=True, text=True,
                             timeout=300, check=True)
        return json.loads(out.stdout), out.stderr

    raw, _ = run("--model", "digits-resnet", "--no-bn-recalibration")
    engine = Evaluator(resnet, digits, bn_calibration=digits_train()).evaluate(PLANS[2])
    assert not raw["bn_recalibrated"] and raw["accuracy"] < engine.accuracy - 0.1
    assert raw["correct"] == Evaluator(resnet, digits).evaluate(PLANS[2]).correct
    upload = ("--model", str(tmp_path / "resnet.pt"), "--data", str(tmp_path / "val.npz"))
    silent, stderr = run(*upload)  # no calibration file: raw, and it says so
    assert not silent["bn_recalibrated"] and silent["correct"] == raw["correct"]
    assert "no calibration images" in silent["bn_note"] and "no calibration images" in stderr
    given, stderr = run(*upload, "--calibration-data", str(tmp_path / "cal.npz"))
    assert given["bn_recalibrated"] and given["correct"] == engine.correct  # the demo's rule
    assert given["bn_note"] is None and stderr == ""
    bad = subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", *upload,
                          "--calibration-data", str(tmp_path / "plan.json")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_exports_carry_the_statistics_the_plan_was_judged_with(resnet, digits):
    """A neuron plan's exports (pruned weights, shrunk model) reloaded as a user would and
    evaluated as they are give the recalibrated accuracy the app showed, not the raw one."""
    from explorer.export.outputs import export_files, reload_metrics

    plan = PLANS[0]
    evaluator = Evaluator(resnet, digits, bn_calibration=digits_train())
    shown = evaluator.evaluate(plan)
    raw = Evaluator(resnet, digits).evaluate(plan)
    assert shown.correct > raw.correct + 100
    stats = evaluator.bn_statistics(plan)
    assert stats and all(v.device.type == "cpu" for v in stats.values())
    made = export_files(resnet, plan, evaluator)
    assert not made.errors
    for name, metrics in reload_metrics(made.files, digits).items():
        assert metrics.correct == shown.correct, name
        assert metrics.loss == pytest.approx(shown.loss, abs=1e-5), name
    assert Evaluator(resnet, digits).bn_statistics(plan) == {}  # raw: nothing to carry


def test_a_slow_model_recalibrates_on_fewer_images(resnet):
    """The pass before a slider's first estimate costs about what the estimate does."""
    from explorer.batchnorm import MIN_CALIBRATION_IMAGES
    from explorer.evaluator import calibration_size, estimate_size
    from explorer.load.demos import load_demo

    assert calibration_size(resnet) == CALIBRATION_IMAGES  # the digits demos: all 256
    big = load_demo("resnet18-cifar")  # 1.1 GFLOPs per image
    assert MIN_CALIBRATION_IMAGES <= calibration_size(big) == estimate_size(big, 10**6) < 64


def test_judging_names_how_plans_are_judged(resnet, cnn, digits):
    """Cached results key on it: raw and recalibrated (and recalibrated on other images)
    measure the same plan differently, so they must never share an entry."""
    train = digits_train()
    raw = Evaluator(resnet, digits).judging
    on_train = Evaluator(resnet, digits, bn_calibration=train).judging
    on_other = Evaluator(resnet, digits, bn_calibration=digits).judging
    assert raw == "raw" and on_train.startswith("bn:")
    assert len({raw, on_train, on_other}) == 3
    assert Evaluator(resnet, digits, bn_calibration=train).judging == on_train  # stable
    assert Evaluator(cnn, digits, bn_calibration=train).judging == "raw"  # no BatchNorm
