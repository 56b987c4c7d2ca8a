"""The CLI as a user runs it: a real subprocess, JSON out, the same numbers as the engine."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from explorer.evaluator import Evaluator
from explorer.plan import Plan


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "explorer.cli", *args], capture_output=True, text=True,
        timeout=300,
    )


def test_models_lists_the_zoo():
    out = run_cli("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"digits-mlp", "digits-cnn", "digits-resnet", "resnet18",
                         "resnet18-cifar", "minilm"}
    assert rows["minilm"]["pretrained"] and "installed" in rows["minilm"]
    assert rows["digits-mlp"]["validation_accuracy"] >= 0.96
    trained = [r for r in rows.values() if not r["architecture_only"] and not r.get("pretrained")]
    assert len(trained) == 3 and all(r["validation_accuracy"] >= 0.95 for r in trained)


@pytest.mark.parametrize(
    "plan",
    [
        Plan(sparsity={"features.0": 0.5, "classifier.1": 0.9}),
        Plan(granularity="neurons", criterion="l1", sparsity={"features.2": 0.5}),
        Plan(scope="global", amount=0.8),
    ],
)
def test_evaluate_json_equals_the_engine(cnn, digits, tmp_path, plan):
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    out = run_cli("evaluate", "--model", "digits-cnn", "--plan", str(path), "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = json.loads(json.dumps(Evaluator(cnn, digits).evaluate(plan).to_dict()))
    for key in ("accuracy", "accuracy_ci", "loss", "params", "nonzero_params", "size_bytes",
                "flops", "layers"):
        assert got[key] == want[key], key
    assert [la["name"] for la in got["layers"]] == cnn.layer_names
    assert set(got["layers"][0]) >= {"name", "params", "nonzero_params", "sparsity",
                                     "flops_dense", "flops_effective"}
    if plan.granularity == "neurons":
        assert "structured" in got["size_bytes"]


def test_evaluate_with_data_file(tmp_path, digits):
    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x.numpy()[:100], y=digits.y.numpy()[:100])
    out = run_cli("evaluate", "--model", "digits-mlp", "--data", str(data), "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["samples"] == 100


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["evaluate", "--model", "no-such-model"], "neither a demo model"),
        (["evaluate", "--model", "digits-cnn", "--plan", "missing.json"], "Cannot read the plan"),
    ],
)
def test_errors_are_one_line_without_traceback(args, phrase):
    out = run_cli(*args)
    assert out.returncode == 2
    assert phrase in out.stderr and "Traceback" not in out.stderr


def test_bad_plan_and_bad_data_are_clear(tmp_path, digits):
    plan = tmp_path / "plan.json"
    plan.write_text('{"version": 1, "sparsity": {"conv9": 0.5}}')
    out = run_cli("evaluate", "--model", "digits-cnn", "--plan", str(plan))
    assert out.returncode == 2 and "'conv9'" in out.stderr and "Traceback" not in out.stderr
    data = tmp_path / "bad.npz"
    np.savez(data, x=digits.x.numpy().reshape(360, 64), y=digits.y.numpy())
    out = run_cli("evaluate", "--model", "digits-cnn", "--data", str(data))
    assert out.returncode == 2 and "(1, 8, 8)" in out.stderr and "Traceback" not in out.stderr
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    out = run_cli("evaluate", "--model", "digits-cnn", "--data", str(empty))
    assert out.returncode == 2 and "empty" in out.stderr.lower()
    assert "Traceback" not in out.stderr


def test_layers_lists_coupled_groups_and_what_cannot_be_pruned():
    out = run_cli("layers", "--model", "digits-resnet", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["layers"]}
    assert rows["stem.0"]["neuron_group"] == ["stem.0", "layer1.conv2"]
    assert rows["layer1.conv1"]["neuron_group"] == ["layer1.conv1"]
    assert not rows["fc"]["neurons_removable"]
    assert "model's output" in rows["fc"]["reason"]
    text = run_cli("layers", "--model", "digits-resnet").stdout
    assert "neurons fixed: its output is the model's output" in text
