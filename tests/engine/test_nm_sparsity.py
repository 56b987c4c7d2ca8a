"""N:M (2:4) sparsity: masks, the Wanda criterion, the plan's pattern field, costs and accuracy.

References are computed here independently: top-N of M with numpy on weights laid out as
NVIDIA's ASP lays them out (a convolution as (kh, kw, out, in), channels innermost), Wanda's
input norms from forward hooks on the real modules and ``F.unfold``, accuracy from
``torch.nn.utils.prune.custom_from_mask`` on a copy of the model.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache, masks_for, nm_keep
from explorer.plan import Plan
from explorer.ui.urls import plan_from_query, plan_to_query


def asp_layout(weight: np.ndarray) -> np.ndarray:
    """A weight as rows whose consecutive entries form the groups: linear (out, in) as it is,
    a convolution (out, in, kh, kw) permuted to (kh, kw, out, in) as ASP's create_mask does."""
    return weight.transpose(2, 3, 0, 1) if weight.ndim == 4 else weight


def top_n_of_m(scores: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep-mask: in each group of m consecutive entries of the last axis the n largest,
    ties to the lower index (a brute-force loop over the groups)."""
    flat = scores.reshape(-1, m)
    keep = np.zeros(flat.shape, dtype=bool)
    for g, group in enumerate(flat):
        order = sorted(range(m), key=lambda i: (-group[i], i))
        keep[g, order[:n]] = True
    return keep.reshape(scores.shape)


def reference_mask(weight: torch.Tensor, scores: torch.Tensor, n: int, m: int) -> np.ndarray:
    laid = asp_layout(scores.double().numpy())
    keep = top_n_of_m(laid, n, m)
    return keep.transpose(2, 3, 0, 1) if weight.dim() == 4 else keep


def modules(bundle) -> dict[str, nn.Module]:
    return dict(bundle.model.named_modules())


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn", "digits-resnet"])
def test_two_of_four_keeps_exactly_two_of_every_four_by_magnitude(name, request):
    bundle = {"digits-mlp": request.getfixturevalue("mlp"),
              "digits-cnn": request.getfixturevalue("cnn"),
              "digits-resnet": request.getfixturevalue("resnet")}[name]
    plan = Plan(scope="global", pattern="2:4")
    masks = masks_for(bundle, plan, ScoreCache(bundle))
    params = bundle.params()
    covered = [la for la in bundle.layers if la.weight_shape[1] % 4 == 0]
    assert {la.weight for la in covered} == set(masks.masks)
    assert {la.kind for la in covered} >= ({"conv2d", "linear"} if name != "digits-mlp"
                                           else {"linear"})
    for la in covered:
        w = params[la.weight].detach()
        got = masks.masks[la.weight].numpy()
        groups = asp_layout(got).reshape(-1, 4)
        assert (groups.sum(1) == 2).all()
        np.testing.assert_array_equal(got, reference_mask(w, w.abs(), 2, 4))


def test_four_of_eight_and_ties_keep_the_lower_index(cnn):
    plan = Plan(sparsity={"features.2": 0.5, "classifier.3": 0.5}, pattern="4:8")
    masks = masks_for(cnn, plan, ScoreCache(cnn))
    for name in ("features.2", "classifier.3"):
        w = cnn.params()[f"{name}.weight"].detach()
        np.testing.assert_array_equal(masks.masks[f"{name}.weight"].numpy(),
                                      reference_mask(w, w.abs(), 4, 8))
    tied = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 2.0, 0.0, 2.0]])
    assert nm_keep(tied, 2, 4).tolist() == [[True, True, False, False,
                                             False, True, False, True]]


def hooked_inputs(bundle, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each prunable layer's input on ``x``, caught by forward hooks on a private copy."""
    model = copy.deepcopy(bundle.model)
    caught: dict[str, torch.Tensor] = {}
    found = dict(model.named_modules())
    handles = [found[la.name].register_forward_pre_hook(
        lambda _m, args, name=la.name: caught.setdefault(name, args[0].detach()))
        for la in bundle.layers]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return caught


def reference_wanda(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """|W| * ||X_j||_2 with X the unfolded (convolution) or flattened (linear) inputs."""
    w = module.weight.detach().double()
    if isinstance(module, nn.Linear):
        norms = inputs.double().reshape(-1, w.shape[1]).norm(dim=0)
        return w.abs() * norms[None, :]
    cols = F.unfold(inputs.double(), module.kernel_size, module.dilation, module.padding,
                    module.stride)  # (N, C * kh * kw, L)
    norms = cols.transpose(1, 2).reshape(-1, cols.shape[1]).norm(dim=0)
    return w.abs() * norms.view(1, *w.shape[1:])


@pytest.mark.parametrize("fixture", ["cnn", "resnet"])
def test_wanda_scores_equal_weight_times_input_norm(fixture, digits, request):
    bundle = request.getfixturevalue(fixture)
    cache = ScoreCache(bundle, digits)
    inputs = hooked_inputs(bundle, digits.x)
    for la in bundle.layers:
        got, _ = cache.get("weights", "wanda", la.name)
        want = reference_wanda(modules(bundle)[la.name], inputs[la.name])
        torch.testing.assert_close(got.double().view(la.weight_shape), want,
                                   rtol=1e-5, atol=1e-7)


def test_wanda_two_of_four_masks_follow_the_wanda_scores(resnet, digits):
    masks = masks_for(resnet, Plan(criterion="wanda", scope="global", pattern="2:4"),
                      ScoreCache(resnet, digits))
    inputs = hooked_inputs(resnet, digits.x)
    magnitude = masks_for(resnet, Plan(scope="global", pattern="2:4"), ScoreCache(resnet))
    differs = 0
    for la in resnet.layers[1:]:
        w = resnet.params()[la.weight].detach()
        scores = reference_wanda(modules(resnet)[la.name], inputs[la.name])
        got = masks.masks[la.weight].numpy()
        # float32 scores may order near-ties differently from float64: allow a handful
        mismatch = (got != reference_mask(w, scores, 2, 4)).sum()
        assert mismatch <= max(4, got.size // 2000), la.name
        differs += int((got != magnitude.masks[la.weight].numpy()).sum())
    assert differs > 0  # wanda is not magnitude in disguise


def test_unstructured_wanda_removes_the_lowest_scores_per_layer(cnn, digits):
    plan = Plan(criterion="wanda", sparsity={"features.2": 0.6, "classifier.1": 0.3})
    masks = masks_for(cnn, plan, ScoreCache(cnn, digits))
    inputs = hooked_inputs(cnn, digits.x)
    for name, fraction in plan.sparsity.items():
        scores = reference_wanda(modules(cnn)[name], inputs[name]).flatten()
        keep = masks.masks[f"{name}.weight"].flatten()
        assert (~keep).sum() == round(fraction * scores.numel())
        assert scores[~keep].max() <= scores[keep].min() * (1 + 1e-5)


def test_wanda_needs_data(cnn):
    with pytest.raises(PlanError, match="needs validation data"):
        masks_for(cnn, Plan(criterion="wanda", sparsity={"features.2": 0.5}), ScoreCache(cnn))


@pytest.mark.parametrize("plan", [
    Plan(scope="global", pattern="2:4"),
    Plan(scope="global", pattern="4:8", criterion="wanda", layers=("fc2", "fc3")),
    Plan(sparsity={"fc2": 0.5, "fc3": 0.5}, pattern="2:4"),
    Plan(sparsity={"fc2": 0.75}, pattern="1:4", criterion="random"),
])
def test_pattern_round_trips_through_json_and_url(plan):
    assert Plan.from_json(plan.to_json()) == plan
    assert plan_from_query(plan_to_query(plan)) == plan
    assert json.loads(plan.key)["pattern"] == plan.pattern
    assert plan.key != replace(plan, pattern=None).key  # the key tells 2:4 from 50%


def test_a_global_pattern_plan_file_may_leave_out_its_amount(mlp):
    plan = Plan.from_bytes(b'{"version": 1, "scope": "global", "pattern": "2:4"}')
    assert plan.amount == 0.5
    assert plan.pattern_layers(mlp) == ("fc1", "fc2", "fc3")
    assert plan_from_query({"scope": "global", "pattern": "2:4"}) == plan


@pytest.mark.parametrize("fields, words", [
    ({"pattern": "2:2"}, "N:M pattern"),
    ({"pattern": "0:4"}, "N:M pattern"),
    ({"pattern": "4:2"}, "N:M pattern"),
    ({"pattern": "2-4"}, "N:M pattern"),
    ({"pattern": "2:32"}, "N:M pattern"),
    ({"pattern": " 2:4"}, "N:M pattern"),
    ({"pattern": 4}, "N:M pattern"),
    ({"pattern": "2:4", "granularity": "neurons", "criterion": "l1"}, "weights' only"),
    ({"pattern": "2:4", "sparsity": {"fc1": 0.3}}, "removes exactly 0.5"),
    ({"pattern": "2:4", "scope": "global", "amount": 0.8}, "removes exactly 0.5"),
])
def test_bad_patterns_give_one_line_errors(fields, words):
    text = json.dumps({"version": 1, **fields})
    with pytest.raises(PlanError, match=words) as caught:
        Plan.from_bytes(text)
    assert "\n" not in str(caught.value)
    if not isinstance(fields["pattern"], int):  # Python callers get the same message
        with pytest.raises(PlanError, match=words):
            Plan(**fields)
    names = {"granularity": "g", "criterion": "c"}
    query = {names.get(k, k): str(v) for k, v in fields.items()
             if k not in ("sparsity", "amount")}
    if "sparsity" in fields:
        query["s"] = "fc1:30"
    if "amount" in fields:
        query["amount"] = "80"
    with pytest.raises(PlanError, match=words):
        plan_from_query(query)


@pytest.mark.parametrize("plan", [
    Plan(sparsity={"features.0": 0.5, "features.2": 0.5}, pattern="2:4"),
    Plan(scope="global", layers=("features.0",), pattern="2:4"),
])
def test_a_layer_whose_inputs_do_not_split_into_groups_is_refused(cnn, plan):
    with pytest.raises(PlanError, match="'features.0' have 1 inputs per row") as caught:
        masks_for(cnn, plan, ScoreCache(cnn))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("fixture", ["cnn", "resnet"])
def test_two_of_four_costs_half_the_layer_flops_and_scores_as_torch_prune(
        fixture, digits, request):
    bundle = request.getfixturevalue(fixture)
    plan = Plan(scope="global", pattern="2:4")
    evaluator = Evaluator(bundle, digits)
    metrics = evaluator.evaluate(plan)
    masks = masks_for(bundle, plan, ScoreCache(bundle))
    covered = {la.name for la in bundle.layers if la.weight_shape[1] % 4 == 0}
    for layer in metrics.layers:
        if layer.name in covered:
            assert layer.flops_effective * 2 == layer.flops_dense
            assert layer.sparsity == 0.5
        else:
            assert layer.flops_effective == layer.flops_dense
    halved = sum(la.flops for la in bundle.layers if la.name in covered) // 2
    assert metrics.flops["effective"] == metrics.flops["dense"] - halved

    model = copy.deepcopy(bundle.model)
    found = dict(model.named_modules())
    for la in bundle.layers:
        if la.weight in masks.masks:
            prune.custom_from_mask(found[la.name], "weight", masks.masks[la.weight])
    with torch.no_grad():
        logits = model(digits.x)
    assert metrics.correct == int((logits.argmax(1) == digits.y).sum())


def test_cli_evaluates_a_pattern_plan_file(tmp_path, mlp, digits):
    path = tmp_path / "plan.json"
    plan = Plan(criterion="wanda", scope="global", pattern="2:4")
    path.write_text(plan.to_json())
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", "--model",
                          "digits-mlp", "--plan", str(path), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    want = Evaluator(mlp, digits).evaluate(plan)
    assert got["nonzero_params"] == want.nonzero_params
    assert got["accuracy"] == pytest.approx(want.accuracy)
    path.write_text('{"version": 1, "pattern": "3:3"}')
    bad = subprocess.run([sys.executable, "-m", "explorer.cli", "evaluate", "--model",
                          "digits-mlp", "--plan", str(path)], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2
    assert len(bad.stderr.strip().splitlines()) == 1 and "N:M pattern" in bad.stderr
