"""The drill-down's layer summary and histograms (issue 11): streamed, the numbers of the
whole tensor.

The reference is every image's activations at once (``collect_activations``, what the
Similarity page held before), reduced with the functions that reduced it there and with
plain numpy. Both run over the same 37-image batches: a linear layer's matmul may round
its last bit differently for another batch size, and the reduction is what is tested.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_stream_activations import CIFAR_SIZE, whole_and_growth
from torch import nn

from explorer.activations import collect_activations
from explorer.bundle import bundle_from_module
from explorer.errors import ExplorerError
from explorer.look.drilldown import rank_images
from explorer.look.layer_summary import layer_summary, neuron_histograms
from explorer.look.similarity import activation_similarity, correlation_matrix

BATCH = 37


@pytest.fixture(scope="module")
def demo_layers(any_demo, digits):
    """(bundle, layer, whole activations (N, neurons, positions), summary, histograms)."""
    whole = collect_activations(any_demo, digits, batch_size=BATCH)
    return [(any_demo, layer, acts.numpy(), layer_summary(any_demo, digits, layer, BATCH))
            for layer, acts in whole.items()]


def test_the_summary_gives_the_whole_tensors_heatmap_pairs_apoz_and_top_images(demo_layers):
    for _bundle, layer, acts, summary in demo_layers:
        n, neurons, positions = acts.shape
        assert (summary.samples, summary.means.shape, summary.positions) == (
            n, (n, neurons), positions)
        whole, streamed = activation_similarity(acts), activation_similarity(summary.means)
        np.testing.assert_allclose(streamed.matrix, whole.matrix, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(streamed.order, whole.order)
        assert [p[:2] for p in streamed.pairs] == [p[:2] for p in whole.pairs], layer
        np.testing.assert_allclose([p[2] for p in streamed.pairs], [p[2] for p in whole.pairs],
                                   atol=1e-6)
        for i, j in [(0, neurons - 1), (neurons // 3, neurons // 2)]:
            if i != j:
                assert correlation_matrix(summary.means[:, [i, j]])[0, 1] == pytest.approx(
                    correlation_matrix(acts[:, [i, j], :])[0, 1], abs=1e-9)
        np.testing.assert_array_equal(summary.apoz, (acts == 0).mean(axis=(0, 2)))
        np.testing.assert_array_equal(summary.lo, acts.min(axis=(0, 2)))
        np.testing.assert_array_equal(summary.hi, acts.max(axis=(0, 2)))
        for neuron in range(neurons):
            top, expected = rank_images(summary.means, neuron), rank_images(acts, neuron)
            np.testing.assert_array_equal(top.indices, expected.indices)
            np.testing.assert_array_equal(top.values, expected.values)


def test_every_neurons_histogram_is_numpys_on_its_own_range(demo_layers, digits):
    for bundle, layer, acts, summary in demo_layers:
        hists = neuron_histograms(bundle, digits, summary, batch_size=BATCH)
        for neuron in range(acts.shape[1]):
            values = acts[:, neuron].ravel()
            lo, hi = float(values.min()), float(values.max())
            edges = np.linspace(lo, hi, 41) if lo < hi else np.linspace(lo - 0.5, hi + 0.5, 41)
            hist = hists.of(neuron)
            np.testing.assert_array_equal(hist.edges, edges)
            np.testing.assert_array_equal(hist.counts, np.histogram(values, bins=edges)[0],
                                          err_msg=f"{bundle.name} {layer} neuron {neuron}")
            assert hist.total == values.size
            assert hist.zeros == np.count_nonzero(values == 0)


def edge_model() -> nn.Module:
    """Neuron 0 of layer '0' outputs its input; neuron 1 is the constant 3."""
    model = nn.Sequential(nn.Linear(1, 2), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [0.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 3.0]))
    return model


def test_values_on_and_next_to_bin_edges_fall_where_numpy_puts_them():
    bundle = bundle_from_module(edge_model(), "edges", (1,))
    edges32 = np.arange(7, dtype=np.float32) * np.float32(0.25)  # bins of 0.25 on [0, 1.5]
    inner = edges32[1:-1]
    values = np.concatenate([edges32, inner, np.nextafter(inner, np.float32(-1)),
                             np.nextafter(inner, np.float32(2))]).astype(np.float32)
    x = torch.from_numpy(values)[:, None]
    summary = layer_summary(bundle, x, "0", batch_size=4)
    hists = neuron_histograms(bundle, x, summary, bins=6, batch_size=4)
    np.testing.assert_array_equal(hists.edges[0], edges32.astype(np.float64))
    np.testing.assert_array_equal(hists.counts[0], np.histogram(values, bins=hists.edges[0])[0])
    assert hists.counts[0].tolist() == [2, 4, 4, 4, 4, 4]  # the last bin holds 1.5 itself
    assert hists.counts[1].tolist() == [0, 0, 0, len(values), 0, 0]  # constant: numpy's unit
    assert summary.apoz.tolist() == [1 / len(values), 0.0]


def test_bad_requests_are_one_explorer_error(cnn, digits):
    with pytest.raises(ExplorerError, match="no prunable layer 'conv9'"):
        layer_summary(cnn, digits, "conv9")
    summary = layer_summary(cnn, digits.x[:50], "features.0")
    with pytest.raises(ExplorerError, match="of 50 images but the data has 360"):
        neuron_histograms(cnn, digits, summary)
    with pytest.raises(ExplorerError, match="bins"):
        neuron_histograms(cnn, digits.x[:50], summary, bins=0)
    broken = dataclasses.replace(summary, hi=np.full_like(summary.hi, np.nan))
    with pytest.raises(ExplorerError, match="NaN or infinite"):
        neuron_histograms(cnn, digits.x[:50], broken)


# ------------------------------------------------------------------------------- memory

MEASURE = CIFAR_SIZE + """
from explorer.look.layer_summary import layer_summary, neuron_histograms

x = torch.rand(4000, 3, 32, 32)
whole = 4000 * 32 * 32 * 32 * 4  # layer '0' on every image at once: 500 MiB
with peak_growth() as growth:
    summary = layer_summary(bundle, x, "0", batch_size=50)
    hists = neuron_histograms(bundle, x, summary, batch_size=50)
assert summary.means.shape == (4000, 32) and hists.counts.sum() == 4000 * 32 * 32 * 32
print(whole, growth.bytes)
"""


@pytest.mark.slow
def test_the_summary_and_histograms_do_not_hold_the_positions():
    whole, grown = whole_and_growth(MEASURE)
    # Streamed: one batch's node values and its binning, and 4,000 x 32 means (1 MiB).
    assert grown < whole / 5, f"peak growth {grown / 2**20:.0f} MiB vs {whole / 2**20:.0f} MiB"
