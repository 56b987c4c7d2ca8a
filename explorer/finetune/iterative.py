"""Iterative pruning: prune a step, fine-tune with the masks fixed, repeat.

Han et al. 2015 (arXiv:1506.02626) reach high sparsity by alternating pruning and
retraining rather than pruning once: each round removes more of the smallest weights of
the *retrained* network, whose weights have had a chance to take over the work of those
removed before. The sparsity of step t of n follows a schedule:

* ``linear``: equal steps, ``s_t = s_f * t / n`` (Han et al.'s repeated rounds);
* ``cubic``: Zhu & Gupta 2017 ("To prune, or not to prune", arXiv:1710.01878),
  ``s_t = s_f + (s_i - s_f) * (1 - t / n) ** 3`` with ``s_i = 0``: big steps while the
  network has many redundant weights, small ones near the end.

Each step's plan is the given plan scaled to the step's share of its sparsity (every
layer's fraction, or the global amount). Its masks are computed from the **current**
fine-tuned weights (scores on the retrained model, as Han et al. do), and masks only grow:
a removed entry stays removed (for criteria that do not rank removed, zero entries lowest,
a step may then remove a little more than its share).

How many steps, which schedule and how long each fine-tuning runs come in one
:class:`~explorer.finetune.fixed_masks.FinetuneSettings`.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import ExplorerError, PlanError
from explorer.evaluator import torch_threads
from explorer.finetune.fixed_masks import (
    FinetuneResult,
    FinetuneSettings,
    Finetuning,
    StepRecord,
    accuracy,
    apply_masks,
    bundle_at,
    check_inputs,
    check_schedule,
    fixed,
    train_masked,
    trainable_copy,
)
from explorer.masks import Masks, ScoreCache, masks_for
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress

EMPTY = torch.zeros(0, dtype=torch.long)


def schedule(steps: int, kind: str = "cubic") -> list[float]:
    """The share of the final sparsity reached after each step 1..``steps`` (the last is 1)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ExplorerError(f"steps must be a whole number of at least 1; got {steps!r}.")
    if check_schedule(kind) == "linear":
        return [t / steps for t in range(1, steps + 1)]
    return [1 - (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def step_plan(plan: Plan, share: float) -> Plan:
    """``plan`` with every fraction removed (or the global amount) scaled by ``share``."""
    if plan.scope == "global":
        return replace(plan, amount=plan.amount * share)
    return replace(plan, sparsity={k: v * share for k, v in plan.sparsity.items()})


def iterative_prune(run: Finetuning, progress: Progress | None = None,
                    cancelled: Cancelled | None = None) -> FinetuneResult:
    """Reach ``run.plan`` in ``settings.steps`` prune / fine-tune rounds of
    ``settings.epochs`` epochs each, the sparsity following ``settings.schedule``.

    ``progress(epoch, epochs, record)`` gets each epoch's
    :class:`~explorer.finetune.fixed_masks.EpochRecord` (``step`` set), counted over the whole run;
    ``cancelled()`` is checked between batches, and a cancelled run returns the model as
    trained so far with the masks of the step it was in. ``settings.threads``: as for
    :func:`~explorer.finetune.fixed_masks.finetune`.
    """
    start = time.monotonic()
    bundle, plan, train, val, settings = run.bundle, run.plan, run.train, run.val, run.settings
    if settings.steps is None:
        raise ExplorerError("Iterative pruning needs a number of steps (settings.steps); "
                            "got None, which means fine-tuning the plan once.")
    check_inputs(bundle, train, val)
    shares = schedule(settings.steps, settings.schedule)
    plan.check(bundle)
    if plan.removes_nothing:
        raise PlanError("The plan removes nothing, so there is nothing to prune step by step; "
                        "choose sparsities first (or fine-tune the plan as it is).")
    model = trainable_copy(bundle)
    result = FinetuneResult(model, Masks(plan.granularity, {}, {}, {}))
    with torch_threads(settings.threads):
        _rounds(bundle, plan, train, val, shares, settings, result, progress, cancelled)
    result.model = model.eval()
    result.seconds = time.monotonic() - start
    return result


def _rounds(bundle: ModelBundle, plan: Plan, train: ValidationSet, val: ValidationSet,
            shares: list[float], settings: FinetuneSettings, result: FinetuneResult,
            progress: Progress | None, cancelled: Cancelled | None) -> None:
    """Prune to each share of ``plan`` and fine-tune, into ``result`` (in place)."""
    model, total = result.model, len(shares) * settings.epochs
    for step, share in enumerate(shares, start=1):
        current = bundle_at(bundle, model)
        masks = _grown(bundle, masks_for(current, step_plan(plan, share),
                                         ScoreCache(current, val)), result.masks)
        apply_masks(model, masks, with_updates=True)
        result.masks = fixed(masks)
        pruned_acc, _ = accuracy(model, val)
        result.cancelled = train_masked(
            model, result.masks, train, val, settings.epochs, settings.lr, result.epochs,
            total=total, step=step, progress=progress, cancelled=cancelled)
        if result.cancelled:
            break
        result.steps.append(StepRecord(step, share, _removed(bundle, result.masks),
                                       pruned_acc, result.epochs[-1].val_accuracy))


def _grown(bundle: ModelBundle, new: Masks, old: Masks) -> Masks:
    """``new`` with everything ``old`` removed also removed (masks only grow)."""
    if not old.masks:
        return new
    masks, keys = dict(new.masks), dict(new.keys)
    for name, mask in old.masks.items():
        masks[name] = masks[name] & mask if name in masks else mask
        keys[name] = ("grown", new.keys.get(name), old.keys.get(name))
    kept_dims = {}
    for name in {*new.kept_dims, *old.kept_dims}:
        a, b = new.kept_dims.get(name, {}), old.kept_dims.get(name, {})
        kept_dims[name] = {d: a[d] & b[d] if d in a and d in b else a.get(d, b.get(d))
                           for d in {*a, *b}}
    removed_neurons = {
        layer: torch.unique(torch.cat([new.removed_neurons.get(layer, EMPTY),
                                       old.removed_neurons.get(layer, EMPTY)]))
        for layer in {*new.removed_neurons, *old.removed_neurons}}
    removed_heads = {
        unit: torch.unique(torch.cat([new.removed_heads.get(unit, EMPTY),
                                      old.removed_heads.get(unit, EMPTY)]))
        for unit in {*new.removed_heads, *old.removed_heads}}
    if new.granularity == "neurons":
        removed = {layer: int(ix.numel()) for layer, ix in removed_neurons.items()}
    elif new.granularity == "heads":
        removed = {layer: int(ix.numel()) for unit, ix in removed_heads.items()
                   for layer in bundle.head_group(unit).layers}
    else:
        removed = {la.name: int((~masks[la.weight]).sum()) for la in bundle.layers
                   if la.weight in masks}
    return replace(new, masks=masks, keys=keys, removed=removed, kept_dims=kept_dims,
                   removed_neurons=removed_neurons, removed_heads=removed_heads)


def _removed(bundle: ModelBundle, masks: Masks) -> float:
    """The fraction of the prunable layers' weights that ``masks`` remove."""
    total = sum(math.prod(la.weight_shape) for la in bundle.layers)
    kept = sum(int(masks.masks[la.weight].sum()) if la.weight in masks.masks
               else math.prod(la.weight_shape) for la in bundle.layers)
    return 1 - kept / total
