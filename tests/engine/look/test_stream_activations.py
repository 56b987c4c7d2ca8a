"""Activation consumers stream (issue 11): batch by batch, the same numbers as all at once.

The reference is the nn.Module's own forward with hooks (test_stats' ``hooked_outputs``),
reduced here with plain numpy on every image at once. It runs over the same batches as the
code under test: a linear layer's matmul may round its last bit differently for another
batch size, which would move a value lying on a bin edge; the reduction is what is tested.
The batch of 37 images does not divide the 360 digits images (the last batch has 27).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_stats import HOOKED, hooked_outputs

from explorer.activations import Replay, stream_activations
from explorer.criteria.base import ScoreContext
from explorer.criteria.from_data import APoZ, MeanActivation
from explorer.errors import ExplorerError
from explorer.load.demos import load_demo
from explorer.look.drilldown import top_images
from explorer.look.similarity import layer_correlation
from explorer.look.stats import activation_stats

BATCH = 37


@pytest.fixture
def bundle(any_demo):
    return any_demo


@pytest.fixture
def data(digits):
    return digits


@pytest.fixture
def reference(bundle, data) -> dict[str, np.ndarray]:
    """Each hooked layer's activation on every image, (N, neurons, positions) float32."""
    parts = [hooked_outputs(bundle, data.x[s : s + BATCH]) for s in range(0, len(data), BATCH)]
    whole = {layer: torch.cat([p[layer] for p in parts]) for layer in HOOKED[bundle.name]}
    return {layer: out.reshape(out.shape[0], out.shape[1], -1).numpy()
            for layer, out in whole.items()}


def test_the_stream_is_the_hooked_forward_batch_by_batch(bundle, data, reference):
    sizes = []
    for batch in stream_activations(bundle, data, list(reference), batch_size=BATCH):
        start = sum(sizes)
        sizes.append(next(iter(batch.values())).shape[0])
        for layer, acts in batch.items():
            np.testing.assert_array_equal(acts.numpy(), reference[layer][start : start + sizes[-1]])
    assert sizes == [BATCH] * 9 + [27]


def test_activation_stats_equal_numpy_on_every_image_at_once(bundle, data, reference):
    stats = activation_stats(bundle, data, batch_size=BATCH)
    for layer, acts in reference.items():
        got = stats[layer]
        edges = np.linspace(float(acts.min()), float(acts.max()), 201)
        np.testing.assert_array_equal(got.histogram.edges, edges)
        np.testing.assert_array_equal(got.histogram.counts, np.histogram(acts, bins=edges)[0])
        assert got.histogram.total == acts.size
        assert got.histogram.zeros == np.count_nonzero(acts == 0)
        np.testing.assert_allclose(got.mean_abs, np.abs(acts).mean(axis=(0, 2), dtype=np.float64),
                                   rtol=1e-6)
        np.testing.assert_allclose(got.apoz, (acts == 0).mean(axis=(0, 2)), rtol=1e-6)
        np.testing.assert_array_equal(got.dead, np.flatnonzero((acts == 0).all(axis=(0, 2))))
        assert (got.samples, got.positions) == acts.shape[::2]


def test_activation_criteria_equal_numpy_on_every_image_at_once(bundle, data, reference):
    ctx = ScoreContext(bundle, data)
    for layer, acts in reference.items():
        spec = bundle.layer(layer)
        mean_abs = MeanActivation(batch_size=BATCH).score(spec, ctx).numpy()
        apoz = APoZ(batch_size=BATCH).score(spec, ctx).numpy()
        np.testing.assert_allclose(mean_abs, np.abs(acts).mean(axis=(0, 2)), rtol=1e-6)
        np.testing.assert_allclose(apoz, 1 - (acts == 0).mean(axis=(0, 2)), rtol=1e-6, atol=1e-7)
        # The default batch (every digits image at once) gives the same scores.
        np.testing.assert_allclose(MeanActivation().score(spec, ctx).numpy(), mean_abs, rtol=1e-6)


