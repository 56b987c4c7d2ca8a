"""What a plan costs and keeps: accuracy, loss, parameters, bytes, FLOPs — overall and per layer.

Conventions (shown in the app and the CLI):

* FLOPs are per input sample, 2 per multiply-add, as ``torch.utils.flop_counter`` counts
  them (MACs = FLOPs / 2). An unstructured-pruned layer costs dense FLOPs x weight density;
  a neuron-pruned layer costs what the physically smaller layer costs; a removed attention
  head also takes away its own products (scores and weighted values), a dropped transformer
  block everything it computes.
* Sizes are bytes of fp32 parameters. ``bitmask``: nonzero values + one bit per entry of each
  prunable weight; ``csr``: values + int32 column indices + int32 row pointers (weights seen
  as (out, in * kh * kw)); ``structured``: the dense size of the physically smaller model.
* Compression ratio = parameters / nonzero parameters (Blalock et al. 2020).
* Without validation data (an architecture-only model), or with data without labels,
  accuracy, its interval and loss are None: unavailable, not zero. Sizes and FLOPs need no
  data and are always given.
* Fidelity needs no labels: how close the pruned model's outputs stay to the dense model's
  on the same images (:func:`fidelity`). ``agreement``: the share of images whose top-1
  class is the dense model's; ``kl``: the mean KL(dense || pruned) of the softmax outputs,
  in nats; ``cosine``: the mean cosine similarity of each image's output vector to the
  dense one (the measure for embedding models, and a fallback for any output). The dense
  model scores exactly 1, 0 and 1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from explorer.bundle import ModelBundle
from explorer.masks import Masks

BYTES_PER_VALUE = 4  # fp32
INDEX_BYTES = 4  # int32


@dataclass(frozen=True)
class LayerMetrics:
    """One prunable layer under a plan. ``params`` counts weight and bias."""

    name: str
    kind: str
    params: int
    nonzero_params: int
    sparsity: float  # fraction of the weight's entries that are zero
    flops_dense: int
    flops_effective: int
    neurons: int
    neurons_kept: int


@dataclass(frozen=True)
class Metrics:
    """A plan's result on a validation set (see the module docstring for conventions).

    ``accuracy``, ``accuracy_ci`` and ``loss`` are None when there is no data to measure
    them on (``samples`` is then 0).
    """

    accuracy: float | None
    accuracy_ci: tuple[float, float] | None
    loss: float | None
    samples: int
    correct: int
    params: int
    nonzero_params: int
    size_bytes: dict[str, int]
    flops: dict[str, int]
    speedup: float
    compression_ratio: float
    layers: tuple[LayerMetrics, ...]
    bn_recalibrated: bool = False  # accuracy and loss with re-estimated BatchNorm statistics
    fidelity: dict[str, float | None] | None = None  # agreement, kl, cosine; None: no data

    def to_dict(self) -> dict:
        out = asdict(self)
        out["accuracy_ci"] = None if self.accuracy_ci is None else list(self.accuracy_ci)
        out["layers"] = [asdict(la) for la in self.layers]
        return out


def wilson_interval(correct: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (better than p +- 1.96 se near 0/1)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Costs:
    """Parameter counts, bytes and FLOPs of a plan: arithmetic, no forward pass."""

    params: int
    nonzero_params: int
    size_bytes: dict[str, int]
    flops: dict[str, int]
    layers: tuple[LayerMetrics, ...]


class CostModel:
    """Computes :class:`Costs` from cached per-layer figures; nonzero counts cached per mask."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.params = bundle.params()
        self.layer_params = {p for la in bundle.layers for p in (la.weight, la.bias) if p}
        self.dense_nonzero = {n: int(torch.count_nonzero(p)) for n, p in self.params.items()}
        self._nonzero: dict[tuple, int] = {}

    def nonzero(self, name: str, masks: Masks) -> int:
        """Nonzero entries of ``name`` as ``masks`` leaves it (updated, then masked)."""
        if name not in masks.masks and name not in masks.updates:
            return self.dense_nonzero[name]
        key = (name, masks.keys[name])
        if key not in self._nonzero:
            self._nonzero[key] = int(torch.count_nonzero(masks.value(name, self.params)))
        return self._nonzero[key]

    def costs(self, masks: Masks) -> Costs:
        bundle, params = self.bundle, self.params
        structured = masks.granularity in ("neurons", "heads", "blocks")
        gone = {p for b in masks.dropped_blocks for p in params if p.startswith(b + ".")}
        nonzero = {name: 0 if name in gone else self.nonzero(name, masks) for name in params}
        total = sum(p.numel() for p in params.values())
        layers, flops_effective = [], bundle.flops - sum(la.flops for la in bundle.layers)
        for unit, removed in masks.removed_heads.items():  # their scores and weighted values
            flops_effective -= removed.numel() * bundle.head_group(unit).flops_per_head
        for name in masks.dropped_blocks:  # what the block computes outside its layers
            block = bundle.block(name)
            flops_effective -= block.flops - sum(bundle.layer(la).flops for la in block.layers)
        bitmask = csr = shrunk = 0
        for name, p in params.items():
            kept = 0 if name in gone else _kept_numel(p.shape, masks.kept_dims.get(name, {}))
            shrunk += kept
            if name in {la.weight for la in bundle.layers}:
                nnz, rows = nonzero[name], p.shape[0]
                bitmask += nnz * BYTES_PER_VALUE + math.ceil(p.numel() / 8)
                csr += nnz * (BYTES_PER_VALUE + INDEX_BYTES) + (rows + 1) * INDEX_BYTES
            else:
                bitmask += p.numel() * BYTES_PER_VALUE
                csr += p.numel() * BYTES_PER_VALUE
        for la in bundle.layers:
            w = params[la.weight]
            if la.weight in gone:
                share, kept_out = 0.0, 0
            elif structured:
                dims = masks.kept_dims.get(la.weight, {})
                share = _kept_numel(w.shape, dims) / w.numel()
                kept_out = int(dims[0].sum()) if 0 in dims else la.neurons
            else:
                share = nonzero[la.weight] / w.numel()
                kept_out = la.neurons
            eff = round(la.flops * share)
            flops_effective += eff
            n_params = w.numel() + (params[la.bias].numel() if la.bias else 0)
            nnz = nonzero[la.weight] + (nonzero[la.bias] if la.bias else 0)
            layers.append(LayerMetrics(
                name=la.name, kind=la.kind, params=n_params, nonzero_params=nnz,
                sparsity=1 - nonzero[la.weight] / w.numel(), flops_dense=la.flops,
                flops_effective=eff, neurons=la.neurons, neurons_kept=kept_out,
            ))
        size = {"dense": total * BYTES_PER_VALUE, "bitmask": bitmask, "csr": csr}
        if structured:
            size["structured"] = shrunk * BYTES_PER_VALUE
        return Costs(
            params=total, nonzero_params=sum(nonzero.values()), size_bytes=size,
            flops={"dense": bundle.flops, "effective": flops_effective}, layers=tuple(layers),
        )


