"""Coupled groups (Torch-Pruning's DepGraph) and the physically shrunk model vs the masked one."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from explorer.evaluator import Evaluator, full_forward_logits
from explorer.export.shrink import shrink
from explorer.masks import ScoreCache, masks_for
from explorer.plan import Plan


def test_resnet_groups_follow_the_residual_additions(resnet):
    groups = {g: [la.name for la in resnet.group(g)] for g in resnet.group_names}
    assert groups["stem.0"] == ["stem.0", "layer1.conv2"]
    assert groups["layer2.downsample.0"] == ["layer2.downsample.0", "layer2.conv2"]
    assert groups["layer3.downsample.0"] == ["layer3.downsample.0", "layer3.conv2"]
    assert groups["layer1.conv1"] == ["layer1.conv1"]
    deps = {(d.param, d.dim) for d in resnet.layer("stem.0").dependents}
    # every slice a stem channel reaches: both producers, their BatchNorms, three consumers
    assert deps == {("stem.0.weight", 0), ("stem.1.weight", 0), ("stem.1.bias", 0),
                    ("layer1.conv2.weight", 0), ("layer1.bn2.weight", 0), ("layer1.bn2.bias", 0),
                    ("layer1.conv1.weight", 1), ("layer2.conv1.weight", 1),
                    ("layer2.downsample.0.weight", 1)}
    assert not resnet.layer("fc").neuron_prunable


def _plans(bundle):
    names = [g for g in bundle.group_names]
    yield Plan(granularity="neurons", criterion="l1",
               sparsity={la.name: 0.5 for g in names for la in bundle.group(g)})
    yield Plan(granularity="neurons", criterion="l2",
               sparsity={la.name: 0.25 for la in bundle.group(names[0])})
    yield Plan(granularity="neurons", criterion="random", scope="global", amount=0.6)
    yield Plan(granularity="neurons", criterion="l1", scope="global", amount=0.9)
    yield Plan(granularity="neurons", criterion="redundancy", merge=True,
               sparsity={la.name: 0.3 for g in names for la in bundle.group(g)})


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet", "digits-mlp"])
def test_shrunk_model_equals_masked_model(name, request, digits):
    bundle = request.getfixturevalue({"digits-cnn": "cnn", "digits-resnet": "resnet",
                                      "digits-mlp": "mlp"}[name])
    evaluator = Evaluator(bundle, digits)
    for plan in _plans(bundle):
        masks = masks_for(bundle, plan, ScoreCache(bundle, digits))
        small = shrink(bundle, masks)
        with torch.no_grad():
            out = small(digits.x)
        masked = full_forward_logits(bundle, masks, digits.x)
        torch.testing.assert_close(out, masked, rtol=1e-4, atol=1e-4)
        metrics = evaluator.evaluate(plan)
        params = sum(p.numel() for p in small.parameters())
        assert metrics.size_bytes["structured"] == 4 * params, plan.to_json()
        with FlopCounterMode(display=False) as counter:
            small(digits.x[:1])
        assert metrics.flops["effective"] == counter.get_total_flops(), plan.to_json()
        assert params < bundle.param_count


def test_shrinking_never_touches_the_shared_model(resnet, digits):
    before = {k: v.clone() for k, v in resnet.model.state_dict().items()}
    plan = next(_plans(resnet))
    shrink(resnet, masks_for(resnet, plan, ScoreCache(resnet)))
    after = resnet.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
