"""Label-free fidelity (issue 12, item 5): how close a pruned model's outputs stay to the
dense model's on the same images, checked against an independent numpy/scipy computation
on plain forwards of the dense and the masked model; and data without labels (x alone),
which gets fidelity and no accuracy."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from explorer.data import digits_train, stratified_subset
from explorer.decide.breakage import breakage
from explorer.errors import DataError, PlanError
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.finetune.fixed_masks import check_inputs
from explorer.load.data_file import check_compatible, load_data
from explorer.metrics import fidelity
from explorer.plan import Plan

EXACT = {"agreement": 1.0, "kl": 0.0, "cosine": 1.0}


def plans_for(bundle) -> list[Plan]:
    """A weights plan, a neurons plan and a global plan on the model's own layers."""
    weights = bundle.prunable_layers("weights")
    neurons = bundle.prunable_layers("neurons")
    return [Plan(sparsity={weights[0]: 0.6, weights[-1]: 0.8}),
            Plan(granularity="neurons", criterion="l1", sparsity={neurons[0]: 0.5}),
            Plan(scope="global", amount=0.85)]


def reference(dense: torch.Tensor, pruned: torch.Tensor) -> dict[str, float]:
    """Agreement, mean KL(dense || pruned) and mean cosine, in numpy and scipy."""
    d, p = dense.double().numpy(), pruned.double().numpy()
    cos = (d * p).sum(1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(p, axis=1))
    return {"agreement": float(np.mean(d.argmax(1) == p.argmax(1))),
            "kl": float(rel_entr(softmax(d, 1), softmax(p, 1)).sum(1).mean()),
            "cosine": float(cos.mean())}


def expected(bundle, evaluator: Evaluator, plan: Plan, x: torch.Tensor) -> dict[str, float]:
    """``plan``'s fidelity from plain forwards of the dense and the masked model on ``x``."""
    dense = full_forward_logits(bundle, evaluator.masks(Plan()), x)
    return reference(dense, full_forward_logits(bundle, evaluator.masks(plan), x))


def close(got: dict, want: dict) -> bool:
    return (got["agreement"] == want["agreement"]
            and got["kl"] == pytest.approx(want["kl"], rel=1e-4, abs=1e-6)
            and got["cosine"] == pytest.approx(want["cosine"], rel=1e-6))


def test_the_dense_model_is_exactly_faithful(any_demo, digits):
    first_dense = Evaluator(any_demo, digits)
    assert first_dense.evaluate(Plan()).fidelity == EXACT
    pruned_first = Evaluator(any_demo, digits, memory_budget=0, batch_size=50)
    pruned_first.evaluate(plans_for(any_demo)[0])  # the reference made by a dense forward
    assert pruned_first.evaluate(Plan()).fidelity == EXACT
    assert pruned_first.reference_bytes == len(digits) * any_demo.num_classes * 4


@pytest.mark.parametrize("which", range(3))
def test_a_plans_fidelity_equals_an_independent_computation(any_demo, digits, which):
    evaluator = Evaluator(any_demo, digits)
    plan = plans_for(any_demo)[which]
    got = evaluator.evaluate(plan).fidelity
    assert close(got, expected(any_demo, evaluator, plan, digits.x)), got
    assert got["agreement"] < 1 or got["kl"] > 0  # the plan does change the outputs


def test_resumed_evaluation_equals_a_fresh_one(resnet, digits):
    kept = Evaluator(resnet, digits, batch_size=64)
    for plan in [*plans_for(resnet), plans_for(resnet)[0], Plan()]:
        fresh = Evaluator(resnet, digits, memory_budget=0, batch_size=64)
        assert kept.evaluate(plan).fidelity == fresh.evaluate(plan).fidelity
    assert kept.kept_batches > 0 and kept.last_start > 0  # it did resume


def test_the_estimate_reports_the_subsets_fidelity(cnn, digits):
    subset = stratified_subset(digits, 50)
    evaluator = Evaluator(cnn, digits, estimate_samples=50, batch_size=64)
    for plan in plans_for(cnn):
        heard: list = []
        final = evaluator.evaluate(plan, progress=lambda done, total, m, h=heard: h.append(m))
        assert heard[0].samples == 50
        assert close(heard[0].fidelity, expected(cnn, evaluator, plan, subset.x))
        assert all(m.fidelity is not None for m in heard)
        assert close(final.fidelity, expected(cnn, evaluator, plan, digits.x))
    screened = Evaluator(cnn, digits, estimate_samples=50, batch_size=64)
    plan = plans_for(cnn)[2]
    assert close(screened.estimate(plan).fidelity, expected(cnn, screened, plan, subset.x))


def test_recalibrated_outputs_are_judged_against_the_raw_dense_model(resnet, digits):
    evaluator = Evaluator(resnet, digits, bn_calibration=digits_train())
    assert evaluator.recalibrates and evaluator.evaluate(Plan()).fidelity == EXACT
    plan = plans_for(resnet)[2]
    masks = evaluator.masks(plan)
    params = dict(resnet.model.named_parameters())
    swapped = {**params, **masks.apply(params), **evaluator.bn_statistics(plan)}
    with torch.no_grad():
        pruned = torch.func.functional_call(resnet.model, swapped, (digits.x,))
    dense = full_forward_logits(resnet, evaluator.masks(Plan()), digits.x)
    got = evaluator.evaluate(plan).fidelity
    assert close(got, reference(dense, pruned))
    raw = Evaluator(resnet, digits).evaluate(plan).fidelity
    assert got["agreement"] > raw["agreement"] + 0.1  # recalibration restores the outputs


