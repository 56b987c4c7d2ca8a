"""Attention heads as a unit (issue 12 item 2): a tiny BERT built from a config, random weights.

References independent of the engine's own code: ``transformers``' ``prune_linear_layer``
(what its head pruning used) on a private copy of the model for the physically smaller model,
``FlopCounterMode`` on it for the FLOPs, and a gate multiplying each head's output, with
autograd, for Michel et al.'s Taylor importance.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from smaller_model import assert_matches_smaller_model

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import ValidationSet
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.masks import ScoreCache, masks_for, removal_counts
from explorer.plan import Plan

transformers = pytest.importorskip("transformers")

from explorer.load.transformers import TopicEmbedder  # noqa: E402

HEADS, DIM, LENGTH, CLASSES = 4, 8, 12, 5


@pytest.fixture(scope="module")
def tiny() -> tuple[ModelBundle, ValidationSet]:
    """A 2-layer BERT (4 heads of 8) scored against 5 random centroids, and 48 sentences of
    random token ids with 3 to 12 tokens, labelled by the dense model's own top class
    (with a quarter changed), so the loss has gradients everywhere."""
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=60, hidden_size=HEADS * DIM, num_hidden_layers=2, num_attention_heads=HEADS,
        intermediate_size=48, attn_implementation="eager")
    encoder = transformers.BertModel(config, add_pooling_layer=False).eval()
    model = TopicEmbedder(encoder, torch.randn(CLASSES, HEADS * DIM))
    bundle = bundle_from_module(model, "tiny-bert", (LENGTH,))
    x = torch.randint(1, 60, (48, LENGTH)).float()
    lengths = torch.randint(3, LENGTH + 1, (48,))
    x[torch.arange(LENGTH) >= lengths[:, None]] = 0
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % CLASSES
    return bundle, ValidationSet(x, y, CLASSES, "tiny-sentences")


def reference_shrunk(bundle: ModelBundle, removed: dict[str, torch.Tensor]) -> torch.nn.Module:
    """The smaller model cut with ``transformers.pytorch_utils.prune_linear_layer``."""
    from transformers.pytorch_utils import prune_linear_layer

    model = copy.deepcopy(bundle.model)
    for group in bundle.heads:
        gone = set(removed.get(group.name, torch.empty(0)).tolist())
        index = torch.tensor([h * DIM + i for h in range(HEADS) if h not in gone
                              for i in range(DIM)])
        attention = model.get_submodule(group.module)
        for part in ("query", "key", "value"):
            setattr(attention, part, prune_linear_layer(getattr(attention, part), index))
        owner, _, leaf = group.output.rpartition(".")
        parent = model.get_submodule(owner)
        setattr(parent, leaf, prune_linear_layer(getattr(parent, leaf), index, dim=1))
    return model.eval()


def test_heads_are_found_with_their_slices_and_own_flops(tiny):
    bundle, _ = tiny
    assert [g.module for g in bundle.heads] == [
        f"bert.encoder.layer.{i}.attention.self" for i in range(2)]
    group = bundle.heads[0]
    assert (group.heads, group.head_dim) == (HEADS, DIM)
    assert group.layers == tuple(f"bert.encoder.layer.0.attention.{p}" for p in (
        "self.query", "self.key", "self.value", "output.dense"))
    # scores Q K^T and weighted values: two (L x d) @ (d x L) products per head, 2 FLOPs a MAC
    assert group.flops_per_head == 2 * 2 * LENGTH * LENGTH * DIM
    assert bundle.granularities == ("weights", "neurons", "heads")
    assert bundle.units("heads") == {g.name: g.layers for g in bundle.heads}
    assert bundle.linked("bert.encoder.layer.1.attention.self.key", "heads") == \
        bundle.heads[1].layers
    units = bundle.layer_units("bert.encoder.layer.0.attention.output.dense")["heads"]
    assert units == {"count": HEADS, "removable": True, "group": group.name, "why_not": None}
    assert "not a query" in bundle.layer_units("bert.encoder.layer.0.intermediate.dense")[
        "heads"]["why_not"]


@pytest.mark.parametrize("criterion", ["l1", "taylor", "random"])
def test_a_heads_plan_equals_the_smaller_model_and_its_flops(tiny, criterion):
    bundle, data = tiny
    first, second = bundle.heads
    plan = Plan(granularity="heads", criterion=criterion,
                sparsity={**dict.fromkeys(first.layers, 0.5),
                          **dict.fromkeys(second.layers, 0.25)})
    evaluator = Evaluator(bundle, data, ScoreCache(bundle, data))
    masks = evaluator.masks(plan)
    assert {u: r.numel() for u, r in masks.removed_heads.items()} == {
        first.name: 2, second.name: 1}
    assert removal_counts(bundle, plan, evaluator.scores) == {
        **dict.fromkeys(first.layers, 2), **dict.fromkeys(second.layers, 1)}

    reference = reference_shrunk(bundle, masks.removed_heads)
    metrics = assert_matches_smaller_model(evaluator, plan, masks, reference, data.x)
    assert metrics.size_bytes["structured"] == 4 * sum(
        p.numel() for p in reference.parameters()) + 4 * sum(
        b.numel() for n, b in reference.named_buffers() if n in bundle.params())
    # the model's own outputs are topic scores: accuracy counts against the labels
    with torch.no_grad():
        assert metrics.correct == int((reference(data.x).argmax(1) == data.y).sum())


def test_l1_scores_each_heads_weights(tiny):
    bundle, data = tiny
    group = bundle.heads[1]
    params = {name: p.detach() for name, p in bundle.params().items()}
    scores, _ = ScoreCache(bundle, data).get("heads", "l1", group.name)
    for h in range(HEADS):
        rows = slice(h * DIM, (h + 1) * DIM)
        expected = sum(float(params[f"{la}.weight"][rows].abs().sum()) for la in group.layers[:3])
        expected += float(params[f"{group.output}.weight"][:, rows].abs().sum())
        assert scores[h].item() == pytest.approx(expected, rel=1e-5)


def test_taylor_is_the_mean_absolute_gradient_of_a_head_gate(tiny):
    """Michel et al. 2019: a gate xi_h (1) on each head's output; score E_x |dL/dxi_h|."""
    bundle, data = tiny
    group = bundle.heads[0]
    model = copy.deepcopy(bundle.model).requires_grad_(False)
    gate = torch.ones(HEADS, requires_grad=True)

    def gated(_, args):
        (context,) = args
        return (context * gate.repeat_interleave(DIM),)

    model.get_submodule(group.output).register_forward_pre_hook(gated)
    total = torch.zeros(HEADS, dtype=torch.float64)
    for i in range(len(data)):
        loss = F.cross_entropy(model(data.x[i:i + 1]), data.y[i:i + 1])
        (grad,) = torch.autograd.grad(loss, gate)
        total += grad.abs().double()
    scores, _ = ScoreCache(bundle, data).get("heads", "taylor", group.name)
    torch.testing.assert_close(scores, (total / len(data)).float(), rtol=1e-4, atol=1e-7)


