"""Weight and activation statistics, checked against numpy and forward hooks on the nn.Module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explorer.activations import collect_activations
from explorer.data import digits_validation
from explorer.errors import DataError, ExplorerError
from explorer.load.demos import load_demo
from explorer.look.stats import (
    activation_stats,
    count_below,
    magnitude_histogram,
    weight_histogram,
)

# Layer name -> the ReLU module (or, for a layer without one, the layer module) whose output
# is the layer's activation, written out by hand from the zoo's architectures.
HOOKED = {
    "digits-mlp": {"fc1": "relu1", "fc2": "relu2", "fc3": "fc3"},
    "digits-cnn": {
        "features.0": "features.1",
        "features.2": "features.3",
        "classifier.1": "classifier.2",
        "classifier.3": "classifier.4",
        "classifier.5": "classifier.5",
    },
    "digits-resnet": {
        "stem.0": "stem.2",
        "layer1.conv1": "layer1.relu1",
        "layer1.conv2": "layer1.conv2",  # no ReLU of its own: BatchNorm, then the skip sum
        "layer3.downsample.0": "layer3.downsample.0",
    },
}


@pytest.fixture(scope="module")
def data():
    return digits_validation()


@pytest.fixture(scope="module", params=["digits-mlp", "digits-cnn", "digits-resnet"])
def bundle(request):
    return load_demo(request.param)


def hooked_outputs(bundle, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each mapped layer's activation from forward hooks on the original nn.Module."""
    modules = dict(bundle.model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for layer, module in HOOKED[bundle.name].items():

        def keep(_mod, _inp, out, layer=layer):
            outputs[layer] = out.detach().clone()

        handles.append(modules[module].register_forward_hook(keep))
    try:
        with torch.no_grad():
            bundle.model(x)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def weight_of(bundle, layer: str) -> np.ndarray:
    return bundle.params()[bundle.layer(layer).weight].detach().numpy().copy()


# --- weight histograms --------------------------------------------------------------------


def test_linear_histogram_equals_numpy_on_raw_magnitudes(bundle):
    for layer in bundle.layers:
        mags = np.abs(weight_of(bundle, layer.name)).ravel()
        hist = weight_histogram(bundle, layer.name)
        expected, expected_edges = np.histogram(mags, bins=200, range=(0.0, mags.max()))
        np.testing.assert_array_equal(hist.counts, expected)
        np.testing.assert_allclose(hist.edges, expected_edges)
        assert hist.counts.sum() == hist.total == mags.size
        assert hist.zeros == np.count_nonzero(mags == 0)


def test_log_histogram_reports_injected_zeros_separately(bundle):
    shared = bundle.params()[bundle.layers[0].weight]
    before = shared.detach().clone()
    weight = shared.detach().clone()
    weight.view(-1)[::5] = 0.0
    hist = magnitude_histogram(weight, scale="log")

    mags = weight.abs().numpy().ravel()
    nonzero = mags[mags > 0]
    assert hist.zeros == np.count_nonzero(mags == 0) == len(range(0, mags.size, 5))
    assert hist.zeros + hist.counts.sum() == hist.total == mags.size
    assert hist.edges[0] == nonzero.min() and hist.edges[-1] == nonzero.max()
    steps = np.diff(np.log10(hist.edges))
    np.testing.assert_allclose(steps, steps[0], rtol=1e-6)
    # Independent binning on the log10 axis; a value lying on an edge may round either way.
    lo, hi = np.log10(nonzero.min()), np.log10(nonzero.max())
    expected, _ = np.histogram(np.log10(nonzero.astype(np.float64)), bins=200, range=(lo, hi))
    assert np.abs(hist.counts - expected).sum() <= 4
    assert torch.equal(shared.detach(), before), "the shared weight was modified"


def test_histograms_have_a_fixed_size_whatever_the_layer(bundle):
    for layer in bundle.layers:
        for scale in ("linear", "log"):
            hist = weight_histogram(bundle, layer.name, scale=scale)
            assert hist.counts.shape == (200,) and hist.edges.shape == (201,)
            assert np.all(np.diff(hist.edges) > 0)
    small = weight_histogram(bundle, bundle.layers[0].name, bins=17, scale="log")
    assert small.counts.shape == (17,)


def test_degenerate_weights_give_finite_histograms():
    for values in (torch.zeros(4, 3), torch.full((4, 3), -0.25)):
        for scale in ("linear", "log"):
            hist = magnitude_histogram(values, bins=10, scale=scale)
            assert np.all(np.isfinite(hist.edges)) and np.all(np.diff(hist.edges) > 0)
            in_bins = hist.counts.sum() + (hist.zeros if scale == "log" else 0)
            assert in_bins == hist.total == 12


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_count_below_matches_a_direct_count_at_bin_edges(bundle, scale):
    weight = torch.from_numpy(weight_of(bundle, bundle.layers[-1].name))
    weight.view(-1)[::9] = 0.0
    mags = weight.abs().numpy().ravel()
    hist = magnitude_histogram(weight, scale=scale)
    for k in (1, 7, 50, 120, 199):
        assert count_below(hist, float(hist.edges[k])) == np.count_nonzero(mags < hist.edges[k])
    assert count_below(hist, 0.0) == 0
    assert count_below(hist, -1.0) == 0
    assert count_below(hist, float(mags.max()) * 2) == mags.size
    thresholds = np.sort(np.random.default_rng(0).uniform(0, mags.max() * 1.1, 200))
    below = [count_below(hist, float(t)) for t in thresholds]
    assert np.all(np.diff(below) >= 0)
    # Between edges the estimate stays between the counts at the neighbouring edges.
    for t in thresholds[::20]:
        k = np.searchsorted(hist.edges, t, side="right") - 1
        if 0 <= k < len(hist.counts):
            lower = np.count_nonzero(mags < hist.edges[k])
            upper = np.count_nonzero(mags < hist.edges[k + 1])
            assert lower <= count_below(hist, float(t)) <= upper


def test_bad_arguments_raise_explorer_errors(bundle):
    with pytest.raises(ExplorerError, match="bins"):
        weight_histogram(bundle, bundle.layers[0].name, bins=0)
    with pytest.raises(ExplorerError, match="scale"):
        weight_histogram(bundle, bundle.layers[0].name, scale="sqrt")
    with pytest.raises(ExplorerError, match="no prunable layer 'nope'"):
        weight_histogram(bundle, "nope")


# --- activation statistics ----------------------------------------------------------------


def test_apoz_mean_abs_and_dead_match_forward_hooks(bundle, data):
    stats = activation_stats(bundle, data)
    outputs = hooked_outputs(bundle, data.x)
    assert set(stats) == set(bundle.layer_names)
    for name, out in outputs.items():
        per_neuron = out.transpose(0, 1).reshape(out.shape[1], -1)  # (C, N * positions)
        expected_apoz = (per_neuron == 0).double().mean(dim=1).numpy()
        expected_mean = per_neuron.abs().double().mean(dim=1).numpy()
        expected_dead = np.flatnonzero((per_neuron == 0).all(dim=1).numpy())
        got = stats[name]
        np.testing.assert_allclose(got.apoz, expected_apoz, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got.mean_abs, expected_mean, rtol=1e-6)
        np.testing.assert_array_equal(got.dead, expected_dead)
        assert got.samples == len(data)
        assert got.positions == (1 if out.dim() == 2 else out.shape[2] * out.shape[3])


def test_activation_histogram_equals_numpy_on_hooked_values(bundle, data):
    stats = activation_stats(bundle, data)
    for name, out in hooked_outputs(bundle, data.x).items():
        values = out.numpy().ravel()
        expected, _ = np.histogram(values, bins=200, range=(values.min(), values.max()))
        hist = stats[name].histogram
        # The exported program and the nn.Module may differ in the last bit (BatchNorm is
        # fused differently), which can move a value lying on a bin edge to its neighbour.
        assert np.abs(hist.counts - expected).sum() <= 10
        np.testing.assert_allclose(hist.edges[[0, -1]], [values.min(), values.max()], rtol=1e-6)
        assert hist.total == values.size and hist.zeros == np.count_nonzero(values == 0)


def test_per_neuron_arrays_have_one_entry_per_neuron(bundle, data):
    stats = activation_stats(bundle, data)
    for layer in bundle.layers:
        got = stats[layer.name]
        assert got.mean_abs.shape == got.apoz.shape == (layer.neurons,)
        assert got.histogram.counts.shape == (200,)
        assert np.all((got.apoz >= 0) & (got.apoz <= 1))
        assert np.all(got.apoz[got.dead] == 1)


def test_the_program_runs_once_for_all_layers(bundle, data, monkeypatch):
    calls = []
    run = bundle.program.run

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0])
        return run(*args, **kwargs)

    monkeypatch.setattr(bundle.program, "run", counted)
    activation_stats(bundle, data)
    assert calls == [len(data)]
    calls.clear()
    collect_activations(bundle, data, batch_size=100)
    assert calls == [100, 100, 100, 60]


def test_batched_collection_equals_one_batch(bundle, data):
    whole = activation_stats(bundle, data)
    batched = activation_stats(bundle, data, batch_size=37)
    for name, got in batched.items():
        np.testing.assert_array_equal(got.apoz, whole[name].apoz)
        np.testing.assert_allclose(got.mean_abs, whole[name].mean_abs, rtol=1e-5)
        np.testing.assert_array_equal(got.dead, whole[name].dead)
        assert np.abs(got.histogram.counts - whole[name].histogram.counts).sum() <= 4


def test_collection_does_not_touch_the_model(bundle, data):
    before = {k: v.detach().clone() for k, v in bundle.params().items()}
    collect_activations(bundle, data.x[:10])
    assert not bundle.model.training
    for k, v in bundle.params().items():
        assert torch.equal(v.detach(), before[k])


def test_data_of_the_wrong_shape_is_refused(bundle):
    with pytest.raises(DataError, match=r"expects \(N, 1, 8, 8\)"):
        collect_activations(bundle, torch.zeros(4, 64))