def _kept_numel(shape: torch.Size, dims: dict[int, torch.Tensor]) -> int:
    """Entries left in a tensor of ``shape`` when each dim in ``dims`` keeps its True entries."""
    return math.prod(int(dims[d].sum()) if d in dims else s for d, s in enumerate(shape))


def score_logits(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, float]:
    """(correct predictions, mean cross-entropy) of logits (N, C) against labels (N,)."""
    correct = int((logits.argmax(1) == y).sum())
    return correct, float(F.cross_entropy(logits, y))


def fidelity(dense: torch.Tensor, pruned: torch.Tensor, classifier: bool = True
             ) -> dict[str, float | None]:
    """How close ``pruned`` outputs (N, D) stay to ``dense`` ones (N, D) on the same N
    inputs, no labels needed: ``agreement`` (share of rows with the same argmax), ``kl``
    (mean KL(softmax(dense) || softmax(pruned)), nats) and ``cosine`` (mean cosine
    similarity of the rows). ``classifier=False`` (embeddings): agreement and kl are None."""
    return fidelity_of(fidelity_sums(dense, pruned), dense.shape[0], classifier)


def fidelity_sums(dense: torch.Tensor, pruned: torch.Tensor) -> torch.Tensor:
    """(rows with the same argmax, sum of the rows' KL, sum of their cosines), float64: a
    batch's share of :func:`fidelity`, so a stream of batches adds them up. Per row in
    float32, summed in float64; a row equal to its dense row counts exactly 0 KL and cosine
    1, so the dense model scores exactly 1, 0 and 1."""
    d, p = dense.float(), pruned.float()
    same = (dense == pruned).all(1)
    cosine = torch.where(same, 1.0, F.cosine_similarity(d, p, dim=1))
    log_d, log_p = F.log_softmax(d, 1), F.log_softmax(p, 1)
    kl = torch.where(same, 0.0, (log_d.exp() * (log_d - log_p)).sum(1).clamp(min=0))
    agree = (dense.argmax(1) == pruned.argmax(1)).sum()
    return torch.stack([agree.double(), kl.double().sum(), cosine.double().sum()])


def fidelity_of(sums: torch.Tensor, n: int, classifier: bool = True
                ) -> dict[str, float | None]:
    """:func:`fidelity` from the :func:`fidelity_sums` of ``n`` rows."""
    agree, kl, cosine = (float(v) / n for v in sums)
    return {"agreement": agree if classifier else None, "kl": kl if classifier else None,
            "cosine": cosine}


def metrics_from(
    costs: Costs, correct: int = 0, loss: float | None = None, n: int = 0,
    bn_recalibrated: bool = False, fidelity: dict[str, float | None] | None = None,
    labelled: bool = True,
) -> Metrics:
    """Metrics of ``correct`` out of ``n`` samples at mean ``loss``; with ``n == 0`` (no
    data) or ``labelled`` False (data without labels) accuracy, interval and loss are None.
    ``bn_recalibrated``: measured with re-estimated BatchNorm statistics
    (:mod:`explorer.batchnorm`); ``fidelity``: see :func:`fidelity` (None without data)."""
    measured = n > 0 and labelled
    return Metrics(
        accuracy=correct / n if measured else None,
        accuracy_ci=wilson_interval(correct, n) if measured else None,
        loss=loss if measured else None, samples=n, correct=correct, params=costs.params,
        nonzero_params=costs.nonzero_params,
        size_bytes=costs.size_bytes, flops=costs.flops,
        speedup=costs.flops["dense"] / max(costs.flops["effective"], 1),
        compression_ratio=costs.params / max(costs.nonzero_params, 1), layers=costs.layers,
        bn_recalibrated=bn_recalibrated, fidelity=fidelity,
    )