def test_a_global_heads_plan_removes_its_share_of_all_heads_and_keeps_one_per_attention(tiny):
    bundle, data = tiny
    cache = ScoreCache(bundle, data)
    masks = masks_for(bundle, Plan(granularity="heads", criterion="l1", scope="global",
                                   amount=0.5), cache)
    assert sum(r.numel() for r in masks.removed_heads.values()) == 4  # round(0.5 * 8)
    most = masks_for(bundle, Plan(granularity="heads", criterion="l1", sparsity=dict.fromkeys(
        bundle.heads[0].layers, 0.99)), cache)
    assert most.removed_heads[bundle.heads[0].name].numel() == HEADS - 1


def test_heads_plans_that_do_not_fit_are_one_clear_error(tiny):
    bundle, _ = tiny
    first = bundle.heads[0]
    with pytest.raises(PlanError, match="no attention heads"):
        Plan(granularity="heads", criterion="l1",
             sparsity={"bert.encoder.layer.0.intermediate.dense": 0.5}).check(bundle)
    with pytest.raises(PlanError, match="lose the same heads"):
        Plan(granularity="heads", criterion="l1",
             sparsity={first.layers[0]: 0.5, first.layers[3]: 0.25}).check(bundle)
    from explorer.load.demos import load_demo

    with pytest.raises(PlanError, match="has no attention heads"):
        Plan(granularity="heads", criterion="l1", scope="global", amount=0.5).check(
            load_demo("digits-cnn"))
    assert load_demo("digits-cnn").granularities == ("weights", "neurons")
