"""A fixed stratified subset: the quick first answer on a large validation set (issue 11)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from explorer.data import ValidationSet, stratified_subset
from explorer.errors import DataError
from explorer.plan import Plan


def labelled(labels: list[int]) -> ValidationSet:
    y = torch.tensor(labels, dtype=torch.int64)
    return ValidationSet(torch.arange(len(labels), dtype=torch.float32)[:, None], y,
                         int(y.max()) + 1, "labels")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=200), st.integers(1, 250))
def test_each_class_gets_its_share_and_the_subset_is_fixed(labels, samples):
    data = labelled(labels)
    part, again = stratified_subset(data, samples), stratified_subset(data, samples)
    if samples >= len(labels):
        assert part is data and again is data
        return
    assert torch.equal(part.indices, again.indices)  # the same images every time
    assert len(part) == samples
    assert torch.equal(part.indices, part.indices.sort().values)  # file order
    assert torch.equal(part.y, data.y[part.indices]) and torch.equal(part.x, data.x[part.indices])
    for label in set(labels):  # within one image of its exact share
        share = Fraction(labels.count(label) * samples, len(labels))
        got = int((part.y == label).sum())
        assert share - 1 < got < share + 1, (label, got, share)


def test_a_class_is_spread_over_the_file_not_taken_from_its_start():
    part = stratified_subset(labelled([0] * 10 + [1] * 10), 4)
    assert part.indices.tolist() == [0, 5, 10, 15]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10"])
def test_a_bad_number_of_samples_is_refused(bad, digits):
    with pytest.raises(DataError, match="positive whole number"):
        stratified_subset(digits, bad)


def test_cli_evaluates_the_same_subset_the_engine_picks(cnn, digits, tmp_path):
    """The CLI's accuracy on --samples 120 is a plain pruned forward's on the engine's
    subset (torch.nn.utils.prune on a copy: an independent reference)."""
    plan = Plan(sparsity={"features.2": 0.7})
    (tmp_path / "plan.json").write_text(plan.to_json())
    subset = stratified_subset(digits, 120)
    model = copy.deepcopy(cnn.model)
    prune.l1_unstructured(model.get_submodule("features.2"), "weight", amount=0.7)
    with torch.no_grad():
        correct = int((model(subset.x).argmax(1) == subset.y).sum())
    for _ in range(2):  # the same images on every run
        out = subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", "--model",
                              "digits-cnn", "--plan", str(tmp_path / "plan.json"),
                              "--samples", "120", "--json"],
                             capture_output=True, text=True, timeout=300, check=True)
        report = json.loads(out.stdout)
        assert report["samples"] == 120
        assert report["accuracy"] == correct / 120


def test_cli_refuses_samples_without_data():
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", "--model",
                          "resnet18-cifar", "--samples", "10"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no validation data" in out.stderr
