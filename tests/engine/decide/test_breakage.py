"""What pruning broke: per class, confusion and flips against independent references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import confusion_matrix

from explorer.data import ValidationSet
from explorer.decide.breakage import Breakage, breakage, compare_plans, predictions
from explorer.errors import DataError, PlanError
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.plan import Plan

PLANS = {
    "digits-cnn": Plan(scope="global", amount=0.9),
    "digits-mlp": Plan(granularity="neurons", criterion="l1", scope="global", amount=0.5),
    "digits-resnet": Plan(sparsity={"layer2.conv1": 0.8, "fc": 0.7}),
}


def reference_predictions(bundle, evaluator, plan, x):
    """The plain path: one full forward with the plan's masked parameters swapped in."""
    return full_forward_logits(bundle, evaluator.masks(plan), x).argmax(1).numpy()


def loop_class_accuracy(y, pred, classes):
    out = []
    for c in range(classes):
        members = [i for i in range(len(y)) if y[i] == c]
        out.append(sum(pred[i] == c for i in members) / len(members) if members
                   else float("nan"))
    return np.array(out)


@pytest.mark.parametrize("name", list(PLANS))
def test_classes_and_confusion_equal_a_plain_forward_and_sklearn(name, request, digits):
    bundle = request.getfixturevalue({"digits-cnn": "cnn", "digits-mlp": "mlp",
                                      "digits-resnet": "resnet"}[name])
    plan = PLANS[name]
    evaluator = Evaluator(bundle, digits)
    evaluator.evaluate(Plan(sparsity={bundle.layer_names[0]: 0.3}))  # some state to resume
    result = breakage(evaluator, plan)

    y = digits.y.numpy()
    dense = reference_predictions(bundle, evaluator, Plan(), digits.x)
    pruned = reference_predictions(bundle, evaluator, plan, digits.x)
    labels = list(range(10))
    np.testing.assert_array_equal(result.confusion_dense, confusion_matrix(y, dense,
                                                                           labels=labels))
    np.testing.assert_array_equal(result.confusion_plan, confusion_matrix(y, pruned,
                                                                          labels=labels))
    np.testing.assert_allclose(result.class_accuracy_dense, loop_class_accuracy(y, dense, 10))
    np.testing.assert_allclose(result.class_accuracy_plan, loop_class_accuracy(y, pruned, 10))
    np.testing.assert_array_equal(result.support, np.bincount(y, minlength=10))
    assert result.flips, "the plan should change some predictions"

    # the overall accuracies are the evaluator's own
    assert result.accuracy_dense == evaluator.evaluate(Plan()).accuracy
    assert result.accuracy_plan == evaluator.evaluate(plan).accuracy
    np.testing.assert_array_equal(predictions(evaluator, plan).numpy(), pruned)


def test_flips_account_for_the_confusion_change(cnn, digits):
    result = breakage(Evaluator(cnn, digits), PLANS["digits-cnn"])
    counts = result.counts()
    assert all(counts[k] > 0 for k in ("broken", "fixed", "changed")), counts

    rebuilt = np.zeros((10, 10), dtype=np.int64)
    for f in result.flips:
        rebuilt[f.label, f.plan] += 1
        rebuilt[f.label, f.dense] -= 1
        assert f.dense != f.plan
        assert (f.kind == "broken") == (f.dense == f.label)
        assert (f.kind == "fixed") == (f.plan == f.label)
        assert digits.y[f.index] == f.label
    np.testing.assert_array_equal(result.confusion_change, rebuilt)
    assert (result.confusion_change.sum(1) == 0).all()

    n = len(digits)
    assert result.accuracy_plan - result.accuracy_dense == pytest.approx(
        (counts["fixed"] - counts["broken"]) / n)
    for c in range(10):
        gained = sum(1 for f in result.flipped("fixed") if f.label == c)
        lost = sum(1 for f in result.flipped("broken") if f.label == c)
        assert result.class_accuracy_change[c] == pytest.approx(
            (gained - lost) / result.support[c])
    assert [f.index for f in result.flips] == sorted(f.index for f in result.flips)


def test_a_dense_plan_breaks_nothing(mlp, digits):
    evaluator = Evaluator(mlp, digits)
    evaluator.evaluate(Plan(sparsity={"fc1": 0.9}))  # the evaluator then resumes elsewhere
    result = breakage(evaluator, Plan())
    assert result.flips == () and result.counts() == {"broken": 0, "fixed": 0, "changed": 0}
    assert not result.confusion_change.any()
    np.testing.assert_array_equal(result.class_accuracy_change, np.zeros(10))


