"""From a plan to keep-masks on the parameters; the model itself is never touched.

Unstructured (``weights``) masks remove, per layer, ``round(fraction * numel)`` entries with
the lowest scores — the count rule and selection of ``torch.nn.utils.prune.l1_unstructured``
— or, with global scope, the lowest ``round(amount * total)`` scores over all participating
layers at once, as ``global_unstructured`` does.

Structured (``neurons``) masks remove whole output neurons / channels and, with them, the
parameter slices that depend on them (BatchNorm entries, the next layer's input columns),
so that the masked model computes exactly what the physically smaller model would.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from explorer.bundle import ModelBundle
from explorer.criteria import ScoreContext, criterion
from explorer.graph import Layer
from explorer.plan import Plan


class ScoreCache:
    """Importance scores and their ascending sort order, per (granularity, criterion, layer).

    Moving a slider then costs a lookup in the cached order, not a new sort. Holds at most
    ``max_entries`` layers' scores (least recently used dropped first). Safe to share
    between threads (the app shares one per model across browser sessions).
    """

    def __init__(self, bundle: ModelBundle, max_entries: int = 256) -> None:
        self.bundle = bundle
        self.max_entries = max_entries
        self._scores: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._keep: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, granularity: str, name: str, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores flattened, indices sorting them ascending) for one layer."""
        with self._lock:
            return self._get(granularity, name, layer)

    def _get(self, granularity: str, name: str, layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
        key = (granularity, name, layer.name)
        if key in self._scores:
            self._scores.move_to_end(key)
            return self._scores[key]
        scores = criterion(granularity, name).score(layer, ScoreContext(self.bundle))
        flat = scores.detach().flatten().float()
        order = torch.argsort(flat, stable=True)
        self._scores[key] = (flat, order)
        while len(self._scores) > self.max_entries:
            self._scores.popitem(last=False)
        return flat, order

    def keep(self, granularity: str, name: str, layer: Layer, k: int) -> torch.Tensor:
        """Flat boolean keep-vector removing the ``k`` lowest-scored entries of ``layer``."""
        key = (granularity, name, layer.name, k)
        with self._lock:
            if key not in self._keep:
                _, order = self._get(granularity, name, layer)
                keep = torch.ones(order.numel(), dtype=torch.bool)
                keep[order[:k]] = False
                self._keep[key] = keep
            self._keep.move_to_end(key)
            while len(self._keep) > self.max_entries:
                self._keep.popitem(last=False)
            return self._keep[key]


@dataclass(frozen=True)
class Masks:
    """Boolean keep-masks by parameter name, with a key naming each mask's version.

    ``removed`` is the count removed per layer (weights or neurons, by granularity).
    ``kept_dims`` (neuron plans) gives, per parameter, the kept entries along each pruned
    dimension: the shape the parameter has in the physically smaller model.
    """

    granularity: str
    masks: dict[str, torch.Tensor]
    keys: dict[str, tuple]
    removed: dict[str, int]
    kept_dims: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)

    def apply(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """New tensors ``param * mask`` for every masked parameter (the originals untouched)."""
        return {name: params[name] * mask for name, mask in self.masks.items()}


def _count(fraction: float, n: int) -> int:
    """How many of ``n`` a fraction removes: Python's round, as torch.nn.utils.prune does."""
    return round(fraction * n)


def _global_counts(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, normalise: bool
) -> dict[str, int]:
    """Per-layer counts removed by one threshold over the participating layers' scores.

    For neurons, each layer's scores are divided by their mean first (Torch-Pruning's
    'mean' normaliser), since raw norms of layers with different fan-in do not compare.
    """
    names = list(plan.layers) if plan.layers is not None else bundle.layer_names
    layers = [bundle.layer(n) for n in names]
    if plan.granularity == "neurons":
        layers = [la for la in layers if la.neuron_prunable]
    if not layers:
        return {}
    parts = []
    for layer in layers:
        scores, _ = cache.get(plan.granularity, plan.criterion, layer)
        if normalise:
            scores = scores / scores.mean().clamp_min(torch.finfo(scores.dtype).tiny)
        parts.append(scores)
    flat = torch.cat(parts)
    k = _count(plan.amount, flat.numel())
    owner = torch.repeat_interleave(
        torch.arange(len(layers)), torch.tensor([p.numel() for p in parts])
    )
    lowest = owner[torch.argsort(flat, stable=True)[:k]]
    counts = torch.bincount(lowest, minlength=len(layers)).tolist()
    return {layer.name: int(c) for layer, c in zip(layers, counts, strict=True)}


def removal_counts(bundle: ModelBundle, plan: Plan, cache: ScoreCache) -> dict[str, int]:
    """How many weights (or neurons) each layer loses under ``plan``."""
    plan.check(bundle)
    neurons = plan.granularity == "neurons"
    if plan.scope == "global":
        counts = _global_counts(bundle, plan, cache, normalise=neurons)
    else:
        counts = {}
        for name, frac in plan.sparsity.items():
            layer = bundle.layer(name)
            n = layer.neurons if neurons else int(torch.Size(layer.weight_shape).numel())
            counts[name] = _count(frac, n)
    if neurons:  # a layer keeps at least one neuron, or the network is cut in two
        counts = {n: min(c, bundle.layer(n).neurons - 1) for n, c in counts.items()}
    return {n: c for n, c in counts.items() if c > 0}


def masks_for(bundle: ModelBundle, plan: Plan, cache: ScoreCache) -> Masks:
    """Keep-masks for every parameter ``plan`` touches."""
    counts = removal_counts(bundle, plan, cache)
    if plan.granularity == "weights":
        return _weight_masks(bundle, plan, cache, counts)
    return _neuron_masks(bundle, plan, cache, counts)


def _weight_masks(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, counts: dict[str, int]
) -> Masks:
    masks, keys = {}, {}
    for name, k in counts.items():
        layer = bundle.layer(name)
        masks[layer.weight] = cache.keep("weights", plan.criterion, layer, k).view(
            layer.weight_shape
        )
        keys[layer.weight] = ("weights", plan.criterion, k)
    return Masks("weights", masks, keys, dict(counts))


def _neuron_masks(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, counts: dict[str, int]
) -> Masks:
    params = bundle.params()
    kept_dims: dict[str, dict[int, torch.Tensor]] = {}
    keys: dict[str, tuple] = {}

    def restrict(param: str, dim: int, keep: torch.Tensor, key: tuple) -> None:
        dims = kept_dims.setdefault(param, {})
        dims[dim] = dims[dim] & keep if dim in dims else keep
        keys[param] = tuple(sorted({*keys.get(param, ()), key}))

    for name, k in counts.items():
        layer = bundle.layer(name)
        keep = cache.keep("neurons", plan.criterion, layer, k)
        key = (name, plan.criterion, k)
        restrict(layer.weight, 0, keep, key)
        if layer.bias is not None:
            restrict(layer.bias, 0, keep, key)
        for dep in layer.dependents:
            restrict(dep.param, dep.dim, keep.repeat_interleave(dep.repeat), key)

    masks = {}
    for param, dims in kept_dims.items():
        shape = params[param].shape
        mask = torch.ones(shape, dtype=torch.bool)
        for dim, keep in dims.items():
            view = [1] * len(shape)
            view[dim] = shape[dim]
            mask = mask & keep.view(view)
        masks[param] = mask
    return Masks("neurons", masks, keys, dict(counts), kept_dims)