def test_the_measure_itself():
    dense = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    pruned = torch.tensor([[3.0, 1.0, 0.0], [2.0, 0.0, 1.0]])
    got = fidelity(dense, pruned)
    assert close(got, reference(dense, pruned)) and got["agreement"] == 0.5
    embeddings = fidelity(dense, -dense, classifier=False)
    assert embeddings["agreement"] is None and embeddings["kl"] is None
    assert embeddings["cosine"] == pytest.approx(-1.0)


def test_without_data_there_is_no_fidelity(cnn):
    assert Evaluator(cnn, None).evaluate(plans_for(cnn)[0]).to_dict()["fidelity"] is None


def test_cli_reports_fidelity(cnn, digits, tmp_path):
    plan = plans_for(cnn)[2]
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())

    def run(*extra: str) -> str:
        return subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", "--model",
                               "digits-cnn", "--plan", str(path), *extra],
                              capture_output=True, text=True, timeout=300, check=True).stdout

    out = json.loads(run("--json"))
    assert close(out["fidelity"], expected(cnn, Evaluator(cnn, digits), plan, digits.x))
    f = out["fidelity"]
    assert (f"fidelity to the dense model: top-1 agreement {f['agreement']:.2%}, "
            f"KL {f['kl']:.4f} nats, cosine {f['cosine']:.4f}") in run()
    path.write_text(Plan().to_json())
    assert json.loads(run("--json"))["fidelity"] == EXACT


# ----------------------------------------------------------------- data without labels


def x_only(data, path) -> str:
    """``data``'s images alone, as an .npz (x) or a torch.save dict ({"x": x})."""
    if str(path).endswith(".npz"):
        np.savez(path, x=data.x.numpy())
    else:
        torch.save({"x": data.x}, path)
    return str(path)


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_data_without_labels_gets_fidelity_and_no_accuracy(cnn, digits, tmp_path, suffix):
    data = load_data(x_only(digits, tmp_path / f"x{suffix}"))
    assert not data.labelled and len(data) == len(digits) and torch.equal(data.x, digits.x)
    check_compatible(cnn, data)
    plan = plans_for(cnn)[2]
    got = Evaluator(cnn, data, estimate_samples=0).evaluate(plan)
    assert got.accuracy is None and got.accuracy_ci is None and got.loss is None
    assert got.samples == len(digits)
    assert got.fidelity == Evaluator(cnn, digits, estimate_samples=0).evaluate(plan).fidelity
    assert Evaluator(cnn, data).evaluate(Plan()).fidelity == EXACT
    # the estimate: evenly spread over file order, as one class
    evaluator = Evaluator(cnn, data, estimate_samples=50, batch_size=64)
    heard: list = []
    evaluator.evaluate(plan, progress=lambda done, total, m: heard.append(m))
    subset = stratified_subset(data, 50)
    assert heard[0].samples == 50 and heard[0].accuracy is None
    taken = subset.indices.numpy()
    assert taken[0] == 0 and set(np.diff(taken)) <= {7, 8}  # 360 / 50 = 7.2 apart
    assert close(heard[0].fidelity, expected(cnn, evaluator, plan, subset.x))


def test_what_needs_labels_says_so(cnn, digits, tmp_path):
    data = load_data(x_only(digits, tmp_path / "x.npz"))
    evaluator = Evaluator(cnn, data)
    with pytest.raises(PlanError, match="needs labels"):
        evaluator.evaluate(Plan(granularity="neurons", criterion="taylor",
                                sparsity={"features.2": 0.5}))
    assert evaluator.evaluate(Plan(granularity="neurons", criterion="activation",
                                   sparsity={"features.2": 0.5})).fidelity["agreement"] < 1
    with pytest.raises(DataError, match="no labels"):
        breakage(evaluator, plans_for(cnn)[0])
    with pytest.raises(DataError, match="no labels"):
        check_inputs(cnn, digits_train(), data)
    np.savez(tmp_path / "named.npz", x=digits.x.numpy(), labels=digits.y.numpy())
    with pytest.raises(DataError, match="missing 'y'.*'labels'"):
        load_data(tmp_path / "named.npz")  # labels under another name: not silently dropped


def test_cli_evaluates_data_without_labels(cnn, digits, tmp_path):
    data = x_only(digits, tmp_path / "x.npz")
    plan = plans_for(cnn)[2]
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())

    def run(command: str, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "explorer.cli", command, "--model",
                               "digits-cnn", "--data", data, *extra],
                              capture_output=True, text=True, timeout=300)

    out = json.loads(run("evaluate", "--plan", str(path), "--json").stdout)
    assert out["accuracy"] is None and out["loss"] is None and out["samples"] == len(digits)
    assert close(out["fidelity"], expected(cnn, Evaluator(cnn, digits), plan, digits.x))
    assert "accuracy: unavailable (x.npz has no labels)" in run("evaluate", "--plan",
                                                                 str(path)).stdout
    refused = run("sensitivity", "--json")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "no labels" in refused.stderr