def test_labels_of_an_uploaded_set_can_be_any_subset_of_classes(cnn, digits):
    keep = (digits.y == 2) | (digits.y == 7) | (digits.y == 9)
    subset = ValidationSet(digits.x[keep], digits.y[keep], num_classes=10, name="subset")
    result = breakage(Evaluator(cnn, subset), PLANS["digits-cnn"])
    assert result.samples == int(keep.sum())
    present = [2, 7, 9]
    assert [c for c in range(10) if result.support[c] > 0] == present
    assert np.isnan(result.class_accuracy_plan[[0, 1, 3, 4, 5, 6, 8]]).all()
    full = breakage(Evaluator(cnn, digits), PLANS["digits-cnn"])
    np.testing.assert_allclose(result.class_accuracy_plan[present],
                               full.class_accuracy_plan[present])

    data = json.loads(json.dumps(result.to_dict()))  # plain JSON: NaN became null
    rows = {r["class"]: r for r in data["classes"]}
    assert rows[0] == {"class": 0, "support": 0, "accuracy_dense": None,
                       "accuracy_plan": None, "change": None}
    assert rows[7]["support"] == int((digits.y == 7).sum())
    assert sum(data["flip_counts"].values()) == len(result.flips)
    assert data["confusion_change"] == result.confusion_change.tolist()


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 6).flatmap(lambda c: st.tuples(
    st.just(c), st.lists(st.tuples(*[st.integers(0, c - 1)] * 3), min_size=1, max_size=40))))
def test_from_predictions_matches_a_plain_loop(case):
    classes, rows = case
    y, d, p = (np.array(col) for col in zip(*rows, strict=True))
    result = Breakage.from_predictions(y, d, p, classes)
    np.testing.assert_allclose(result.class_accuracy_dense, loop_class_accuracy(y, d, classes))
    np.testing.assert_allclose(result.class_accuracy_plan, loop_class_accuracy(y, p, classes))
    np.testing.assert_array_equal(
        result.confusion_plan, confusion_matrix(y, p, labels=list(range(classes))))
    assert len(result.flips) == int((d != p).sum())
    assert result.accuracy_plan == float((p == y).mean())


def test_bad_input_is_a_clear_error(cnn, digits):
    with pytest.raises(DataError, match="same length"):
        Breakage.from_predictions([0, 1], [0], [0, 1], 2)
    with pytest.raises(DataError, match="class indices in 0..1"):
        Breakage.from_predictions([0, 2], [0, 1], [0, 1], 2)
    with pytest.raises(DataError, match="no validation data"):
        breakage(Evaluator(cnn, None), Plan())
    with pytest.raises(PlanError, match="nope"):
        breakage(Evaluator(cnn, digits), Plan(sparsity={"nope": 0.5}))
    with pytest.raises(ValueError, match="broken, fixed, changed"):
        Breakage.from_predictions([0], [0], [0], 1).flipped("lost")


def test_compare_plans_side_by_side(cnn, digits):
    a = Plan(sparsity={"features.0": 0.5, "classifier.1": 0.9})
    b = Plan(granularity="neurons", criterion="l2", sparsity={"features.2": 0.5})
    evaluator = Evaluator(cnn, digits)
    result = compare_plans(evaluator, a, b, names=("light", "channels"))

    fresh = Evaluator(cnn, digits)
    metrics_a, metrics_b = fresh.evaluate(a), fresh.evaluate(b)
    assert result.metrics_a == metrics_a and result.metrics_b == metrics_b
    assert [r.layer for r in result.layers] == cnn.layer_names
    row = {r.layer: r for r in result.layers}
    assert row["classifier.1"].sparsity_a == pytest.approx(0.9, abs=1e-3)
    assert row["classifier.3"].sparsity_b == 0.0  # b removes channels, not these weights
    assert row["features.2"].neurons_kept_b == cnn.layer("features.2").neurons // 2
    assert row["features.2"].neurons_kept_a == cnn.layer("features.2").neurons
    params = dict(cnn.model.named_parameters())
    masked = fresh.masks(a).apply(params)["features.0.weight"]
    assert row["features.0"].nonzero_params_a == int(torch.count_nonzero(masked)) + int(
        torch.count_nonzero(params["features.0.bias"]))
    assert sum(r.flops_b for r in result.layers) < sum(r.flops_dense for r in result.layers)

    y = digits.y.numpy()
    for plan, got in ((a, result.class_accuracy_a), (b, result.class_accuracy_b)):
        pruned = reference_predictions(cnn, fresh, plan, digits.x)
        np.testing.assert_allclose(got, loop_class_accuracy(y, pruned, 10))

    data = json.loads(json.dumps(result.to_dict()))
    assert data["a"]["name"] == "light" and data["b"]["plan"] == b.to_dict()
    assert data["a"]["metrics"]["accuracy"] == metrics_a.accuracy
    assert len(data["layers"]) == len(cnn.layers) and len(data["classes"]) == 10


def test_compare_plans_without_data_compares_costs(cnn):
    a, b = Plan(), Plan(scope="global", amount=0.5)
    result = compare_plans(Evaluator(cnn, None), a, b)
    assert result.class_accuracy_a is None and result.to_dict()["classes"] is None
    assert result.metrics_a.accuracy is None
    assert result.metrics_b.flops["effective"] < result.metrics_a.flops["effective"]
