"""Neuron similarity: cosine of weights, correlation of activations, ordering, size cap."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from explorer.activations import collect_activations
from explorer.bundle import bundle_from_module
from explorer.errors import ExplorerError
from explorer.look.similarity import (
    activation_similarity,
    correlation_matrix,
    cosine_matrix,
    summarize,
    top_pairs,
    weight_similarity,
)


@pytest.fixture(scope="module")
def cnn_activations(cnn, digits):
    return collect_activations(cnn, digits)


@pytest.fixture(scope="module")
def wide():
    torch.manual_seed(0)
    return bundle_from_module(nn.Sequential(nn.Linear(8, 600)), "wide", (8,))


def weight_rows(bundle, layer: str) -> torch.Tensor:
    weight = bundle.params()[bundle.layer(layer).weight].detach()
    return weight.reshape(weight.shape[0], -1)


def hooked_pooled(bundle, module_name: str, x: torch.Tensor) -> np.ndarray:
    """Per-sample activations (N, C) of a module, spatially averaged, via a forward hook."""
    captured = []
    module = dict(bundle.model.named_modules())[module_name]
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            bundle.model(x)
    finally:
        handle.remove()
    out = captured[0].double()
    return (out.mean(dim=(2, 3)) if out.dim() == 4 else out).numpy()


# --- the matrices ---------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["features.0", "features.2", "classifier.1", "classifier.5"])
def test_cosine_matrix_equals_torch_cosine_similarity(cnn, layer):
    rows = weight_rows(cnn, layer)
    sim = cosine_matrix(cnn.params()[cnn.layer(layer).weight])
    n = rows.shape[0]
    assert sim.shape == (n, n)
    rng = np.random.default_rng(1)
    for i, j in rng.integers(0, n, size=(12, 2)):
        expected = F.cosine_similarity(rows[i : i + 1], rows[j : j + 1]).item()
        assert sim[i, j] == pytest.approx(expected, abs=1e-6)
    np.testing.assert_allclose(np.diag(sim), 1.0)
    np.testing.assert_allclose(sim, sim.T)


def test_a_zero_weight_row_has_zero_similarity_and_no_nan(cnn):
    weight = cnn.params()["classifier.3.weight"].detach().clone()
    weight[5] = 0.0
    sim = cosine_matrix(weight)
    assert np.isfinite(sim).all()
    assert sim[5, 5] == 1.0
    assert np.all(np.delete(sim[5], 5) == 0) and np.all(np.delete(sim[:, 5], 5) == 0)


@pytest.mark.parametrize(
    ("layer", "module"), [("features.2", "features.3"), ("classifier.1", "classifier.2")]
)
def test_correlation_equals_numpy_corrcoef_and_dead_neurons_are_zero(
    cnn, digits, cnn_activations, layer, module
):
    pooled = hooked_pooled(cnn, module, digits.x)
    sim = correlation_matrix(cnn_activations[layer])
    constant = np.ptp(pooled, axis=0) == 0
    assert constant.any(), "these layers have dead ReLUs on the digits data"
    live = np.flatnonzero(~constant)
    expected = np.corrcoef(pooled[:, live], rowvar=False)
    np.testing.assert_allclose(sim[np.ix_(live, live)], expected, atol=1e-6)
    assert np.isfinite(sim).all()
    np.testing.assert_array_equal(np.diag(sim), 1.0)
    for d in np.flatnonzero(constant):
        assert np.all(np.delete(sim[d], d) == 0) and np.all(np.delete(sim[:, d], d) == 0)


def test_correlation_of_two_dimensional_activations_and_of_too_few_samples():
    acts = torch.tensor([[1.0, 2.0, 5.0], [2.0, 4.0, 5.0], [3.0, 7.0, 5.0]])
    sim = correlation_matrix(acts)
    assert sim[0, 1] == pytest.approx(np.corrcoef(acts[:, 0], acts[:, 1])[0, 1])
    assert sim[0, 2] == 0 and sim[2, 2] == 1
    np.testing.assert_array_equal(correlation_matrix(acts[:1]), np.eye(3))
    with pytest.raises(ExplorerError, match="neurons"):
        correlation_matrix(torch.zeros(2, 3, 4, 5))


# --- ordering, size cap, top pairs ----------------------------------------------------------


def test_order_is_a_permutation_and_the_matrix_is_the_ordered_one(cnn, cnn_activations):
    for layer in cnn.layers:
        for result, full in (
            (weight_similarity(cnn, layer.name), cosine_matrix(weight_rows(cnn, layer.name))),
            (
                activation_similarity(cnn_activations[layer.name]),
                correlation_matrix(cnn_activations[layer.name]),
            ),
        ):
            n = layer.neurons
            assert sorted(result.order.tolist()) == list(range(n))
            assert not result.reduced
            np.testing.assert_array_equal(result.bounds, np.arange(n + 1))
            np.testing.assert_allclose(
                result.matrix, full[np.ix_(result.order, result.order)], atol=1e-6
            )


def test_clustering_puts_near_duplicate_neurons_side_by_side():
    rng = np.random.default_rng(2)
    prototypes = rng.normal(size=(4, 30))
    group = np.repeat(np.arange(4), 6)
    weight = prototypes[group] + 0.01 * rng.normal(size=(24, 30))
    shuffle = rng.permutation(24)
    result = summarize(cosine_matrix(torch.from_numpy(weight[shuffle])))
    groups_in_order = group[shuffle][result.order]
    runs = 1 + np.count_nonzero(np.diff(groups_in_order))
    assert runs == 4, groups_in_order


def test_top_pairs_are_the_highest_off_diagonal_entries(cnn):
    full = cosine_matrix(weight_rows(cnn, "classifier.3"))
    result = weight_similarity(cnn, "classifier.3", top_k=15)
    brute = sorted(
        ((full[i, j], i, j) for i, j in itertools.combinations(range(full.shape[0]), 2)),
        reverse=True,
    )[:15]
    assert len(result.pairs) == 15
    assert [v for _, _, v in result.pairs] == pytest.approx([v for v, _, _ in brute])
    for i, j, value in result.pairs:
        assert i < j and value == full[i, j]
    assert top_pairs(full, 0) == ()
    assert len(top_pairs(full[:3, :3], 10)) == 3


def test_a_layer_wider_than_512_gets_a_block_averaged_matrix(wide):
    result = weight_similarity(wide, "0", top_k=5)
    full = cosine_matrix(wide.params()["0.weight"])
    assert result.neurons == 600 and result.reduced
    assert result.matrix.shape[0] == result.matrix.shape[1] <= 512
    assert sorted(result.order.tolist()) == list(range(600))
    assert result.bounds[0] == 0 and result.bounds[-1] == 600
    ordered = full[np.ix_(result.order, result.order)]
    for a, b in [(0, 0), (3, 200), (len(result.bounds) - 2, 7)]:
        rows = slice(result.bounds[a], result.bounds[a + 1])
        cols = slice(result.bounds[b], result.bounds[b + 1])
        assert result.matrix[a, b] == pytest.approx(ordered[rows, cols].mean(), abs=1e-6)
    # The pairs come from the full matrix, in original neuron indices.
    i, j, value = result.pairs[0]
    off_diagonal = full[np.triu_indices(600, k=1)]
    assert value == pytest.approx(off_diagonal.max()) and value == full[i, j]

    torch.manual_seed(1)
    acts = collect_activations(wide, torch.randn(50, 8))["0"]
    assert acts.shape == (50, 600, 1)
    by_activation = activation_similarity(acts)
    assert by_activation.matrix.shape[0] <= 512 and by_activation.reduced


def test_the_matrix_shrinks_to_any_requested_size(cnn):
    result = weight_similarity(cnn, "classifier.1", max_size=100)
    assert result.matrix.shape == (86, 86)  # blocks of ceil(256 / 100) = 3 neurons
    assert np.diff(result.bounds).max() == 3 and result.bounds[-1] == 256
    assert result.matrix.dtype == np.float32


def test_shared_weights_are_untouched(cnn):
    before = {k: v.detach().clone() for k, v in cnn.params().items()}
    for layer in cnn.layers:
        weight_similarity(cnn, layer.name)
    for k, v in cnn.params().items():
        assert torch.equal(v.detach(), before[k])


def test_bad_arguments_raise_explorer_errors(cnn):
    with pytest.raises(ExplorerError, match="square"):
        summarize(np.zeros((3, 4)))
    with pytest.raises(ExplorerError, match="max_size"):
        weight_similarity(cnn, "features.0", max_size=0)
    with pytest.raises(ExplorerError, match="no prunable layer"):
        weight_similarity(cnn, "features.1")
