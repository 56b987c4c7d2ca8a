"""``pruning-explorer broke``: the engine's breakage as JSON, errors as one line and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
from sklearn.metrics import confusion_matrix

from explorer.cli import main
from explorer.decide.breakage import breakage
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.plan import Plan

PLAN = Plan(granularity="neurons", criterion="l1", sparsity={"features.2": 0.6})


def test_json_equals_the_engine_and_an_independent_forward(cnn, digits, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(PLAN.to_json())
    out = subprocess.run(
        [sys.executable, "-m", "explorer.cli", "broke", "--model", "digits-cnn", "--plan",
         str(path), "--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    evaluator = Evaluator(cnn, digits)
    want = json.loads(json.dumps(breakage(evaluator, PLAN).to_dict()))
    assert got["model"] == "digits-cnn" and got["plan"] == PLAN.to_dict()
    assert {k: v for k, v in got.items() if k not in ("model", "plan")} == want

    pruned = full_forward_logits(cnn, evaluator.masks(PLAN), digits.x).argmax(1).numpy()
    y = digits.y.numpy()
    assert got["confusion_plan"] == confusion_matrix(y, pruned).tolist()
    assert got["accuracy_plan"] == Evaluator(cnn, digits).evaluate(PLAN).accuracy
    broken = [r["index"] for r in got["flips"]["broken"]]
    assert broken and all(pruned[i] != y[i] for i in broken)
    assert got["flip_counts"]["broken"] == len(broken)


def test_text_output_and_data_file(cnn, digits, tmp_path, capsys):
    keep = (digits.y >= 5).numpy()  # an uploaded set with classes 5..9 only
    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x.numpy()[keep], y=digits.y.numpy()[keep])
    assert main(["broke", "--model", "digits-cnn", "--data", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model digits-cnn: accuracy ")
    assert lines[0].endswith(f"on {keep.sum()} images")
    classes = [int(line.split()[0]) for line in lines[2:] if line.split()[0].isdigit()]
    assert classes == [5, 6, 7, 8, 9]  # classes without images are left out
    assert lines[-3:] == ["broken: 0", "fixed: 0", "changed: 0"]  # the dense plan


def test_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["broke", "--model", "resnet18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 'resnet18' has no validation data") and "--data" in err
    bad = tmp_path / "plan.json"
    bad.write_text(json.dumps({"version": 1, "sparsity": {"nope": 0.5}}))
    assert main(["broke", "--model", "digits-mlp", "--plan", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope'" in err and "fc1" in err
