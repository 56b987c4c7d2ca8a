"""The evaluator behind a slider: a plan in, its metrics out, recomputing as little as it can.

* Importance scores and their sort order are cached per layer (:class:`ScoreCache`):
  a new fraction is a lookup.
* Sizes and FLOPs are arithmetic on per-layer figures (:class:`CostModel`).
* The value of every graph node from the dense run and from the last run is kept (within
  ``memory_budget`` bytes); a new plan recomputes only from the first node that reads a
  parameter whose mask changed. Where the cache does not fit the budget, or the graph
  mutates tensors in place, every evaluation is a full forward pass.

One evaluator belongs to one user session (it remembers that session's last plan); the
bundle and the score cache can be shared between sessions.

Without data (``data=None``, an architecture-only model) an evaluation is the arithmetic
alone: sizes and FLOPs, with accuracy and loss None (see :class:`~explorer.metrics.Metrics`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError
from explorer.graph import RunState, logits_of
from explorer.masks import Masks, ScoreCache, masks_for
from explorer.metrics import CostModel, Metrics, metrics_from, score_logits
from explorer.plan import Plan

DEFAULT_MEMORY_BUDGET = 512 * 2**20
MASKED_PARAMS_KEPT = 64
METRICS_KEPT = 256


class Evaluator:
    """Evaluates plans for one model on one validation set (or on none: costs only)."""

    def __init__(
        self,
        bundle: ModelBundle,
        data: ValidationSet | None,
        scores: ScoreCache | None = None,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.bundle = bundle
        self.data = data
        self.scores = scores or ScoreCache(bundle, data)
        self.costs = CostModel(bundle)
        self.memory_budget = memory_budget
        self.params = bundle.params()
        self.incremental = bundle.program.resumable
        self._states: dict[str, RunState] = {}
        self._masked_params: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._metrics: OrderedDict[str, Metrics] = OrderedDict()
        self.last_start = 0  # index of the first recomputed node in the last run

    def masks(self, plan: Plan) -> Masks:
        return masks_for(self.bundle, plan, self.scores)

    def logits(self, masks: Masks) -> torch.Tensor:
        """Logits (N, classes) of the masked model on the validation inputs."""
        if self.data is None:
            raise DataError(f"'{self.bundle.name}' has no validation data to run on.")
        overrides = self._masked(masks)
        program = self.bundle.program
        resume = None
        if self.incremental and self._states:
            resume = max(self._states.values(), key=lambda s: program.resume_index(masks.keys, s))
        logits, state = program.run(
            self.data.x, overrides, masks.keys, resume=resume, keep=self.incremental
        )
        self.last_start = program.resume_index(masks.keys, resume) if resume else 0
        if state is not None and state.nbytes * 2 <= self.memory_budget:
            self._states["last"] = state
            if "dense" not in self._states:
                self._states["dense"] = state if not masks.keys else self._dense()
        else:
            self.incremental = False
            self._states.clear()
        return logits

    def _masked(self, masks: Masks) -> dict[str, torch.Tensor]:
        """Masked (and, for merge plans, updated) parameter tensors, reused while a
        parameter's key stays the same."""
        out = {}
        for name in {**masks.masks, **masks.updates}:
            key = (name, masks.keys[name])
            if key not in self._masked_params:
                self._masked_params[key] = masks.value(name, self.params)
            self._masked_params.move_to_end(key)
            out[name] = self._masked_params[key]
        while len(self._masked_params) > MASKED_PARAMS_KEPT:
            self._masked_params.popitem(last=False)
        return out

    def _dense(self) -> RunState:
        _, state = self.bundle.program.run(self.data.x, keep=True)
        return state

    def evaluate(self, plan: Plan) -> Metrics:
        """Accuracy, loss, sizes and FLOPs of ``plan`` (see :mod:`explorer.metrics`).

        Plans seen recently (undo, the dense baseline) are answered from memory, without
        disturbing the state the next slider move resumes from.
        """
        key = plan.key
        if key in self._metrics:
            self._metrics.move_to_end(key)
            return self._metrics[key]
        masks = self.masks(plan)
        if self.data is None:
            metrics = metrics_from(self.costs.costs(masks))
        else:
            correct, loss = score_logits(self.logits(masks), self.data.y)
            metrics = metrics_from(self.costs.costs(masks), correct, loss, len(self.data))
        self._metrics[key] = metrics
        while len(self._metrics) > METRICS_KEPT:
            self._metrics.popitem(last=False)
        return metrics


def full_forward_logits(bundle: ModelBundle, masks: Masks, x: torch.Tensor) -> torch.Tensor:
    """Reference path: one plain forward of the model with the plan's parameters swapped in.

    Uses ``torch.func.functional_call`` on the original module: nothing is cached and the
    model's own parameters are not written.
    """
    params = dict(bundle.model.named_parameters())
    params.update(masks.apply(params))
    with torch.no_grad():
        out = torch.func.functional_call(bundle.model, params, (x,))
    return logits_of(out)
