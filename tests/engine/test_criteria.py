"""Criteria against independent computations: hooks, autograd, brute-force loops, tiny models."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.bundle import bundle_from_module
from explorer.criteria import REGISTRY, criterion
from explorer.criteria.base import ScoreContext
from explorer.data import ValidationSet
from explorer.errors import PlanError
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.masks import ScoreCache, masks_for
from explorer.plan import Plan
from explorer.ui.urls import plan_from_query, plan_to_query

NEURON_CRITERIA = [name for g, name in REGISTRY if g == "neurons"]
DATA_CRITERIA = [("neurons", "activation"), ("neurons", "apoz"), ("neurons", "taylor"),
                 ("weights", "taylor")]

# The module whose output is each layer's activation; a layer not listed is its own module
# (no ReLU of its own: residual convolutions before BatchNorm + add, downsample convs).
RELU_OF = {
    "digits-mlp": {"fc1": "relu1", "fc2": "relu2"},
    "digits-cnn": {"features.0": "features.1", "features.2": "features.3",
                   "classifier.1": "classifier.2", "classifier.3": "classifier.4"},
    "digits-resnet": {"stem.0": "stem.2", "layer1.conv1": "layer1.relu1",
                      "layer2.conv1": "layer2.relu1", "layer3.conv1": "layer3.relu1"},
}


def _hooked_outputs(model: nn.Module, modules: dict[str, str], run) -> dict[str, torch.Tensor]:
    """Outputs of ``modules`` (layer -> module name) while ``run()`` runs; hooks removed."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for layer, module in modules.items():
        def hook(_m, _inp, out, layer=layer):
            seen[layer] = out
        handles.append(model.get_submodule(module).register_forward_hook(hook))
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


# Where the Taylor product is taken: after a ReLU (equal to the layer's output times its
# gradient) or at the BatchNorm right after the layer (what removing the channel zeroes).
TAYLOR_AT = {
    "digits-mlp": RELU_OF["digits-mlp"],
    "digits-cnn": RELU_OF["digits-cnn"],
    "digits-resnet": {"stem.0": "stem.1", **{
        f"layer{k}.{conv}": f"layer{k}.{bn}" for k in (1, 2, 3)
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2"), ("downsample.0", "downsample.1"))
        if k > 1 or conv != "downsample.0"}},
}


def _modules(bundle, where: dict = RELU_OF) -> dict[str, str]:
    at = where[bundle.name]
    return {la.name: at.get(la.name, la.name) for la in bundle.layers if la.neuron_prunable}


