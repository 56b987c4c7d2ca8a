"""FLOPs against FlopCounterMode; neuron-plan size and FLOPs against rebuilt smaller models."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from explorer.evaluator import Evaluator
from explorer.load.zoo import DigitsCNN, DigitsMLP
from explorer.masks import ScoreCache, masks_for
from explorer.metrics import CostModel
from explorer.plan import Plan


def _count_flops(model: torch.nn.Module, shape=(1, 1, 8, 8)) -> tuple[int, dict]:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(shape))
    return counter.get_total_flops(), counter.get_flop_counts()


def test_dense_flops_equal_flop_counter_mode(any_demo):
    total, per_module = _count_flops(any_demo.model)
    assert any_demo.flops == total
    for layer in any_demo.layers:
        key = f"{type(any_demo.model).__name__}.{layer.name}"
        assert layer.flops == sum(per_module[key].values()), layer.name


def _kept(bundle, masks, name):
    return bundle.layer(name).neurons - masks.removed.get(name, 0)


@pytest.mark.parametrize("fractions", [(0.5, 0.0), (0.25, 0.75), (0.9, 0.3)])
def test_mlp_neuron_plan_matches_rebuilt_model(mlp, digits, fractions):
    plan = Plan(granularity="neurons", criterion="l1",
                sparsity={"fc1": fractions[0], "fc2": fractions[1]})
    masks = masks_for(mlp, plan, ScoreCache(mlp))
    small = DigitsMLP(hidden=(_kept(mlp, masks, "fc1"), _kept(mlp, masks, "fc2")))
    costs = CostModel(mlp).costs(masks)
    small_params = sum(p.numel() for p in small.parameters())
    assert costs.size_bytes["structured"] == 4 * small_params
    assert costs.flops["effective"] == _count_flops(small)[0]
    assert costs.nonzero_params == small_params


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5, 0.5), (0.25, 0.0, 0.75, 0.1)])
def test_cnn_neuron_plan_matches_rebuilt_model(cnn, fractions):
    names = ["features.0", "features.2", "classifier.1", "classifier.3"]
    sparsity = dict(zip(names, fractions, strict=True))
    plan = Plan(granularity="neurons", criterion="l2", sparsity=sparsity)
    masks = masks_for(cnn, plan, ScoreCache(cnn))
    kept = [_kept(cnn, masks, n) for n in names]
    small = DigitsCNN(channels=tuple(kept[:2]), hidden=tuple(kept[2:]))
    costs = CostModel(cnn).costs(masks)
    assert costs.size_bytes["structured"] == 4 * sum(p.numel() for p in small.parameters())
    assert costs.flops["effective"] == _count_flops(small)[0]


def test_weight_plan_flops_scale_with_density(cnn, digits):
    plan = Plan(sparsity={"features.2": 0.5, "classifier.1": 0.9})
    m = Evaluator(cnn, digits).evaluate(plan)
    by_name = {la.name: la for la in m.layers}
    w2 = cnn.params()["features.2.weight"]
    assert by_name["features.2"].flops_effective == round(cnn.layer("features.2").flops * 0.5)
    assert by_name["features.2"].nonzero_params == round(w2.numel() * 0.5) + 64
    others = sum(la.flops_dense for la in m.layers if la.name not in ("features.2", "classifier.1"))
    expected = others + round(2359296 * 0.5) + round(524288 * (1 - 235930 / 262144))
    assert m.flops["effective"] == expected
    assert m.speedup == pytest.approx(m.flops["dense"] / expected)


def test_sparse_sizes_are_values_plus_bitmask_and_csr(mlp, digits):
    plan = Plan(sparsity={"fc1": 0.5})
    m = Evaluator(mlp, digits).evaluate(plan)
    params = mlp.params()
    dense = 4 * sum(p.numel() for p in params.values())
    assert m.size_bytes["dense"] == dense
    nnz1 = 64 * 300 - round(0.5 * 64 * 300)
    weights = {"fc1.weight": nnz1, "fc2.weight": 300 * 100, "fc3.weight": 100 * 10}
    others = 4 * sum(p.numel() for n, p in params.items() if n not in weights)
    bitmask = others + sum(4 * nnz + -(-params[n].numel() // 8) for n, nnz in weights.items())
    csr = others + sum(8 * nnz + 4 * (params[n].shape[0] + 1) for n, nnz in weights.items())
    assert m.size_bytes["bitmask"] == bitmask
    assert m.size_bytes["csr"] == csr
    assert "structured" not in m.size_bytes
    assert m.compression_ratio == pytest.approx(m.params / m.nonzero_params)
