"""Redundant neurons: similarity matrices of a layer's neurons, ordered and bounded in size.

Two neurons that compute nearly the same thing are redundant: one of them can go with
little loss. We measure "the same thing" two ways:

* by weights: cosine similarity of their incoming weight vectors (the rows of the weight,
  flattened per output neuron: ``in_features`` entries, or ``C_in * kH * kW`` for a conv);
* by behaviour: Pearson correlation of their activations across the samples of a data set
  (for a convolution, each sample's activation is first averaged over spatial positions).

Neurons are put in the leaf order of an average-linkage hierarchical clustering on
``1 - similarity``, so that similar neurons sit next to each other and redundancy shows as
bright blocks on the diagonal. Matrices sent to the browser are at most ``max_size`` square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from explorer.activations import find_layer, per_image_means
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError
from explorer.look.stats import to_numpy

MAX_SIZE = 512
TOP_K = 20


@dataclass(frozen=True)
class Similarity:
    """A layer's neuron similarity, ready to draw as a heatmap, and its most similar pairs.

    * ``order`` (neurons,): original neuron indices in display order (a permutation).
    * ``matrix`` (m, m) float32, m <= ``max_size``: the similarity with rows and columns in
      ``order``. When the layer has more than ``max_size`` neurons, each cell is the mean of
      a block of the ordered full matrix: display position ``b`` covers
      ``order[bounds[b]:bounds[b + 1]]`` (blocks of ``ceil(neurons / max_size)`` neurons, the
      last one possibly shorter). Otherwise ``bounds`` is ``arange(neurons + 1)``.
    * ``pairs``: the ``top_k`` most similar pairs ``(i, j, value)`` with ``i < j`` original
      neuron indices, highest first, taken from the full (not block-averaged) matrix.
    """

    matrix: np.ndarray
    order: np.ndarray
    bounds: np.ndarray
    pairs: tuple[tuple[int, int, float], ...]
    neurons: int

    @property
    def reduced(self) -> bool:
        """Whether ``matrix`` is block-averaged (the layer has more than ``max_size`` neurons)."""
        return self.matrix.shape[0] < self.neurons


def cosine_matrix(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """Cosine similarity (neurons, neurons) of the rows of ``weight`` (neurons, ...).

    A neuron whose incoming weights are all zero (e.g. already pruned) has no direction: we
    define its similarity as 0 with every other neuron and 1 with itself, so the matrix has
    no NaN.
    """
    rows = to_numpy(weight).reshape(weight.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(rows, axis=1)
    unit = np.divide(rows, norms[:, None], out=np.zeros_like(rows), where=norms[:, None] > 0)
    return _finish(unit @ unit.T)


def correlation_matrix(activations: torch.Tensor | np.ndarray) -> np.ndarray:
    """Pearson correlation (neurons, neurons) of per-sample activations.

    ``activations`` is (N, neurons, positions), or (N, neurons) with the positions already
    averaged per sample (:func:`explorer.activations.per_image_means`, which streams).
    A neuron that is constant over the samples (a dead ReLU, say) has no defined
    correlation: we define it as 0 with every other neuron and 1 with itself, so the matrix
    has no NaN. With fewer than 2 samples every neuron is constant.
    """
    acts = to_numpy(activations).astype(np.float64)
    if acts.ndim == 3:
        acts = acts.mean(axis=2)
    if acts.ndim != 2:
        raise ExplorerError(
            f"Activations must be shaped (N, neurons) or (N, neurons, positions); got {acts.shape}."
        )
    constant = acts.max(axis=0) == acts.min(axis=0)
    centred = acts - acts.mean(axis=0)
    norms = np.linalg.norm(centred, axis=0)
    unit = np.divide(centred, norms, out=np.zeros_like(centred), where=~constant)
    return _finish(unit.T @ unit)


def summarize(matrix: np.ndarray, top_k: int = TOP_K, max_size: int = MAX_SIZE) -> Similarity:
    """Order a full similarity ``matrix`` (n, n), cap it at ``max_size``, find its top pairs."""
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ExplorerError(f"A similarity matrix must be square; got shape {matrix.shape}.")
    if max_size < 1 or top_k < 0:
        raise ExplorerError(
            f"max_size must be >= 1 and top_k >= 0; got max_size={max_size}, top_k={top_k}."
        )
    n = matrix.shape[0]
    order = cluster_order(matrix)
    ordered = matrix[np.ix_(order, order)]
    block = max(1, math.ceil(n / max_size))
    bounds = np.append(np.arange(0, n, block), n)
    if block > 1:
        starts = bounds[:-1]
        sums = np.add.reduceat(np.add.reduceat(ordered, starts, axis=0), starts, axis=1)
        sizes = np.diff(bounds).astype(np.float64)
        ordered = sums / np.outer(sizes, sizes)
    return Similarity(
        matrix=ordered.astype(np.float32),
        order=order,
        bounds=bounds.astype(np.int64),
        pairs=top_pairs(matrix, top_k),
        neurons=n,
    )


def cluster_order(matrix: np.ndarray) -> np.ndarray:
    """Leaf order (n,) of average-linkage clustering on the distance ``1 - matrix``."""
    n = matrix.shape[0]
    if n < 3:
        return np.arange(n, dtype=np.int64)
    distance = np.clip(1.0 - matrix, 0.0, None)
    distance = (distance + distance.T) / 2
    np.fill_diagonal(distance, 0.0)
    tree = linkage(squareform(distance, checks=False), method="average")
    return leaves_list(tree).astype(np.int64)


def top_pairs(matrix: np.ndarray, k: int = TOP_K) -> tuple[tuple[int, int, float], ...]:
    """The ``k`` off-diagonal pairs ``(i, j, value)``, ``i < j``, of highest similarity."""
    rows, cols = np.triu_indices(matrix.shape[0], k=1)
    values = matrix[rows, cols]
    k = min(k, values.size)
    if k == 0:
        return ()
    best = np.argpartition(-values, k - 1)[:k]
    best = best[np.lexsort((cols[best], rows[best], -values[best]))]
    return tuple((int(rows[b]), int(cols[b]), float(values[b])) for b in best)


def weight_similarity(
    bundle: ModelBundle, layer: str, top_k: int = TOP_K, max_size: int = MAX_SIZE
) -> Similarity:
    """Cosine similarity of the incoming weight vectors of ``layer``'s neurons, summarised."""
    weight = bundle.params()[find_layer(bundle, layer).weight].detach()
    return summarize(cosine_matrix(weight), top_k, max_size)


def activation_similarity(
    activations: torch.Tensor | np.ndarray, top_k: int = TOP_K, max_size: int = MAX_SIZE
) -> Similarity:
    """Pearson correlation of one layer's activations (N, neurons[, positions]), summarised.

    Take ``activations`` from :func:`layer_correlation`'s per-image means
    (:func:`explorer.activations.per_image_means`): (N, neurons) is all the correlation needs.
    """
    return summarize(correlation_matrix(activations), top_k, max_size)


def layer_correlation(bundle: ModelBundle, data: ValidationSet | torch.Tensor, layer: str,
                      batch_size: int | None = None) -> np.ndarray:
    """:func:`correlation_matrix` (neurons, neurons) of ``layer`` on ``data``, streamed: only
    each image's per-neuron mean (N, neurons) is held, never the positions."""
    return correlation_matrix(per_image_means(bundle, data, [layer], batch_size)[layer])


def _finish(sim: np.ndarray) -> np.ndarray:
    """Symmetric, clipped to [-1, 1] (rounding), with exactly 1 on the diagonal."""
    sim = np.clip((sim + sim.T) / 2, -1.0, 1.0)
    np.fill_diagonal(sim, 1.0)
    return sim