def _per_neuron(value: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) or (N, F) -> (N, neurons, positions)."""
    return value.reshape(value.shape[0], value.shape[1], -1)


def test_activation_and_apoz_equal_relu_forward_hooks(any_demo, digits):
    with torch.no_grad():
        outs = _hooked_outputs(any_demo.model, _modules(any_demo), lambda: any_demo.model(digits.x))
    ctx = ScoreContext(any_demo, digits)
    for layer_name, out in outs.items():
        acts = _per_neuron(out).double()
        layer = any_demo.layer(layer_name)
        mean_abs = criterion("neurons", "activation").score(layer, ctx)
        assert torch.allclose(mean_abs.double(), acts.abs().mean((0, 2)), rtol=1e-4, atol=1e-6)
        zeros = (acts == 0).double().mean((0, 2))
        apoz = criterion("neurons", "apoz").score(layer, ctx).double()
        # a value within rounding of 0 may land on either side in the two paths
        assert torch.allclose(1 - apoz, zeros, atol=2 / acts[:, 0].numel()), layer_name
    assert set(outs) >= set(RELU_OF[any_demo.name])


def test_neuron_taylor_equals_hand_written_activation_gradients(any_demo, digits):
    model = copy.deepcopy(any_demo.model)  # backward() writes .grad: not on the shared model
    kept: dict[str, torch.Tensor] = {}
    handles = []
    for layer, module in _modules(any_demo, TAYLOR_AT).items():
        def hook(_m, _inp, out, layer=layer):
            out.retain_grad()
            kept[layer] = out
        handles.append(model.get_submodule(module).register_forward_hook(hook))
    try:
        F.cross_entropy(model(digits.x), digits.y, reduction="sum").backward()
    finally:
        for handle in handles:
            handle.remove()
    ctx = ScoreContext(any_demo, digits)
    for layer_name, a in kept.items():
        # sum over positions of a * dL_n/da, |.|, mean over samples (L summed: dL/da_n = dL_n/da_n)
        expected = _per_neuron(a * a.grad).sum(2).abs().mean(0)
        got = criterion("neurons", "taylor").score(any_demo.layer(layer_name), ctx)
        assert got.shape == (any_demo.layer(layer_name).neurons,)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7), layer_name


def test_neuron_taylor_of_a_graph_only_upload_equals_the_modules(any_demo, digits, tmp_path):
    """The same model uploaded as TorchScript (no Python definition: the graph path,
    the BatchNorm after a convolution included) scores every prunable layer as the module
    path scores the demo."""
    from explorer.load.model_file import load_model

    path = tmp_path / "model.pt"
    torch.jit.script(copy.deepcopy(any_demo.model).eval()).save(str(path))
    upload = load_model(path, input_shape=any_demo.input_shape)
    assert not isinstance(upload.model, type(any_demo.model))
    up_ctx, demo_ctx = ScoreContext(upload, digits), ScoreContext(any_demo, digits)
    taylor = criterion("neurons", "taylor")
    for name in any_demo.prunable_layers("neurons"):
        got = taylor.score(upload.layer(name), up_ctx)
        expected = taylor.score(any_demo.layer(name), demo_ctx)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-7), name


def test_weight_taylor_equals_autograd_on_a_copy(any_demo, digits):
    model = copy.deepcopy(any_demo.model)
    F.cross_entropy(model(digits.x), digits.y, reduction="sum").backward()
    params = dict(model.named_parameters())
    ctx = ScoreContext(any_demo, digits)
    for layer in any_demo.layers:
        w = params[layer.weight]
        got = criterion("weights", "taylor").score(layer, ctx)
        assert got.shape == w.shape
        assert torch.allclose(got, (w * w.grad).abs().detach(), rtol=1e-4, atol=1e-7), layer.name


def test_gradient_criteria_leave_the_shared_model_alone(cnn, digits):
    before = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    ctx = ScoreContext(cnn, digits)
    for layer in cnn.layers[:2]:
        criterion("neurons", "taylor").score(layer, ctx)
        criterion("weights", "taylor").score(layer, ctx)
    assert not cnn.model.training
    assert all(p.grad is None for p in cnn.model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in cnn.model.modules())
    for k, v in cnn.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _brute_force_redundancy(w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    rows = w.detach().double().flatten(1)
    if b is not None:
        rows = torch.cat([rows, b.detach().double()[:, None]], 1)
    n = rows.shape[0]
    norms = [float(torch.sqrt((rows[i] * rows[i]).sum())) for i in range(n)]
    scores = []
    for i in range(n):
        best = -1.0
        for j in range(n):
            if j != i and (norms[j] > norms[i] or (norms[j] == norms[i] and j < i)):
                dot = float((rows[i] * rows[j]).sum())
                best = max(best, dot / (norms[i] * norms[j]) if norms[i] * norms[j] else 0.0)
        scores.append(1 - best)
    return torch.tensor(scores, dtype=torch.float64)


def test_redundancy_equals_brute_force_pairwise_cosines(mlp):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 2))
    with torch.no_grad():  # an exact duplicate (a tie of norms), a scaled copy, a zero row
        model[0].weight[3] = model[0].weight[1]
        model[0].bias[3] = model[0].bias[1]
        model[0].weight[5] = 3 * model[0].weight[2]
        model[0].bias[5] = 3 * model[0].bias[2]
        model[0].weight[6] = 0
        model[0].bias[6] = 0
    tiny = bundle_from_module(model, "tiny", (4,))
    got = criterion("neurons", "redundancy").score(tiny.layer("0"), ScoreContext(tiny))
    expected = _brute_force_redundancy(model[0].weight, model[0].bias)
    assert torch.allclose(got.double(), expected, atol=1e-6)
    assert got[3] < 1e-6 and got[1] > 1e-3  # of two duplicates the later one goes first
    assert got[2] < 1e-6 and got[5] > 1e-3  # the weaker of two parallel neurons goes first
    for name in ("fc1", "fc2"):
        params = mlp.params()
        layer = mlp.layer(name)
        got = criterion("neurons", "redundancy").score(layer, ScoreContext(mlp))
        expected = _brute_force_redundancy(params[layer.weight], params[layer.bias])
        assert torch.allclose(got.double(), expected, atol=1e-5), name


@pytest.mark.parametrize(("granularity", "name"), DATA_CRITERIA)
def test_data_criteria_without_data_say_so(cnn, granularity, name):
    with pytest.raises(PlanError, match="needs validation data"):
        criterion(granularity, name).score(cnn.layers[0], ScoreContext(cnn))
    plan = Plan(granularity=granularity, criterion=name, sparsity={"features.0": 0.5})
    with pytest.raises(PlanError, match="needs validation data"):
        masks_for(cnn, plan, ScoreCache(cnn))


def test_every_neuron_criterion_on_every_demo(any_demo, digits):
    evaluator = Evaluator(any_demo, digits)
    sparsity = {la.name: 0.3 for la in any_demo.layers if la.neuron_prunable}
    for name in NEURON_CRITERIA:
        plan = Plan(granularity="neurons", criterion=name, sparsity=sparsity)
        metrics = evaluator.evaluate(plan)
        assert 0 <= metrics.accuracy <= 1, name
        kept = {la.name: la.neurons_kept for la in metrics.layers}
        for layer in any_demo.layers:
            expected = layer.neurons - round(0.3 * layer.neurons) if layer.neuron_prunable \
                else layer.neurons
            assert kept[layer.name] == expected, (name, layer.name)
        masks = evaluator.masks(plan)
        logits = evaluator.logits(masks)
        assert torch.allclose(logits, full_forward_logits(any_demo, masks, digits.x), atol=1e-4)


def _twins(factor: float) -> tuple[nn.Module, torch.Tensor]:
    """A 5-6-3 ReLU net whose neuron 1's incoming weights and bias are ``factor`` x neuron 0's."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    with torch.no_grad():
        model[0].bias[0] = 1.0  # neuron 0 (and so 1) fires on most inputs
        model[0].weight[1] = factor * model[0].weight[0]
        model[0].bias[1] = factor * model[0].bias[0]
    return model, torch.randn(64, 5)


