"""``pruning-explorer finetune`` as a user runs it: a real subprocess, then ``evaluate`` on the
file it wrote must report the accuracy it printed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn.utils import prune

from explorer.cli import main
from explorer.data import digits_train
from explorer.plan import Plan

PLAN = Plan(sparsity={"fc1": 0.85, "fc2": 0.8})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(PLAN.to_json())
    return str(path)


def test_finetune_round_trip_through_evaluate(mlp, tmp_path, plan_file):
    out = tmp_path / "tuned.safetensors"
    done = run_cli("finetune", "--model", "digits-mlp", "--plan", plan_file, "--epochs", "3",
                   "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [e["epoch"] for e in report["epochs"]] == [1, 2, 3]
    assert {k: report[k] for k in ("epochs_per_run", "lr", "iterative_steps", "schedule")} == {
        "epochs_per_run": 3, "lr": 1e-3, "iterative_steps": None, "schedule": None}
    assert report["epochs"][-1]["val_accuracy"] == report["finetuned"]["accuracy"]
    assert report["pruned"]["accuracy"] < report["dense"]["accuracy"]

    evaluated = run_cli("evaluate", "--model", str(out), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    again = json.loads(evaluated.stdout)
    for key in ("accuracy", "loss", "nonzero_params", "params"):
        assert again[key] == pytest.approx(report["finetuned"][key], rel=1e-6), key

    weights = load_file(str(out))  # the zeros are where torch's own L1 pruning puts them
    model = copy.deepcopy(mlp.model)
    for name, amount in PLAN.sparsity.items():
        prune.l1_unstructured(model.get_submodule(name), "weight", amount=amount)
        removed = ~model.get_submodule(name).weight_mask.bool()
        assert torch.count_nonzero(weights[f"{name}.weight"][removed]) == 0, name


def test_iterative_with_own_training_data_as_text(tmp_path, plan_file):
    train = digits_train()
    data = tmp_path / "train.npz"
    np.savez(data, x=train.x.numpy()[:600], y=train.y.numpy()[:600])
    out = tmp_path / "tuned.pt2"
    done = run_cli("finetune", "--model", "digits-mlp", "--plan", plan_file, "--epochs", "2",
                   "--iterative", "3", "--schedule", "linear", "--train-data", str(data),
                   "--out", str(out))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines if ln.startswith("epoch")] == [
        f"epoch {e}/6 (step {(e + 1) // 2})" for e in range(1, 7)]
    summary = next(ln for ln in lines if ln.startswith("accuracy:"))
    tuned = summary.split("fine-tuned ")[1].split("%")[0]
    evaluated = run_cli("evaluate", "--model", str(out))
    assert evaluated.returncode == 0, evaluated.stderr
    assert f"accuracy {tuned}%" in evaluated.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--out", "x.onnx"], "use .safetensors"),
    (["--out", "x.pt2", "--train-data", "VAL"], "validation samples are also in the training"),
])
def test_bad_settings_exit_2_with_the_reason(tmp_path, plan_file, digits, capsys, args,
                                             message):
    val = tmp_path / "val.npz"
    np.savez(val, x=digits.x.numpy(), y=digits.y.numpy())
    args = [str(val) if a == "VAL" else str(tmp_path / a) if a.startswith("x.") else a
            for a in args]
    code = main(["finetune", "--model", "digits-mlp", "--plan", plan_file, "--epochs", "1",
                 *args])  # in-process: the same main() the script calls, no startup cost
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not list(tmp_path.glob("x.*"))  # refused before any training or writing
