"""From a plan to keep-masks on the parameters; the model itself is never touched.

Unstructured (``weights``) masks remove, per layer, ``round(fraction * numel)`` entries with
the lowest scores — the count rule and selection of ``torch.nn.utils.prune.l1_unstructured``
— or, with global scope, the lowest ``round(amount * total)`` scores over all participating
layers at once, as ``global_unstructured`` does.

N:M masks (a weights plan with a ``pattern``, see :mod:`explorer.plan`) keep, in every group
of M consecutive weights along a layer's input dimension (a convolution's input channels at
each kernel position), the N with the highest scores; between equal scores the lower index
is kept. So exactly N of every M survive, whatever the scores.

Structured (``neurons``, ``heads``) masks remove whole output neurons / channels (or an
attention's heads: :class:`~explorer.groups.HeadGroup`) and, with them, the
parameter slices that depend on them (BatchNorm entries, the next layer's input columns),
so that the masked model computes exactly what the physically smaller model would.

Merging (a plan with ``merge``, neurons by ``redundancy``): each removed neuron i is folded
into its twin t, the kept neuron of its group whose incoming weights (bias appended) have
the largest cosine with i's, in the manner of Srinivas & Babu 2015 (arXiv:1507.06149). The
next layers' input columns that follow i (the group's dependents along dim 1) are added to
t's, scaled by ``s = ||v_i|| / ||v_t||``. Why: if ``v_i = s v_t`` with s > 0 (weights *and*
bias scale alike), then ``z_i = s z_t`` and, since ReLU (like max- and average-pooling) is
positively homogeneous, ``a_i = relu(s z_t) = s a_t``: the next layer receives
``W[:, i] a_i + W[:, t] a_t = (W[:, t] + s W[:, i]) a_t``, exactly what the merged model
computes. Near-duplicates make it an approximation; it is not exact through a BatchNorm
(its per-channel shift breaks the scaling), and neurons whose best twin has cosine <= 0
are dropped, not merged. The new values are :attr:`Masks.updates`, applied before the masks.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from explorer.bundle import ModelBundle
from explorer.criteria import criterion
from explorer.criteria.base import ScoreContext
from explorer.criteria.from_weights import cosine_matrix, incoming
from explorer.data import ValidationSet
from explorer.plan import Plan


class ScoreCache:
    """Importance scores and their ascending sort order, per (granularity, criterion, unit).

    A unit is a layer for ``weights`` (one score per weight entry) and a neuron group for
    ``neurons`` (one score per neuron: the mean of its member layers' scores). Moving a
    slider then costs a lookup in the cached order, not a new sort. Holds at most
    ``max_entries`` units' scores (least recently used dropped first). Safe to share
    between threads (the app shares one per model across browser sessions).
    """

    def __init__(
        self, bundle: ModelBundle, data: ValidationSet | None = None, max_entries: int = 256
    ) -> None:
        self.bundle = bundle
        self.data = data
        self.max_entries = max_entries
        self._scores: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._keep: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._merged: OrderedDict[tuple, dict[str, torch.Tensor]] = OrderedDict()
        self._global: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, granularity: str, name: str, unit: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores flattened, indices sorting them ascending) for one layer or group."""
        with self._lock:
            return self._get(granularity, name, unit)

    def _get(self, granularity: str, name: str, unit: str) -> tuple[torch.Tensor, torch.Tensor]:
        key = (granularity, name, unit)
        if key in self._scores:
            self._scores.move_to_end(key)
            return self._scores[key]
        method, ctx = criterion(granularity, name), ScoreContext(self.bundle, self.data)
        if granularity == "weights":
            scores = method.score(self.bundle.layer(unit), ctx)
        elif granularity == "heads":
            scores = method.score(self.bundle.head_group(unit), ctx)
        elif granularity == "blocks":
            scores = method.score(self.bundle.block(unit), ctx)
        else:  # a group; a layer outside any group is scored on its own
            members = self.bundle.group(unit) or (self.bundle.layer(unit),)
            scores = torch.stack([method.score(la, ctx).detach().float()
                                  for la in members]).mean(0)
        flat = scores.detach().flatten().float()
        order = torch.argsort(flat, stable=True)
        self._scores[key] = (flat, order)
        while len(self._scores) > self.max_entries:
            self._scores.popitem(last=False)
        return flat, order

    def computed(self) -> dict[tuple, tuple[torch.Tensor, torch.Tensor]]:
        """The scores computed so far by (granularity, criterion, unit): what a copy of this
        cache elsewhere (a cluster worker, :mod:`explorer.decide.cluster`) is seeded with."""
        with self._lock:
            return dict(self._scores)

    def seed(self, computed: dict[tuple, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Take scores another cache computed for the same model and data
        (:meth:`computed`): they are not computed again here."""
        with self._lock:
            self._scores.update(computed)

    def keep(self, granularity: str, name: str, unit: str, k: int) -> torch.Tensor:
        """Flat boolean keep-vector removing the ``k`` lowest-scored entries of ``unit``."""
        key = (granularity, name, unit, k)
        with self._lock:
            if key not in self._keep:
                _, order = self._get(granularity, name, unit)
                keep = torch.ones(order.numel(), dtype=torch.bool)
                keep[order[:k]] = False
                self._keep[key] = keep
            self._keep.move_to_end(key)
            while len(self._keep) > self.max_entries:
                self._keep.popitem(last=False)
            return self._keep[key]

    def keep_nm(self, name: str, layer: str, n: int, m: int) -> torch.Tensor:
        """Flat boolean keep-vector of ``layer`` keeping the top ``n`` of every ``m`` weights
        by criterion ``name`` (:func:`nm_keep`)."""
        key = ("weights", name, layer, f"{n}:{m}")
        with self._lock:
            if key not in self._keep:
                scores, _ = self._get("weights", name, layer)
                shape = self.bundle.layer(layer).weight_shape
                self._keep[key] = nm_keep(scores.view(shape), n, m).flatten()
            self._keep.move_to_end(key)
            while len(self._keep) > self.max_entries:
                self._keep.popitem(last=False)
            return self._keep[key]

    def global_owners(self, granularity: str, name: str, units: tuple[str, ...]) -> torch.Tensor:
        """For one threshold over ``units`` together: the index (into ``units``) of the unit
        owning each score, lowest score first. A global fraction is then a count of the
        first ``k`` owners, not a new sort of every score.

        For neurons and heads, each unit's scores are divided by their mean first
        (Torch-Pruning's 'mean' normaliser), since raw norms of layers with different fan-in
        do not compare.
        """
        key = (granularity, name, units)
        with self._lock:
            if key not in self._global:
                parts = []
                for unit in units:
                    scores, _ = self._get(granularity, name, unit)
                    if granularity in ("neurons", "heads"):
                        scores = scores / scores.mean().clamp_min(torch.finfo(scores.dtype).tiny)
                    parts.append(scores)
                owner = torch.repeat_interleave(
                    torch.arange(len(units)), torch.tensor([p.numel() for p in parts]))
                self._global[key] = owner[torch.argsort(torch.cat(parts), stable=True)]
            self._global.move_to_end(key)
            while len(self._global) > 8:  # one per (granularity, criterion) is the usual
                self._global.popitem(last=False)
            return self._global[key]

    def merged(self, name: str, group: str, k: int) -> dict[str, torch.Tensor]:
        """New values of the parameters after ``group``'s input columns when its ``k``
        lowest-scored neurons by criterion ``name`` are merged into their twins."""
        key = (name, group, k)
        with self._lock:
            if key not in self._merged:
                keep = self.keep("neurons", name, group, k)
                self._merged[key] = merge_updates(self.bundle, group, keep)
            self._merged.move_to_end(key)
            while len(self._merged) > self.max_entries:
                self._merged.popitem(last=False)
            return self._merged[key]


def nm_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask of the top ``n`` scores in every group of ``m`` along dim 1.

    ``scores`` (out, in) for a linear layer or (out, in, kh, kw) for a convolution, with
    ``in`` a multiple of ``m``: a convolution's groups run along its input channels at each
    kernel position. Ties go to the lower index (a stable descending sort). Returns a bool
    tensor of ``scores``' shape with exactly ``n`` True in every group.
    """
    moved = scores.movedim(1, -1)  # (out, [kh, kw,] in): the groups are consecutive
    groups = moved.reshape(-1, m)
    top = torch.argsort(groups, dim=1, descending=True, stable=True)[:, :n]
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, top, True)
    return keep.reshape(moved.shape).movedim(-1, 1)


def merge_updates(bundle: ModelBundle, group: str, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each dim-1 dependent of ``group`` with removed neurons' columns added to their twins'.

    ``keep`` (neurons,) is the group's keep-vector. Returns new tensors by parameter name
    (the shared ones are not written); see the module docstring for the rule and its
    justification.
    """
    params = bundle.params()
    rows = torch.cat([incoming(la, params).double() for la in bundle.group(group)], dim=1)
    removed, kept = (~keep).nonzero().flatten(), keep.nonzero().flatten()
    if removed.numel() == 0 or kept.numel() == 0:
        return {}
    best, at = cosine_matrix(rows)[removed][:, kept].max(dim=1)
    merge = best > 0  # a non-positive cosine is no duplicate; and the twin's norm is > 0
    removed, twin = removed[merge], kept[at[merge]]
    norms = rows.norm(dim=1)
    scale = norms[removed] / norms[twin]
    out = {}
    for dep in bundle.group(group)[0].dependents:
        if dep.dim != 1:
            continue
        weight = params[dep.param].detach()
        span = weight.narrow(1, dep.offset, keep.numel() * dep.repeat)  # the group's columns
        blocks = span.unflatten(1, (-1, dep.repeat))  # (out, neurons, repeat, ...)
        view = [1, -1] + [1] * (blocks.dim() - 2)
        moved = blocks[:, removed] * scale.to(weight.dtype).view(view)
        merged = weight.clone()
        merged.narrow(1, dep.offset, span.shape[1]).copy_(
            blocks.index_add(1, twin, moved).reshape(span.shape))
        out[dep.param] = merged
    return out


@dataclass(frozen=True)
class Masks:
    """Boolean keep-masks by parameter name, with a key naming each mask's version.

    ``removed`` is the count removed per layer (weights or neurons, by granularity);
    ``removed_neurons`` (neuron plans) the indices of the neurons removed per layer.
    ``kept_dims`` (neuron plans) gives, per parameter, the kept entries along each pruned
    dimension: the shape the parameter has in the physically smaller model.
    ``updates`` (merge plans) holds new values that replace parameters before masking;
    every updated parameter has an entry in ``keys``. ``removed_heads`` (heads plans) gives,
    per attention (its unit name), the indices of the heads removed; ``removed`` then
    counts heads, per layer of the attention. ``dropped_blocks`` (blocks plans) names the
    transformer blocks dropped: their gates are updated to False, and ``removed`` gives 1
    per layer inside them.
    """

    granularity: str
    masks: dict[str, torch.Tensor]
    keys: dict[str, tuple]
    removed: dict[str, int]
    kept_dims: dict[str, dict[int, torch.Tensor]] = field(default_factory=dict)
    removed_neurons: dict[str, torch.Tensor] = field(default_factory=dict)
    updates: dict[str, torch.Tensor] = field(default_factory=dict)
    removed_heads: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped_blocks: tuple[str, ...] = ()

    def value(self, name: str, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Parameter ``name`` as this plan leaves it: updated (if merged), then masked."""
        value = self.updates[name] if name in self.updates else params[name]
        return value * self.masks[name] if name in self.masks else value

    def apply(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """New tensors for every masked or updated parameter (the originals untouched):
        ``updates.get(name, param) * mask``, or the update alone where there is no mask."""
        return {name: self.value(name, params) for name in {**self.masks, **self.updates}}


def _count(fraction: float, n: int) -> int:
    """How many of ``n`` a fraction removes: Python's round, as torch.nn.utils.prune does."""
    return round(fraction * n)


def _units(bundle: ModelBundle, plan: Plan) -> dict[str, int]:
    """What one plan scores and cuts, with its size: layers (weights), groups (neurons) or
    attentions (heads)."""
    return {u: bundle.unit_size(plan.granularity, u) for u in bundle.units(plan.granularity)}


def _global_counts(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, units: dict[str, int]
) -> dict[str, int]:
    """Per-unit counts removed by one threshold over the participating units' scores
    (see :meth:`ScoreCache.global_owners`)."""
    if plan.layers is None:
        names = list(units)
    else:  # a unit takes part if one of its layers is listed
        listed = set(plan.layers)
        members = bundle.units(plan.granularity)
        names = [u for u in units if any(name in listed for name in (u, *members[u]))]
    if not names:
        return {}
    owners = cache.global_owners(plan.granularity, plan.criterion, tuple(names))
    k = _count(plan.amount, owners.numel())
    counts = torch.bincount(owners[:k], minlength=len(names)).tolist()
    return dict(zip(names, map(int, counts), strict=True))


def unit_counts(bundle: ModelBundle, plan: Plan, cache: ScoreCache) -> dict[str, int]:
    """How many weights (per layer) or neurons (per group) ``plan`` removes."""
    plan.check(bundle)
    units = _units(bundle, plan)
    if plan.pattern is not None:
        n, m = plan.nm
        counts = {name: units[name] - units[name] // m * n for name in plan.pattern_layers(bundle)}
    elif plan.scope == "global":
        counts = _global_counts(bundle, plan, cache, units)
    elif plan.granularity == "weights":
        counts = {name: _count(frac, units[name]) for name, frac in plan.sparsity.items()}
    else:
        counts = {g: _count(group_fraction(bundle, plan, g), n) for g, n in units.items()}
    if plan.granularity in ("neurons", "heads"):  # one neuron (head) stays: the network is whole
        counts = {g: min(c, units[g] - 1) for g, c in counts.items()}
    return {n: c for n, c in counts.items() if c > 0}


def group_fraction(bundle: ModelBundle, plan: Plan, group: str) -> float:
    """The fraction a per-layer plan removes from a neuron group or an attention's heads
    (their layers share one)."""
    return max((plan.fraction(name) for name in bundle.units(plan.granularity)[group]),
               default=0.0)


def removal_counts(bundle: ModelBundle, plan: Plan, cache: ScoreCache) -> dict[str, int]:
    """How many weights (or neurons, or heads) each layer loses under ``plan``."""
    counts = unit_counts(bundle, plan, cache)
    if plan.granularity == "weights":
        return counts
    return {name: counts[unit] for unit, members in bundle.units(plan.granularity).items()
            if unit in counts for name in members}


def masks_for(bundle: ModelBundle, plan: Plan, cache: ScoreCache) -> Masks:
    """Keep-masks for every parameter ``plan`` touches."""
    counts = unit_counts(bundle, plan, cache)
    if plan.granularity == "weights":
        return _weight_masks(bundle, plan, cache, counts)
    if plan.granularity == "heads":
        return _head_masks(bundle, plan, cache, counts)
    if plan.granularity == "blocks":
        return _block_masks(bundle, plan, counts)
    return _neuron_masks(bundle, plan, cache, counts)


def _weight_masks(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, counts: dict[str, int]
) -> Masks:
    masks, keys = {}, {}
    for name, k in counts.items():
        layer = bundle.layer(name)
        if plan.pattern is not None:
            keep = cache.keep_nm(plan.criterion, name, *plan.nm)
        else:
            keep = cache.keep("weights", plan.criterion, name, k)
        masks[layer.weight] = keep.view(layer.weight_shape)
        keys[layer.weight] = ("weights", plan.criterion, plan.pattern or k)
    return Masks("weights", masks, keys, dict(counts))


def _neuron_masks(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, counts: dict[str, int]
) -> Masks:
    params = bundle.params()
    kept_dims: dict[str, dict[int, torch.Tensor]] = {}
    keys: dict[str, tuple] = {}
    removed_neurons: dict[str, torch.Tensor] = {}
    updates: dict[str, torch.Tensor] = {}

    def restrict(param: str, dim: int, keep: torch.Tensor, key: tuple) -> None:
        dims = kept_dims.setdefault(param, {})
        dims[dim] = dims[dim] & keep if dim in dims else keep
        keys[param] = tuple(sorted({*keys.get(param, ()), key}))

    removed = {}
    for group, k in counts.items():
        keep = cache.keep("neurons", plan.criterion, group, k)
        key = (group, plan.criterion, k)
        for dep in bundle.group(group)[0].dependents:
            # only the merged columns change value: only their key says "merge"
            dep_key = (*key, "merge") if plan.merge and dep.dim == 1 else key
            restrict(dep.param, dep.dim, dep.spread(keep, params[dep.param].shape[dep.dim]),
                     dep_key)
        if plan.merge:
            for param, value in cache.merged(plan.criterion, group, k).items():
                # two groups feeding one parameter (not seen in practice) add their changes
                updates[param] = value if param not in updates else (
                    updates[param] + value - params[param].detach())
        for layer in bundle.group(group):
            removed[layer.name] = k
            removed_neurons[layer.name] = (~keep).nonzero().flatten()

    return Masks("neurons", _dim_masks(params, kept_dims), keys, removed, kept_dims,
                 removed_neurons, updates)


def _head_masks(
    bundle: ModelBundle, plan: Plan, cache: ScoreCache, counts: dict[str, int]
) -> Masks:
    """A heads plan's masks: each removed head's rows of the query, key and value and its
    columns of the output projection (:class:`~explorer.groups.HeadGroup`)."""
    params = bundle.params()
    kept_dims: dict[str, dict[int, torch.Tensor]] = {}
    keys: dict[str, tuple] = {}
    removed: dict[str, int] = {}
    removed_heads: dict[str, torch.Tensor] = {}
    for unit, k in counts.items():
        group = bundle.head_group(unit)
        keep = cache.keep("heads", plan.criterion, unit, k)
        for dep in group.dependents:
            size = params[dep.param].shape[dep.dim]
            kept_dims.setdefault(dep.param, {})[dep.dim] = dep.spread(keep, size)
            keys[dep.param] = ("heads", unit, plan.criterion, k)
        removed.update(dict.fromkeys(group.layers, k))
        removed_heads[unit] = (~keep).nonzero().flatten()
    return Masks("heads", _dim_masks(params, kept_dims), keys, removed, kept_dims,
                 removed_heads=removed_heads)


def _block_masks(bundle: ModelBundle, plan: Plan, counts: dict[str, int]) -> Masks:
    """A blocks plan: each dropped block's gate set to False (its input passes on)."""
    dropped = tuple(b.name for b in bundle.blocks if counts.get(b.name))
    updates = {bundle.block(b).gate: torch.tensor(False) for b in dropped}
    keys = {gate: ("blocks", plan.criterion, "dropped") for gate in updates}
    removed = {layer: 1 for b in dropped for layer in bundle.block(b).layers}
    return Masks("blocks", {}, keys, removed, updates=updates, dropped_blocks=dropped)


def _dim_masks(params: dict[str, torch.Tensor],
               kept_dims: dict[str, dict[int, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Each parameter's keep-mask from its kept entries along each pruned dimension."""
    masks = {}
    for param, dims in kept_dims.items():
        shape = params[param].shape
        mask = torch.ones(shape, dtype=torch.bool)
        for dim, keep in dims.items():
            view = [1] * len(shape)
            view[dim] = shape[dim]
            mask = mask & keep.view(view)
        masks[param] = mask
    return masks
