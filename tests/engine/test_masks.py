"""Masks against torch.nn.utils.prune, the independent reference, on copies of real models."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import prune

from explorer.bundle import bundle_from_module
from explorer.masks import ScoreCache, masks_for, removal_counts
from explorer.plan import Plan

AMOUNTS = [0.0, 0.1, 0.33, 0.5, 0.8, 0.95, 0.999]


def _torch_layer_masks(bundle, amount: float) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(bundle.model)
    masks = {}
    for layer in bundle.layers:
        module = model.get_submodule(layer.name)
        prune.l1_unstructured(module, "weight", amount=amount)
        masks[layer.weight] = module.weight_mask.bool()
    return masks


@pytest.mark.parametrize("amount", AMOUNTS)
def test_per_layer_masks_equal_l1_unstructured(any_demo, amount):
    plan = Plan(sparsity={name: amount for name in any_demo.layer_names})
    ours = masks_for(any_demo, plan, ScoreCache(any_demo))
    reference = _torch_layer_masks(any_demo, amount)
    for name, ref in reference.items():
        mine = ours.masks.get(name, torch.ones_like(ref))
        assert torch.equal(mine, ref), f"{name} at {amount}"


@pytest.mark.parametrize("amount", AMOUNTS)
def test_global_masks_equal_global_unstructured(any_demo, amount):
    model = copy.deepcopy(any_demo.model)
    targets = [(model.get_submodule(la.name), "weight") for la in any_demo.layers]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    ours = masks_for(any_demo, Plan(scope="global", amount=amount), ScoreCache(any_demo))
    for layer, (module, _) in zip(any_demo.layers, targets, strict=True):
        ref = module.weight_mask.bool()
        assert torch.equal(ours.masks.get(layer.weight, torch.ones_like(ref)), ref), layer.name


def test_global_masks_on_a_subset_of_layers(cnn):
    names = ["features.2", "classifier.1"]
    model = copy.deepcopy(cnn.model)
    targets = [(model.get_submodule(n), "weight") for n in names]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=0.7)
    ours = masks_for(cnn, Plan(scope="global", amount=0.7, layers=names), ScoreCache(cnn))
    assert set(ours.masks) == {f"{n}.weight" for n in names}
    for n, (module, _) in zip(names, targets, strict=True):
        assert torch.equal(ours.masks[f"{n}.weight"], module.weight_mask.bool())


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12), cols=st.integers(1, 12), amount=st.floats(0, 0.999),
    seed=st.integers(0, 2**16),
)
def test_masks_equal_l1_unstructured_any_shape_any_amount(rows, cols, amount, seed):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(cols, rows))
    bundle = bundle_from_module(model, "tiny", (cols,))
    ours = masks_for(bundle, Plan(sparsity={"0": amount}), ScoreCache(bundle))
    ref_model = copy.deepcopy(model)
    prune.l1_unstructured(ref_model[0], "weight", amount=amount)
    mine = ours.masks.get("0.weight", torch.ones(rows, cols, dtype=torch.bool))
    assert torch.equal(mine, ref_model[0].weight_mask.bool())


def test_the_loaded_model_is_never_written(cnn):
    before = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    plan = Plan(granularity="neurons", criterion="l2", sparsity={"features.2": 0.5})
    masks = masks_for(cnn, plan, ScoreCache(cnn))
    masks.apply(cnn.params())
    for k, v in cnn.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_neuron_masks_remove_rows_and_the_next_layers_columns(cnn):
    plan = Plan(granularity="neurons", criterion="l1", sparsity={"features.2": 0.25})
    masks = masks_for(cnn, plan, ScoreCache(cnn))
    w = cnn.params()["features.2.weight"]
    l1 = w.abs().flatten(1).sum(1)
    removed = set(torch.argsort(l1)[:16].tolist())
    kept_rows = masks.masks["features.2.weight"].flatten(1).all(1)
    assert set((~kept_rows).nonzero().flatten().tolist()) == removed
    # classifier.1 reads features.2's output flattened: channel c owns columns 16c..16c+15.
    cols = masks.masks["classifier.1.weight"].all(0).view(64, 16)
    assert set((~cols.all(1)).nonzero().flatten().tolist()) == removed
    assert cols.all(1).sum() == 48 and not (cols.any(1) & ~cols.all(1)).any()


def test_neuron_counts_keep_at_least_one_neuron(mlp):
    plan = Plan(granularity="neurons", criterion="l1", sparsity={"fc1": 0.999})
    assert removal_counts(mlp, plan, ScoreCache(mlp)) == {"fc1": 299}
