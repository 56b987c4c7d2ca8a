"""One layer's neurons on the validation set, reduced in streamed passes for the drill-down.

The Similarity page and the neuron drill-down ask of a layer: each image's activation per
neuron averaged over positions (the correlation heatmap, a pair's correlation, the images a
neuron responds to most), the fraction of exactly-zero outputs per neuron (APoZ, Hu et al.
2016, arXiv:1607.03250) and a histogram of each neuron's values. Held whole, the
activations are (N, neurons, positions): a CIFAR ResNet-18's 64-channel 32x32 layer on
10,000 images is 2.6 GB. Here they pass batch by batch
(:func:`explorer.activations.stream_activations`) and what stays is

* :class:`LayerSummary`, from one pass: N x neurons means and a few numbers per neuron,
  whatever the number of positions;
* :class:`NeuronHistograms`, from a second pass (a histogram's bins need the range before
  the counts): a fixed number of bins per neuron, on each neuron's own range.

Both are exactly what numpy computes on the whole tensor (same batches, same values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.activations import (
    find_layer,
    for_each,
    image_means,
    present,
    real_values,
    stream_activations,
    value_range,
)
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.look.stats import Histogram, check_bins, linear_edges

HISTOGRAM_BINS = 40  # per neuron: a drill-down chart, not a statistic


@dataclass(frozen=True)
class LayerSummary:
    """One layer's activations on N images, reduced per image and per neuron.

    * ``means`` (N, neurons) float64: each image's activation averaged over positions (a
      convolution channel's map becomes one number; :func:`explorer.activations.per_image_means`);
    * ``zeros`` (neurons,) int64: how many of a neuron's ``values`` are exactly 0;
    * ``lo``, ``hi`` (neurons,) float64: each neuron's smallest and largest value;
    * ``positions``: positions per image; ``values``: values per neuron over all images,
      N x ``positions`` less the padding of token inputs (which every statistic leaves out).
    """

    layer: str
    means: np.ndarray
    zeros: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    positions: int
    values: int

    @property
    def samples(self) -> int:
        return int(self.means.shape[0])

    @property
    def apoz(self) -> np.ndarray:
        """The fraction of exactly-zero outputs per neuron over images and positions."""
        return self.zeros / self.values


@dataclass(frozen=True)
class NeuronHistograms:
    """Every neuron's values (images x positions) binned on its own range.

    ``edges`` (neurons, bins + 1) are ``bins`` equal bins from the neuron's smallest to its
    largest value (a constant neuron: one unit around it, as numpy does); ``counts``
    (neurons, bins) int64 as ``np.histogram`` counts on those edges, the last bin closed.
    """

    layer: str
    edges: np.ndarray
    counts: np.ndarray
    zeros: np.ndarray

    def of(self, neuron: int) -> Histogram:
        """Neuron ``neuron``'s histogram."""
        counts = self.counts[neuron]
        return Histogram(self.edges[neuron], counts, int(self.zeros[neuron]), int(counts.sum()))


def layer_summary(bundle: ModelBundle, data: ValidationSet | torch.Tensor, layer: str,
                  batch_size: int | None = None) -> LayerSummary:
    """:class:`LayerSummary` of ``layer`` on ``data``, from one streamed pass.

    Args:
        bundle: the model.
        data: a validation set or inputs (N, *bundle.input_shape).
        layer: a prunable layer name.
        batch_size: images per batch (default: the evaluator's batch).

    Memory: one batch plus N x neurons float64.
    """
    neurons = find_layer(bundle, layer).neurons
    means: list[np.ndarray] = []
    zeros = torch.zeros(neurons, dtype=torch.int64)
    lo = torch.full((neurons,), float("inf"))
    hi = torch.full((neurons,), float("-inf"))
    positions = values = 0

    def add(_name: str, acts: torch.Tensor) -> None:
        nonlocal positions, values, lo, hi
        means.append(image_means(acts))
        zeros.add_((acts == 0).sum((0, 2)))
        low, high = value_range(acts)
        lo, hi = torch.minimum(lo, low), torch.maximum(hi, high)
        positions = acts.shape[2]
        values += present(acts)

    for_each(stream_activations(bundle, data, [layer], batch_size), add)
    return LayerSummary(layer, np.concatenate(means), zeros.numpy(), lo.double().numpy(),
                        hi.double().numpy(), positions, values)


def neuron_histograms(bundle: ModelBundle, data: ValidationSet | torch.Tensor,
                      summary: LayerSummary, bins: int = HISTOGRAM_BINS,
                      batch_size: int | None = None) -> NeuronHistograms:
    """Every neuron's histogram of ``summary.layer`` on ``data``, in one streamed pass on
    bins fixed by ``summary``'s per-neuron range (``summary`` must come from ``data``).

    Memory: one batch plus neurons x bins counts.
    """
    check_bins(bins)
    if not (np.isfinite(summary.lo).all() and np.isfinite(summary.hi).all()):
        raise ExplorerError(f"Layer '{summary.layer}' outputs NaN or infinite values on this "
                            "data: its activations cannot be binned.")
    edges = np.stack([linear_edges(a, b, bins) for a, b in zip(summary.lo, summary.hi,
                                                                strict=True)])
    counts = torch.zeros(edges.shape[0] * bins, dtype=torch.int64)
    table = torch.from_numpy(edges)
    samples = 0

    def add(_name: str, acts: torch.Tensor) -> None:
        nonlocal samples
        counts.add_(_bin_counts(acts, table))
        samples += acts.shape[0]

    for_each(stream_activations(bundle, data, [summary.layer], batch_size), add)
    if samples != summary.samples:
        raise ExplorerError(f"The summary of '{summary.layer}' is of {summary.samples} images "
                            f"but the data has {samples}: summarise this data first.")
    return NeuronHistograms(summary.layer, edges, counts.reshape(-1, bins).numpy(),
                            summary.zeros)


def _bin_counts(acts: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Counts (neurons * bins,) of ``acts`` (B, neurons, positions) in each neuron's bins
    ``edges`` (neurons, bins + 1): value a of neuron n is in bin k when
    ``edges[n, k] <= a < edges[n, k + 1]``, the last bin closed, as ``np.histogram`` counts
    (every value lies within its neuron's range, so only the inner edges are searched).
    """
    neurons, bins = edges.shape[0], edges.shape[1] - 1
    values = real_values(acts).double().contiguous()  # exact
    k = torch.searchsorted(edges[:, 1:-1].contiguous(), values, right=True)
    k += torch.arange(neurons)[:, None] * bins
    return torch.bincount(k.reshape(-1), minlength=neurons * bins)
