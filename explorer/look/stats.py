"""What a layer looks like: weight-magnitude and activation statistics, pre-binned.

Everything here is reduced on the Python side to arrays whose size does not grow with the
model: a histogram has a fixed number of bins, per-neuron arrays have one entry per output
neuron (channel, for a convolution). The browser never receives raw weights or activations.

Functions take a :class:`~explorer.bundle.ModelBundle` and a layer name (or plain tensors)
and return frozen dataclasses of numpy arrays. Nothing here writes into the model or its
shared parameter tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from explorer.activations import (
    NeuronTotals,
    Replay,
    find_layer,
    for_each,
    real_values,
    reduce_batches,
)
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError

DEFAULT_BINS = 200
Scale = Literal["linear", "log"]


@dataclass(frozen=True)
class Histogram:
    """A fixed-size histogram: ``counts[k]`` values lie in ``[edges[k], edges[k + 1])``.

    The last bin is closed on the right. ``edges`` (bins + 1,) and ``counts`` (bins,) are
    numpy arrays; ``total`` is the number of values summarised and ``zeros`` how many of them
    are exactly 0.

    * ``scale="linear"``: bins of equal width over the value range (``[0, max|w|]`` for
      magnitudes); exact zeros are counted in the first bin as well, so
      ``counts.sum() == total``.
    * ``scale="log"``: log10-spaced bins from the smallest nonzero value to the largest;
      zeros have no place on a log axis and are only in ``zeros``, so
      ``zeros + counts.sum() == total``.
    """

    edges: np.ndarray
    counts: np.ndarray
    zeros: int
    total: int
    scale: Scale = "linear"


@dataclass(frozen=True)
class ActivationStats:
    """One layer's activations on a data set, reduced to what the pages draw.

    ``histogram`` bins every activation value (all samples, neurons and positions) linearly
    between the smallest and the largest. Per-neuron arrays have shape (neurons,):

    * ``mean_abs``: mean |a| over samples (and spatial positions, for a convolution);
    * ``apoz``: Average Percentage of Zeros, the fraction of exactly-zero outputs over
      samples and positions (Hu et al. 2016, "Network Trimming", arXiv:1607.03250). After a
      ReLU a high APoZ marks a neuron that rarely fires: a candidate for removal;
    * ``dead``: indices (int64) of the neurons that are zero on every sample and position.

    ``samples`` is the number of inputs and ``positions`` the spatial positions per sample
    (H * W for a convolution, 1 for a linear layer on (N, features) inputs, the tokens of a
    text model's layer); ``values`` the values per neuron, samples x positions less the
    padding of token inputs (every statistic leaves padding out).
    """

    layer: str
    histogram: Histogram
    mean_abs: np.ndarray
    apoz: np.ndarray
    dead: np.ndarray
    samples: int
    positions: int
    values: int


def magnitude_histogram(
    values: torch.Tensor | np.ndarray, bins: int = DEFAULT_BINS, scale: Scale = "linear"
) -> Histogram:
    """Histogram of ``|values|`` (any shape) in ``bins`` bins on a linear or log10 axis.

    Linear bins span ``[0, max|v|]``; log bins span ``[min nonzero |v|, max|v|]`` with exact
    zeros reported in ``Histogram.zeros`` (see :class:`Histogram`).
    """
    check_bins(bins)
    mags = np.abs(to_numpy(values)).ravel()
    zeros = int(np.count_nonzero(mags == 0))
    if scale == "linear":
        top = float(mags.max()) if mags.size else 0.0
        edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)
        counts, _ = np.histogram(mags, bins=edges)
    elif scale == "log":
        nonzero = mags[mags > 0]
        lo, hi = (float(nonzero.min()), float(nonzero.max())) if nonzero.size else (0.1, 1.0)
        if lo == hi:  # one distinct magnitude: give its bin a decade of width
            lo, hi = lo / math.sqrt(10), hi * math.sqrt(10)
        edges = np.logspace(math.log10(lo), math.log10(hi), bins + 1)
        edges[0], edges[-1] = lo, hi  # logspace may miss the data's ends by one ulp
        counts, _ = np.histogram(nonzero, bins=edges)
    else:
        raise ExplorerError(f"Histogram scale must be 'linear' or 'log'; got {scale!r}.")
    return Histogram(edges, counts.astype(np.int64), zeros, int(mags.size), scale)


def weight_histogram(
    bundle: ModelBundle, layer: str, bins: int = DEFAULT_BINS, scale: Scale = "linear"
) -> Histogram:
    """Histogram of |w| over the weight of ``layer`` (see :func:`magnitude_histogram`)."""
    weight = bundle.params()[find_layer(bundle, layer).weight]
    return magnitude_histogram(weight.detach(), bins, scale)


def count_below(histogram: Histogram, threshold: float) -> float:
    """How many summarised values lie below ``threshold``, read off the histogram alone.

    Whole bins below the threshold count fully; the bin containing it counts in proportion
    to where the threshold falls inside it (linearly on the histogram's own axis: |w| for a
    linear histogram, log10 |w| for a log one). The answer is exact when ``threshold`` is a
    bin edge, 0 for a threshold <= 0, ``total`` above the largest value. For a log histogram
    the exact zeros are always below any positive threshold.
    """
    if threshold <= 0:
        return 0.0
    edges, counts = histogram.edges, histogram.counts
    below = float(histogram.zeros) if histogram.scale == "log" else 0.0
    if threshold <= edges[0]:
        return below
    if threshold >= edges[-1]:
        return below + float(counts.sum())
    k = int(np.searchsorted(edges, threshold, side="right")) - 1
    lo, hi, t = edges[k], edges[k + 1], threshold
    if histogram.scale == "log":
        lo, hi, t = math.log10(lo), math.log10(hi), math.log10(t)
    return below + float(counts[:k].sum()) + float(counts[k]) * (t - lo) / (hi - lo)


def summarize_activations(
    layer: str, activations: torch.Tensor, bins: int = DEFAULT_BINS
) -> ActivationStats:
    """Reduce one layer's activations (N, neurons, positions) to :class:`ActivationStats`."""
    check_bins(bins)
    if activations.dim() != 3:
        raise ExplorerError(
            f"Activations of '{layer}' must be shaped (N, neurons, positions); "
            f"got {tuple(activations.shape)}."
        )
    batches = [{layer: activations}]
    return _summaries(batches, bins)[layer]


def activation_stats(
    bundle: ModelBundle,
    data: ValidationSet | torch.Tensor,
    bins: int = DEFAULT_BINS,
    batch_size: int | None = None,
) -> dict[str, ActivationStats]:
    """:class:`ActivationStats` of every prunable layer on ``data``, streamed in batches.

    Two passes over the batches (:class:`~explorer.activations.Replay`: one run of the model
    when the activations are small): the first sums per neuron and finds each layer's range,
    the second counts the histograms on bins fixed by those ranges. Memory: one batch, the
    histograms and the per-neuron arrays, whatever the number of images.
    """
    check_bins(bins)
    return _summaries(Replay(bundle, data, batch_size=batch_size), bins)


def _summaries(batches: Iterable[dict[str, torch.Tensor]], bins: int
               ) -> dict[str, ActivationStats]:
    """:class:`ActivationStats` per layer of ``batches``, iterated twice (sums, then counts)."""
    totals = reduce_batches(batches)
    edges = {name: linear_edges(t.lo, t.hi, bins) for name, t in totals.items()}
    counts = {name: np.zeros(bins, dtype=np.int64) for name in totals}

    def count(name: str, acts: torch.Tensor) -> None:
        counts[name] += np.histogram(to_numpy(real_values(acts)), bins=edges[name])[0]

    for_each(batches, count)
    return {name: _stats(name, t, Histogram(edges[name], counts[name], int(t.zeros.sum()),
                                            t.values * t.zeros.numel(), "linear"))
            for name, t in totals.items()}


def linear_edges(lo: float, hi: float, bins: int) -> np.ndarray:
    """``bins`` equal bins from ``lo`` to ``hi``; a constant sample gets numpy's unit range."""
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _stats(layer: str, totals: NeuronTotals, histogram: Histogram) -> ActivationStats:
    zeros = totals.zeros.numpy()
    return ActivationStats(
        layer=layer,
        histogram=histogram,
        mean_abs=totals.mean_abs.numpy(),
        apoz=totals.apoz.numpy(),
        dead=np.flatnonzero(zeros == totals.values).astype(np.int64),
        samples=totals.samples,
        positions=totals.positions,
        values=totals.values,
    )


def to_numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """A numpy view of ``values`` (detached from autograd); callers must not write into it."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ExplorerError(f"The number of bins must be a positive integer; got {bins!r}.")
