"""A text model's per-neuron statistics count its sentences' tokens, never their padding.

A padded sentence's padding positions are computed by BERT but enter nothing it outputs
(attention masks them, the mean pooling skips them). The reference here runs the model's own
Python modules with a forward hook (not the exported program the engine runs) and keeps the
real tokens of each sentence by the input ids themselves.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from tiny_bert import module_output, tiny_bert  # noqa: E402

from explorer.activations import neuron_totals, per_image_means  # noqa: E402
from explorer.criteria.wanda import input_norms  # noqa: E402
from explorer.look.layer_summary import layer_summary, neuron_histograms  # noqa: E402
from explorer.look.stats import activation_stats  # noqa: E402

LAYER = "bert.encoder.layer.0.intermediate.dense"  # its activation: after GELU
MODULE = "bert.encoder.layer.0.intermediate"  # BertIntermediate returns GELU(dense(x))


@pytest.fixture(scope="module")
def text():
    bundle, data = tiny_bert(sentences=24)
    acts = module_output(bundle.model, MODULE, data.x)
    tokens = data.x != 0
    assert not tokens.all() and tokens.any(1).all()  # padded sentences, each with tokens
    return bundle, data, acts, tokens


def test_per_sentence_means_are_over_tokens(text):
    bundle, data, acts, tokens = text
    want = np.stack([acts[i][tokens[i]].mean(0).numpy() for i in range(len(data))])
    got = per_image_means(bundle, data, [LAYER], batch_size=7)[LAYER]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    padded = acts.mean(1).numpy()  # what counting the padding would give: not this
    assert np.abs(got - padded).max() > 1e-3


def test_neuron_totals_and_summary_count_tokens_only(text):
    bundle, data, acts, tokens = text
    real = acts[tokens]  # (tokens, neurons)
    totals = neuron_totals(bundle, data, [LAYER], batch_size=5)[LAYER]
    assert totals.values == int(tokens.sum()) < tokens.numel()
    np.testing.assert_allclose(totals.mean_abs.numpy(), real.abs().mean(0).numpy(), rtol=1e-5)
    assert totals.lo == pytest.approx(float(real.min()), rel=1e-5)
    assert totals.hi == pytest.approx(float(real.max()), rel=1e-5)
    layer = layer_summary(bundle, data, LAYER, batch_size=5)
    assert (layer.values, layer.positions) == (int(tokens.sum()), tokens.shape[1])
    np.testing.assert_allclose(layer.lo, real.min(0).values.numpy(), rtol=1e-5)
    np.testing.assert_allclose(layer.hi, real.max(0).values.numpy(), rtol=1e-5)
    assert np.isfinite(layer.means).all()
    histograms = neuron_histograms(bundle, data, layer, batch_size=5)
    assert (histograms.counts.sum(1) == int(tokens.sum())).all()


def test_activation_histogram_counts_every_token_once(text):
    bundle, data, _acts, tokens = text
    stats = activation_stats(bundle, data)
    for layer in bundle.layers:
        s = stats[layer.name]
        if s.positions == tokens.shape[1]:  # a per-token layer
            assert s.values == int(tokens.sum())
            assert s.histogram.counts.sum() == s.values * s.mean_abs.size
            assert np.isfinite(s.mean_abs).all() and np.isfinite(s.apoz).all()


def test_wanda_input_norms_leave_padding_out(text):
    bundle, data, _acts, tokens = text
    seen = []
    dense = bundle.model.get_submodule("bert.encoder.layer.0.output.dense")
    hook = dense.register_forward_pre_hook(lambda _m, args: seen.append(args[0].double()))
    try:
        with torch.no_grad():
            bundle.model(data.x)
    finally:
        hook.remove()
    want = seen[0][tokens].pow(2).sum(0).sqrt()
    got = input_norms(bundle, bundle.layer("bert.encoder.layer.0.output.dense"), data.x)
    torch.testing.assert_close(got[0], want, rtol=1e-5, atol=1e-6)
