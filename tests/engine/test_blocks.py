"""Whole blocks as a unit (issue 12 item 2): transformer layers and identity residual blocks.

References: the model with the dropped blocks taken out by hand (``del`` from BERT's layer
list; a residual block replaced by the identity) for outputs, ``FlopCounterMode`` on it for
FLOPs, and ShortGPT's block influence computed by hand from ``output_hidden_states``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from smaller_model import assert_matches_smaller_model
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import ValidationSet, digits_validation, split_for_decisions
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.load.demos import load_demo
from explorer.masks import ScoreCache
from explorer.plan import Plan

transformers = pytest.importorskip("transformers")

from explorer.load.transformers import TopicEmbedder  # noqa: E402

LENGTH = 12


@pytest.fixture(scope="module")
def tiny() -> tuple[ModelBundle, ValidationSet]:
    """A 4-layer BERT scored against 5 random centroids; 48 sentences of 3 to 12 tokens."""
    torch.manual_seed(1)
    config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=48, attn_implementation="eager")
    model = TopicEmbedder(transformers.BertModel(config, add_pooling_layer=False).eval(),
                          torch.randn(5, 32))
    bundle = bundle_from_module(model, "tiny-bert", (LENGTH,))
    x = torch.randint(1, 60, (48, LENGTH)).float()
    x[torch.arange(LENGTH) >= torch.randint(3, LENGTH + 1, (48,))[:, None]] = 0
    return bundle, ValidationSet(x, torch.randint(0, 5, (48,)), 5, "tiny-sentences")


def test_transformer_layers_are_blocks_and_the_model_keeps_no_gate(tiny):
    bundle, _ = tiny
    assert [b.name for b in bundle.blocks] == [f"bert.encoder.layer.{i}" for i in range(4)]
    assert bundle.blocks[0].layers == tuple(
        f"bert.encoder.layer.0.{p}" for p in ("attention.self.query", "attention.self.key",
                                              "attention.self.value", "attention.output.dense",
                                              "intermediate.dense", "output.dense"))
    # the gates live in the exported graph only: the model's own state is untouched
    assert not [n for n, _ in bundle.model.named_buffers() if "block_kept" in n]
    assert "bert.encoder.layer.0.block_kept" not in bundle.model.state_dict()


@pytest.mark.parametrize("criterion", ["influence", "random"])
def test_dropping_blocks_equals_the_model_without_them(tiny, criterion):
    bundle, data = tiny
    evaluator = Evaluator(bundle, data, ScoreCache(bundle, data))
    plan = Plan(granularity="blocks", criterion=criterion, scope="global", amount=0.5)
    masks = evaluator.masks(plan)
    assert len(masks.dropped_blocks) == 2
    reference = copy.deepcopy(bundle.model)
    gone = {int(name.rpartition(".")[2]) for name in masks.dropped_blocks}
    reference.bert.encoder.layer = nn.ModuleList(
        [m for i, m in enumerate(reference.bert.encoder.layer) if i not in gone])
    metrics = assert_matches_smaller_model(evaluator, plan, masks, reference, data.x)
    assert metrics.size_bytes["structured"] == 4 * sum(p.numel() for p in reference.parameters())
    # the dense model's numbers are unchanged by the gates
    dense = evaluator.evaluate(Plan())
    with torch.no_grad():
        assert dense.correct == int((bundle.model(data.x).argmax(1) == data.y).sum())


def test_influence_is_one_minus_the_mean_token_cosine_through_the_block(tiny):
    """ShortGPT (Men et al. 2024): BI_i = 1 - E_tokens cos(h_i, h_{i+1}), padding left out."""
    bundle, data = tiny
    ids = data.x.long()
    with torch.no_grad():
        hidden = bundle.model.bert(input_ids=ids, attention_mask=(ids != 0).long(),
                                   output_hidden_states=True).hidden_states
    cache = ScoreCache(bundle, data)
    for i, block in enumerate(bundle.blocks):
        cosine = F.cosine_similarity(hidden[i].double(), hidden[i + 1].double(), dim=-1)
        expected = 1 - float(cosine[ids != 0].mean())
        scores, _ = cache.get("blocks", "influence", block.name)
        assert scores.shape == (1,)
        assert scores[0].item() == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_a_blocks_plan_takes_candidates_and_is_global_only(tiny):
    bundle, data = tiny
    cache = ScoreCache(bundle, data)
    evaluator = Evaluator(bundle, data, cache)
    named = Plan(granularity="blocks", criterion="influence", scope="global", amount=0.99,
                 layers=("bert.encoder.layer.2", "bert.encoder.layer.3.output.dense"))
    assert evaluator.masks(named).dropped_blocks == ("bert.encoder.layer.2",
                                                     "bert.encoder.layer.3")
    with pytest.raises(PlanError, match="A blocks plan is global"):
        Plan(granularity="blocks", criterion="influence",
             sparsity={"bert.encoder.layer.0.output.dense": 0.5})
    with pytest.raises(PlanError, match="no transformer blocks"):
        Plan(granularity="blocks", criterion="influence", scope="global", amount=0.5).check(
            load_demo("digits-cnn"))


def test_an_identity_residual_block_drops_to_its_input_and_groups_stay():
    """digits-resnet: layer1 (identity shortcut) is a block, layer2 and layer3 (a 1x1
    downsampling shortcut) are not; dropping layer1 equals the model with it replaced by
    the identity, and the coupled groups are the ones found before gates existed."""
    bundle = load_demo("digits-resnet")
    assert [b.name for b in bundle.blocks] == ["layer1"]
    assert bundle.layer("layer1.conv2").group == "stem.0"  # joined through the residual add
    data = digits_validation()
    evaluator = Evaluator(bundle, data, ScoreCache(bundle, data))
    plan = Plan(granularity="blocks", criterion="random", scope="global", amount=0.9)
    masks = evaluator.masks(plan)
    assert masks.dropped_blocks == ("layer1",)  # round(0.9 * 1 block)
    reference = copy.deepcopy(bundle.model)
    reference.layer1 = nn.Identity()
    assert_matches_smaller_model(evaluator, plan, masks, reference, data.x)


def test_cli_compares_blocks_on_one_global_threshold_and_scans_each_block_alone(capsys):
    from explorer import cli

    assert cli.main(["compare", "--model", "digits-resnet", "--granularity", "blocks",
                     "--grid", "0,0.9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    reference = copy.deepcopy(load_demo("digits-resnet").model)
    reference.layer1 = nn.Identity()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.zeros(1, 1, 8, 8))
    assert out["layers"] == ["layer1.conv1", "layer1.conv2"]  # the block's
    for name in ("influence", "random"):
        dropped = out["criteria"][name][1]
        assert dropped["fraction"] == 0.9
        assert dropped["flops_effective"] == counter.get_total_flops()
    # the scan: each block dropped alone, against the model without it (nn.Identity)
    assert cli.main(["sensitivity", "--model", "digits-resnet", "--granularity", "blocks",
                     "--exact", "--no-bn-recalibration", "--json"]) == 0
    scan = json.loads(capsys.readouterr().out)
    assert not scan["bn_recalibrated"]  # raw statistics, as the reference has them
    (unit,) = scan["units"]
    assert (unit["unit"], unit["fractions"]) == ("layer1", [0.0, 1.0])
    calibration = split_for_decisions(digits_validation()).calibration  # what it scans
    with torch.no_grad():
        logits = reference(calibration.x)
    correct = int((logits.argmax(1) == calibration.y).sum())
    assert unit["accuracy"][1] == pytest.approx(correct / len(calibration), abs=1e-12)
    assert unit["flops_effective"] == [load_demo("digits-resnet").flops,
                                       counter.get_total_flops()]
    assert cli.main(["suggest", "--model", "digits-resnet", "--granularity", "blocks",
                     "--target", "flops=2"]) == 2
    assert "No per-layer suggestion of blocks" in capsys.readouterr().err


def test_switching_to_blocks_gives_a_global_plan_and_back(tiny):
    bundle, _ = tiny
    weights = Plan(criterion="magnitude", sparsity={"bert.encoder.layer.0.output.dense": 0.5})
    blocks = weights.with_choices(bundle, "blocks", "magnitude", "layer", False)
    assert (blocks.granularity, blocks.criterion, blocks.scope) == (
        "blocks", "influence", "global")
    blocks.check(bundle)
    back = blocks.with_choices(bundle, "heads", "influence", "layer", False)
    assert (back.granularity, back.criterion, back.scope) == ("heads", "l1", "layer")


def test_a_blocks_export_is_the_model_without_its_blocks(tmp_path):
    """digits-resnet without layer1, judged with recalibrated BatchNorm as the app does: the
    exported program and the weights apply_plan.py leaves in a fresh model compute the
    accuracy the evaluator reported."""
    import runpy

    from safetensors.torch import load_file

    from explorer.batchnorm import calibration_for
    from explorer.export.outputs import export_all

    bundle, data = load_demo("digits-resnet"), digits_validation()
    evaluator = Evaluator(bundle, data, ScoreCache(bundle, data),
                          bn_calibration=calibration_for(bundle, None, True)[0])
    plan = Plan(granularity="blocks", criterion="influence", scope="global", amount=0.9)
    metrics = evaluator.evaluate(plan)
    written = export_all(bundle, plan, tmp_path / "out", evaluator)
    assert set(written) == {"plan.json", "pruned.safetensors", "shrunk.pt2", "apply_plan.py"}
    program = torch.export.load(str(written["shrunk.pt2"])).module()
    with torch.no_grad():
        correct = int((program(data.x).argmax(1) == data.y).sum())
    assert correct == metrics.correct
    script = runpy.run_path(str(written["apply_plan.py"]))
    model = script["apply_plan"](copy.deepcopy(bundle.model), tmp_path / "out")
    model.load_state_dict(load_file(str(written["pruned.safetensors"])))  # strict: same keys
    with torch.no_grad():
        assert int((model.eval()(data.x).argmax(1) == data.y).sum()) == metrics.correct


def test_fine_tuning_and_timing_a_blocks_model_keep_the_graphs_gates():
    """The exported graph holds block gates the model does not: a fine-tuned model's weights
    go into a copy of the graph with its gates kept, and a blocks plan is timed with its
    shrunk form as the fastest."""
    from explorer.export.latency import measure
    from explorer.finetune.fixed_masks import bundle_at

    bundle = load_demo("digits-resnet")
    model = copy.deepcopy(bundle.model)
    with torch.no_grad():
        model.fc.bias.add_(1.0)
    moved = bundle_at(bundle, model)
    assert torch.equal(moved.program.module.get_buffer("layer1.block_kept"), torch.tensor(True))
    assert torch.equal(moved.params()["fc.bias"], model.fc.bias)
    plan = Plan(granularity="blocks", criterion="random", scope="global", amount=0.9)
    result = measure(bundle, plan, batch=4, threads=1, min_run_time=0.05, layers=False)
    assert result.latency_ms["shrunk"] is not None and result.form in ("masked", "shrunk")
