"""The plan value and its JSON form: round trips and clear errors."""

from __future__ import annotations

import json

import pytest

from explorer.errors import PlanError
from explorer.plan import Plan


def test_json_round_trip():
    plan = Plan(granularity="neurons", criterion="l2", sparsity={"fc1": 0.5, "fc2": 0.25})
    again = Plan.from_json(plan.to_json())
    assert again == plan and dict(again.sparsity) == {"fc1": 0.5, "fc2": 0.25}
    glob = Plan(scope="global", amount=0.8, layers=("fc1", "fc2"))
    assert Plan.from_json(glob.to_json()) == glob
    assert Plan.from_json(glob.to_json()).layers == ("fc1", "fc2")


def test_design_example_parses():
    text = ('{"version": 1, "granularity": "weights", "criterion": "magnitude", '
            '"scope": "layer", "sparsity": {"features.0": 0.5, "classifier.1": 0.9}}')
    assert Plan.from_json(text).fraction("classifier.1") == 0.9


def test_plans_are_immutable():
    plan = Plan(sparsity={"fc1": 0.5})
    with pytest.raises(TypeError):
        plan.sparsity["fc1"] = 0.9  # type: ignore[index]
    assert plan.with_sparsity("fc1", 0.9).fraction("fc1") == 0.9 and plan.fraction("fc1") == 0.5


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ('{"version": 1, "sparsity": {"fc1": 1.0}}', "in [0, 1)"),
        ('{"version": 1, "sparsity": {"fc1": -0.1}}', "in [0, 1)"),
        ('{"version": 1, "sparsity": {"fc1": "half"}}', "must be a number"),
        ('{"version": 2}', "Unsupported plan version"),
        ('{"version": 1, "granularity": "bits"}', "granularity must be one of"),
        ('{"version": 1, "criterion": "l1"}', "No criterion 'l1' for weights"),
        ('{"version": 1, "scope": "model"}', "scope must be one of"),
        ('{"version": 1, "amount": 2}', "in [0, 1)"),
        ('{"version": 1, "sparsty": {}}', "Unknown plan field"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_plans_get_clear_messages(text, phrase):
    with pytest.raises(PlanError, match=None) as info:
        Plan.from_json(text)
    assert phrase in str(info.value)


def test_unknown_layers_are_named_with_the_valid_ones(cnn):
    with pytest.raises(PlanError) as info:
        Plan(sparsity={"features.1": 0.5}).check(cnn)
    assert "'features.1'" in str(info.value) and "classifier.5" in str(info.value)


def test_coupled_layers_must_share_a_fraction_and_outputs_are_refused(resnet, cnn):
    coupled = {"stem.0": 0.5, "layer1.conv2": 0.25}
    with pytest.raises(PlanError, match="coupled") as info:
        Plan(granularity="neurons", criterion="l1", sparsity=coupled).check(resnet)
    assert "stem.0, layer1.conv2" in str(info.value)
    Plan(granularity="neurons", criterion="l1", sparsity={"layer1.conv2": 0.5}).check(resnet)
    with pytest.raises(PlanError, match="model's output"):
        Plan(granularity="neurons", criterion="l1", sparsity={"fc": 0.5}).check(resnet)
    with pytest.raises(PlanError, match="model's output"):
        Plan(granularity="neurons", criterion="l1", sparsity={"classifier.5": 0.5}).check(cnn)


def test_removes_nothing_only_for_the_dense_plan():
    assert Plan().removes_nothing
    assert Plan(sparsity={"fc1": 0.0}).removes_nothing
    assert Plan(scope="global", amount=0.0, sparsity={"fc1": 0.5}).removes_nothing
    assert not Plan(sparsity={"fc1": 0.0, "fc2": 0.01}).removes_nothing
    assert not Plan(scope="global", amount=0.3).removes_nothing


def test_a_plans_identity_is_one_canonical_key():
    a = Plan(sparsity={"features.0": 0.5, "classifier.1": 0.9})
    b = Plan(sparsity={"classifier.1": 0.9, "features.0": 0.5, "features.2": 0.0})
    assert a.key == b.key and a == b and hash(a) == hash(b)  # order and zeros do not count
    assert len({a, b}) == 1
    assert Plan.from_json(a.to_json()).key == a.key
    assert a.key == json.dumps(json.loads(a.to_json()), sort_keys=True, separators=(",", ":"))
    c = a.with_sparsity("features.0", 0.6)
    assert c != a and c.key != a.key and a.fraction("features.0") == 0.5
    assert "key" not in a.to_dict() and "key=" not in repr(a)


def test_changing_granularity_keeps_fractions_and_couples_groups(resnet):
    """The Prune page's granularity / criterion / scope change, as the engine does it."""
    coupled = next(layers for layers in resnet.units("neurons").values() if len(layers) > 1)
    fixed = next(iter(resnet.unprunable("neurons")))
    weights = Plan(sparsity={coupled[0]: 0.2, coupled[1]: 0.6, fixed: 0.5})
    neurons = weights.with_choices(resnet, "neurons", "magnitude", "layer", merge=False)
    assert neurons.criterion == "l1"  # magnitude is no neuron criterion: the default
    assert {neurons.fraction(n) for n in coupled} == {0.6}  # the group's largest
    assert neurons.fraction(fixed) == 0.0  # its neurons cannot be removed
    neurons.check(resnet)  # a plan the model accepts, not one reset on the next run
    back = neurons.with_choices(resnet, "weights", "l1", "layer", merge=True)
    assert (back.criterion, back.merge) == ("magnitude", False)
    assert all(back.fraction(n) == 0.6 for n in coupled)
    merged = neurons.with_choices(resnet, "neurons", "redundancy", "global", merge=True)
    assert (merged.scope, merged.merge, merged.amount) == ("global", True, neurons.amount)