@pytest.mark.parametrize("factor", [2.0, 0.5])
def test_merging_an_exact_scaled_twin_keeps_the_outputs(factor):
    model, x = _twins(factor)
    bundle = bundle_from_module(model, "twins", (5,))
    data = ValidationSet(x, torch.zeros(len(x), dtype=torch.long), 3)
    with torch.no_grad():
        dense = model(x)
    weaker = 0 if factor > 1 else 1  # the criterion removes the smaller-norm duplicate
    merged_plan = Plan(granularity="neurons", criterion="redundancy", sparsity={"0": 1 / 6},
                       merge=True)
    dropped_plan = Plan(granularity="neurons", criterion="redundancy", sparsity={"0": 1 / 6})
    cache, evaluator = ScoreCache(bundle), Evaluator(bundle, data)
    merged, dropped = masks_for(bundle, merged_plan, cache), masks_for(bundle, dropped_plan, cache)
    assert merged.removed_neurons["0"].tolist() == [weaker]
    assert torch.allclose(full_forward_logits(bundle, merged, x), dense, atol=1e-5)
    assert torch.allclose(evaluator.logits(merged), dense, atol=1e-5)
    assert not torch.allclose(full_forward_logits(bundle, dropped, x), dense, atol=1e-2)
    assert not torch.allclose(evaluator.logits(dropped), dense, atol=1e-2)
    assert torch.equal(model[2].weight, bundle.model[2].weight)  # the shared model unchanged


