"""Looking at attention heads (explorer/look/heads.py) on a tiny BERT built from a config.

References independent of the module: ``transformers``' own attention probabilities
(``output_attentions=True``), each head's output rebuilt from the self-attention's output
(a forward hook) and its columns of the output projection, compared pair by pair with
``F.cosine_similarity``; and the score cache itself for the importance table.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_bert import CLASSES, DIM, HEADS, LENGTH, tiny_bert

from explorer.bundle import bundle_from_module
from explorer.data import ValidationSet
from explorer.errors import DataError
from explorer.look.heads import attention_pattern, head_scores, head_similarity
from explorer.masks import ScoreCache

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny():
    return tiny_bert()


def test_the_pattern_is_transformers_attention_probabilities_without_padding(tiny):
    bundle, data = tiny
    for row in (0, 7, 19):
        ids = data.x[row].long()
        real = ids != 0
        with torch.no_grad():
            out = bundle.model.bert(input_ids=ids[None], attention_mask=real.long()[None],
                                    output_attentions=True)
        for layer, group in enumerate(bundle.heads):
            for head in range(HEADS):
                pattern = attention_pattern(bundle, data.x[row], group.name, head)
                expected = out.attentions[layer][0, head][real][:, real]
                np.testing.assert_allclose(pattern.probabilities, expected.numpy(), atol=1e-6)
                assert pattern.positions.tolist() == real.nonzero().flatten().tolist()
                np.testing.assert_allclose(pattern.probabilities.sum(1), 1.0, atol=1e-12)


def test_a_head_outside_the_attention_is_one_error(tiny):
    bundle, data = tiny
    with pytest.raises(DataError, match="heads 0 to 3; got head 4"):
        attention_pattern(bundle, data.x[0], bundle.heads[0].name, HEADS)


def hooked_outputs(bundle, group, x: torch.Tensor) -> torch.Tensor:
    """(T, heads, hidden): each head's context (the self-attention module's output, via a
    forward hook on a copy) times its columns of the output projection, real tokens only."""
    model, caught = copy.deepcopy(bundle.model), []
    model.get_submodule(group.module).register_forward_hook(
        lambda _m, _i, out: caught.append(out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model(x)
    context = caught[0][x != 0].double()  # (T, heads * dim)
    weight = bundle.params()[bundle.layer(group.output).weight].detach().double()
    return torch.stack([context[:, h * DIM:(h + 1) * DIM] @ weight[:, h * DIM:(h + 1) * DIM].T
                        for h in range(HEADS)], dim=1)


def test_head_similarity_is_the_cosine_of_the_heads_outputs_pair_by_pair(tiny):
    bundle, data = tiny
    for group in bundle.heads:
        outputs = hooked_outputs(bundle, group, data.x)
        expected = np.array([[float(F.cosine_similarity(outputs[:, h].flatten(),
                                                        outputs[:, g].flatten(), dim=0))
                              for g in range(HEADS)] for h in range(HEADS)])
        similarity = head_similarity(bundle, data, group.name)
        np.testing.assert_allclose(similarity, expected, atol=1e-10)
        assert (np.diagonal(similarity) == 1.0).all()
        np.testing.assert_array_equal(similarity, similarity.T)


def test_streamed_similarity_equals_all_at_once(tiny):
    bundle, data = tiny
    name = bundle.heads[1].name
    whole = head_similarity(bundle, data, name, batch_size=len(data))
    for batch in (1, 7):
        np.testing.assert_allclose(head_similarity(bundle, data, name, batch_size=batch),
                                   whole, atol=1e-12)


def test_padding_is_left_out_of_the_similarity(tiny):
    """More padding after each sentence changes nothing: padded positions are not counted."""
    bundle, data = tiny
    longer = torch.cat([data.x, torch.zeros(len(data), 4)], dim=1)
    wide = bundle_from_module(bundle.model, "tiny-bert-16", (LENGTH + 4,))
    name = bundle.heads[0].name
    np.testing.assert_allclose(
        head_similarity(wide, ValidationSet(longer, data.y, CLASSES), name),
        head_similarity(bundle, data, name), atol=1e-6)


@pytest.mark.parametrize("criterion", ["l1", "taylor", "random"])
def test_importance_rows_are_the_score_caches_heads_scores(tiny, criterion):
    bundle, data = tiny
    cache = ScoreCache(bundle, data)
    table = head_scores(bundle, cache, criterion)
    assert table.attentions == tuple(g.name for g in bundle.heads)
    assert table.modules == tuple(g.module for g in bundle.heads)
    assert table.scores.shape == (2, HEADS)
    for row, group in enumerate(bundle.heads):
        np.testing.assert_array_equal(table.scores[row],
                                      cache.get("heads", criterion, group.name)[0].numpy())


def test_a_model_without_heads_has_no_head_table(mlp, digits):
    with pytest.raises(DataError, match="no attention heads"):
        head_scores(mlp, ScoreCache(mlp, digits), "l1")
