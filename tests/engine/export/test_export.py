"""Exports loaded back give the numbers the app shows for the plan they came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from explorer.evaluator import Evaluator
from explorer.export.outputs import export_all
from explorer.load.model_file import load_model
from explorer.plan import Plan

ROOT = Path(__file__).resolve().parents[3]

CNN_WEIGHTS = Plan(sparsity={"features.0": 0.5, "classifier.1": 0.9})
CNN_GLOBAL = Plan(scope="global", amount=0.8)
CNN_RANDOM_WEIGHTS = Plan(criterion="random", sparsity={"features.2": 0.6})
MLP_NEURONS = Plan(granularity="neurons", criterion="l1", sparsity={"fc1": 0.5, "fc2": 0.25})
CNN_NEURONS = Plan(granularity="neurons", criterion="l1", sparsity={"features.2": 0.5})
RESNET_NEURONS = Plan(granularity="neurons", criterion="l1", scope="global", amount=0.5)


def _bundle(request, name):
    return request.getfixturevalue({"digits-cnn": "cnn", "digits-resnet": "resnet",
                                    "digits-mlp": "mlp"}[name])


@pytest.fixture(scope="module")
def mlp_merge(mlp):
    return Plan(granularity="neurons", criterion="redundancy", merge=True,
                sparsity={la.name: 0.3 for g in mlp.group_names for la in mlp.group(g)})


@pytest.mark.parametrize(("name", "plan"), [
    ("digits-cnn", CNN_WEIGHTS), ("digits-mlp", MLP_NEURONS), ("digits-cnn", CNN_GLOBAL),
    ("digits-mlp", None),
])
def test_pruned_weights_give_the_shown_metrics(request, digits, tmp_path, name, plan):
    bundle = _bundle(request, name)
    plan = plan or request.getfixturevalue("mlp_merge")
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    evaluator = Evaluator(bundle, digits)
    shown = evaluator.evaluate(plan)
    written = export_all(bundle, plan, tmp_path, evaluator)
    after = bundle.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), "shared model written"

    loaded = load_model(written["pruned.safetensors"])
    assert loaded.card["architecture"] == name
    dense = Evaluator(loaded, digits).evaluate(Plan())
    assert dense.accuracy == shown.accuracy
    assert dense.loss == pytest.approx(shown.loss, rel=1e-5, abs=1e-6)
    assert dense.nonzero_params == shown.nonzero_params
    assert set(load_file(str(written["pruned.safetensors"]))) == set(before)  # buffers too
    assert json.loads(written["plan.json"].read_text()) == plan.to_dict()


@pytest.mark.parametrize(("name", "plan"), [
    ("digits-cnn", CNN_NEURONS), ("digits-resnet", RESNET_NEURONS),
])
def test_shrunk_program_gives_the_shown_metrics(request, digits, tmp_path, name, plan):
    bundle = _bundle(request, name)
    evaluator = Evaluator(bundle, digits)
    shown = evaluator.evaluate(plan)
    written = export_all(bundle, plan, tmp_path, evaluator)

    small = load_model(written["shrunk.pt2"])
    dense = Evaluator(small, digits).evaluate(Plan())
    assert dense.accuracy == shown.accuracy
    assert dense.loss == pytest.approx(shown.loss, rel=1e-4, abs=1e-5)
    assert small.param_count * 4 == shown.size_bytes["structured"]
    assert dense.flops["dense"] == shown.flops["effective"]
    assert small.param_count < bundle.param_count


def test_weight_plans_write_no_shrunk_model(cnn, tmp_path):
    written = export_all(cnn, CNN_WEIGHTS, tmp_path)
    assert "shrunk.pt2" not in written and not (tmp_path / "shrunk.pt2").exists()
    assert "masks.safetensors" not in written  # torch's own L1 selection reproduces it


@pytest.mark.parametrize(("name", "plan", "mode"), [
    ("digits-cnn", CNN_WEIGHTS, "l1_unstructured"),
    ("digits-cnn", CNN_GLOBAL, "global_unstructured"),
    ("digits-cnn", CNN_RANDOM_WEIGHTS, "custom_from_mask"),
    ("digits-mlp", None, "custom_from_mask"),
])
def test_apply_plan_script_reproduces_the_pruned_weights(request, tmp_path, name, plan, mode):
    bundle = _bundle(request, name)
    plan = plan or request.getfixturevalue("mlp_merge")
    written = export_all(bundle, plan, tmp_path / "export")
    script = written["apply_plan.py"]
    assert mode in script.read_text()
    out = tmp_path / "by_script.safetensors"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "export"), "--out",
                          str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    got, want = load_file(str(out)), load_file(str(written["pruned.safetensors"]))
    assert set(got) == set(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


@pytest.mark.parametrize(("name", "plan"), [
    ("digits-cnn", CNN_WEIGHTS), ("digits-mlp", MLP_NEURONS), ("digits-cnn", CNN_NEURONS),
])
def test_pruning_ratio_dict_matches_the_plan(request, tmp_path, name, plan):
    bundle = _bundle(request, name)
    written = export_all(bundle, plan, tmp_path)
    data = json.loads(written["pruning_ratio_dict.json"].read_text())
    ratios = data["pruning_ratio_dict"]
    assert set(ratios) == {n for n, f in plan.sparsity.items() if f > 0}
    for layer, fraction in plan.sparsity.items():
        la = bundle.layer(layer)
        n = la.neurons if plan.granularity == "neurons" else torch.Size(la.weight_shape).numel()
        assert ratios[layer] == pytest.approx(round(fraction * n) / n)
        assert abs(ratios[layer] - fraction) <= 0.5 / n + 1e-12
    assert "MetaPruner" in data["how_to_use"] and "pruning_ratio_dict" in data["how_to_use"]
    if plan.granularity == "neurons":  # Torch-Pruning takes the file as the README says
        _check_torch_pruning_takes(bundle, ratios)


def _check_torch_pruning_takes(bundle, ratios):
    import copy

    import torch_pruning as tp

    model = copy.deepcopy(bundle.model)
    pruner = tp.pruner.MetaPruner(
        model, torch.zeros((1, *bundle.input_shape)),
        importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.0,
        pruning_ratio_dict={model.get_submodule(n): r for n, r in ratios.items()})
    pruner.step()
    for la in bundle.layers:
        module = model.get_submodule(la.name)
        kept = module.weight.shape[0]
        assert kept == la.neurons - round(ratios.get(la.name, 0.0) * la.neurons), la.name


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


def test_cli_writes_every_file(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(CNN_NEURONS.to_json())
    out = run_cli("export", "--model", "digits-cnn", "--plan", str(plan), "--out",
                  str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    names = {"plan.json", "pruned.safetensors", "shrunk.pt2", "apply_plan.py",
             "masks.safetensors", "pruning_ratio_dict.json"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == names
    assert all(n in out.stdout for n in names)


def test_cli_bad_plan_is_one_line(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(Plan(sparsity={"no.such.layer": 0.5}).to_json())
    out = run_cli("export", "--model", "digits-cnn", "--plan", str(plan), "--out",
                  str(tmp_path / "out"))
    assert out.returncode == 2
    assert "no.such.layer" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