def test_costs_count_the_merged_values():
    """Neuron 0 = 0.5 x neuron 1 merges with scale 0.5; its outgoing column -2 x neuron 1's
    then cancels the twin's column: 3 more zeros than when neuron 0 is dropped."""
    model, _ = _twins(2.0)
    with torch.no_grad():
        model[2].weight[:, 0] = -2 * model[2].weight[:, 1]
    bundle = bundle_from_module(model, "twins", (5,))
    plan = Plan(granularity="neurons", criterion="redundancy", sparsity={"0": 1 / 6})
    x = torch.randn(8, 5)
    data = ValidationSet(x, torch.zeros(8, dtype=torch.long), 3)
    drop = Evaluator(bundle, data).evaluate(plan)
    merge = Evaluator(bundle, data).evaluate(Plan.from_dict({**plan.to_dict(), "merge": True}))
    assert drop.nonzero_params - merge.nonzero_params == 3
    assert {la.name: la.nonzero_params for la in drop.layers}["2"] - 3 == {
        la.name: la.nonzero_params for la in merge.layers}["2"]


@pytest.mark.parametrize("demo", ["cnn", "resnet"])
def test_incremental_evaluator_equals_full_forward_for_merge_plans(request, digits, demo):
    bundle = request.getfixturevalue(demo)
    evaluator = Evaluator(bundle, digits)
    groups = bundle.group_names
    plan = Plan(granularity="neurons", criterion="redundancy", merge=True)
    steps = [(groups[-1], 0.5, True), (groups[0], 0.3, True), (groups[-1], 0.2, False),
             (groups[1], 0.6, True), (groups[1], 0.6, False), (groups[0], 0.0, True)]
    for group, fraction, merge in steps:
        sparsity = dict(plan.sparsity)
        sparsity.update({la.name: fraction for la in bundle.group(group)})
        plan = Plan(granularity="neurons", criterion="redundancy", sparsity=sparsity, merge=merge)
        masks = evaluator.masks(plan)
        assert torch.allclose(
            evaluator.logits(masks), full_forward_logits(bundle, masks, digits.x), atol=1e-4
        ), (group, fraction, merge)
    assert evaluator.incremental


def test_merge_plans_in_json_and_urls():
    plan = Plan(granularity="neurons", criterion="redundancy", sparsity={"fc1": 0.5}, merge=True)
    assert plan.to_dict()["merge"] is True
    assert Plan.from_json(plan.to_json()) == plan and Plan.from_json(plan.to_json()).merge
    assert "merge" not in Plan(granularity="neurons", criterion="redundancy").to_dict()
    assert plan != Plan(granularity="neurons", criterion="redundancy", sparsity={"fc1": 0.5})
    query = plan_to_query(plan)
    assert query["merge"] == "1" and plan_from_query(query) == plan
    assert "merge" not in plan_to_query(Plan())
    with pytest.raises(PlanError, match="merge"):
        plan_from_query({**query, "merge": "yes"})


@pytest.mark.parametrize(
    "fields",
    [{"granularity": "weights", "criterion": "magnitude"},
     {"granularity": "neurons", "criterion": "l1"},
     {"granularity": "weights", "criterion": "taylor"}],
)
def test_merge_needs_neurons_by_redundancy(fields):
    with pytest.raises(PlanError, match="merge.*'neurons'.*'redundancy'"):
        Plan(**fields, merge=True)
    with pytest.raises(PlanError, match="merge"):
        Plan.from_dict({"version": 1, **fields, "merge": True})


def test_merge_must_be_a_boolean():
    with pytest.raises(PlanError, match="true or false"):
        Plan.from_dict({"version": 1, "granularity": "neurons", "criterion": "redundancy",
                        "merge": "yes"})