def test_activation_correlation_equals_numpy_corrcoef(bundle, data, reference):
    for layer, acts in reference.items():
        means = acts.mean(axis=2, dtype=np.float64)
        constant = means.std(axis=0) == 0
        with np.errstate(invalid="ignore", divide="ignore"):
            expected = np.corrcoef(means, rowvar=False)
        expected[constant, :] = 0.0  # no correlation is defined for a constant neuron
        expected[:, constant] = 0.0
        np.fill_diagonal(expected, 1.0)
        got = layer_correlation(bundle, data, layer, batch_size=BATCH)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_top_images_equal_a_stable_sort_of_every_image(bundle, data, reference):
    for layer, acts in reference.items():
        for neuron in {0, acts.shape[1] // 2, acts.shape[1] - 1}:
            per_image = acts[:, neuron].mean(axis=1, dtype=np.float64)
            expected = np.argsort(-per_image, kind="stable")[:8]  # ties: the lower index
            got = top_images(bundle, data, layer, neuron, k=8, batch_size=BATCH)
            np.testing.assert_array_equal(got.indices, expected)
            np.testing.assert_allclose(got.values, per_image[expected], rtol=1e-6)


def test_replay_runs_the_model_once_when_the_batches_fit_and_again_when_not(data, monkeypatch):
    mlp = load_demo("digits-mlp")
    calls = []
    run = mlp.program.run
    monkeypatch.setattr(mlp.program, "run", lambda x, **kw: calls.append(len(x)) or run(x, **kw))
    small = Replay(mlp, data, batch_size=100)
    first, again = [b["fc1"] for b in small], [b["fc1"] for b in small]
    assert calls == [100, 100, 100, 60]
    assert all(a is b for a, b in zip(first, again, strict=True))  # replayed from memory
    calls.clear()
    tight = Replay(mlp, data, batch_size=100, keep_bytes=100 * 128 * 4)  # one batch of fc1
    first, again = [b["fc1"] for b in tight], [b["fc1"] for b in tight]
    assert calls == [100, 100, 100, 60] * 2 and tight.kept is None
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_bad_arguments_are_refused_before_the_model_runs(cnn, digits):
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ExplorerError, match="batch_size"):
            stream_activations(cnn, digits, batch_size=bad)
    with pytest.raises(ExplorerError, match="no prunable layer 'conv9'"):
        Replay(cnn, digits, ["conv9"])
    with pytest.raises(ExplorerError, match="neuron"):
        top_images(cnn, digits, "features.0", 10_000)


# ------------------------------------------------------------------------------- memory

CIFAR_SIZE = """
import torch
from torch import nn
from hostile_files import peak_growth
from explorer.bundle import bundle_from_module

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
bundle = bundle_from_module(model, "cifar-size", (3, 32, 32))
"""  # a memory script's start: a model with two 32-channel 32x32 layers

MEASURE = CIFAR_SIZE + """
from explorer.look.stats import activation_stats

x = torch.rand(2000, 3, 32, 32)
whole = sum(2000 * layer.neurons * 4 * (32 * 32 if layer.kind == "conv2d" else 1)
            for layer in bundle.layers)
with peak_growth() as growth:
    stats = activation_stats(bundle, x, batch_size=50)
assert stats["0"].samples == 2000
print(whole, growth.bytes)
"""


@pytest.mark.slow
def test_activation_stats_memory_does_not_grow_with_the_images():
    whole, grown = whole_and_growth(MEASURE)
    assert whole > 500 * 2**20  # every image's activations at once: ~0.5 GB
    # Streamed: about one batch's graph node values (~40-50 MiB for 50 images here; with 100
    # images ~85-95 MiB, which came within reach of the bound on a loaded machine); all at
    # once it was the whole tensor, twice while concatenated.
    assert grown < whole / 4, f"peak growth {grown / 2**20:.0f} MiB vs {whole / 2**20:.0f} MiB"


def whole_and_growth(script: str) -> tuple[int, int]:
    """The two numbers ``script`` prints last (bytes all at once, peak growth streamed), run
    in a fresh process: after hundreds of tests the heap's freed blocks blur the peak."""
    tests = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tests)}, timeout=600)
    assert done.returncode == 0, done.stderr
    whole, grown = map(int, done.stdout.split()[-2:])
    return whole, grown
