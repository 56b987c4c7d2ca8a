"""The evaluator behind a slider: a plan in, its metrics out, recomputing as little as it can.

* Importance scores and their sort order are cached per layer (:class:`ScoreCache`):
  a new fraction is a lookup.
* Sizes and FLOPs are arithmetic on per-layer figures (:class:`CostModel`).
* The validation set streams through the graph in batches of ``batch_size`` images (sized
  so one batch's node values take about :data:`~explorer.activations.BATCH_BYTES`): the
  memory a run holds does not grow with the number of images, only the logits do.
* For as many batches as ``memory_budget`` holds, the value of every graph node from the
  dense run and from the last run is kept; a new plan recomputes those batches only from
  the first node that reads a parameter whose mask changed, the others from the input.
  Where no batch fits the budget, or the graph mutates tensors in place, every evaluation
  is a full forward pass.

One evaluator belongs to one user session (it remembers that session's last plan); the
bundle and the score cache can be shared between sessions.

Without data (``data=None``, an architecture-only model) an evaluation is the arithmetic
alone: sizes and FLOPs, with accuracy and loss None (see :class:`~explorer.metrics.Metrics`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from explorer.activations import default_batch
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError
from explorer.graph import RunState, logits_of
from explorer.masks import Masks, ScoreCache, masks_for
from explorer.metrics import CostModel, Metrics, metrics_from, score_logits
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress, stop_now, tick

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # the most a default budget is: 4 fit in a session
MIN_MEMORY_BUDGET = 64 * 2**20
MASKED_PARAMS_KEPT = 64
METRICS_KEPT = 256


class Evaluator:
    """Evaluates plans for one model on one validation set (or on none: costs only).

    ``batch_size``: images per batch (default:
    :func:`~explorer.activations.default_batch`, from a probe run); ``memory_budget``:
    bytes of node values kept for resuming (default: :func:`default_memory_budget`; 0 keeps
    none: every evaluation a full pass).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        data: ValidationSet | None,
        scores: ScoreCache | None = None,
        memory_budget: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.bundle = bundle
        self.data = data
        self.scores = scores or ScoreCache(bundle, data)
        self.costs = CostModel(bundle)
        self.memory_budget = default_memory_budget() if memory_budget is None else memory_budget
        self.batch_size = batch_size or default_batch(bundle)
        self.params = bundle.params()
        self.incremental = bundle.program.resumable
        self._states: dict[int, dict[str, RunState]] = {}  # batch -> "dense" / "last" state
        self._masked_params: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._metrics: OrderedDict[str, Metrics] = OrderedDict()
        self.last_start = 0  # index of the first recomputed node in the last run's 1st batch

    def masks(self, plan: Plan) -> Masks:
        return masks_for(self.bundle, plan, self.scores)

    def logits(self, masks: Masks) -> torch.Tensor:
        """Logits (N, classes) of the masked model on the validation inputs, batch by batch."""
        return torch.cat([logits for logits in self._batches(masks)])

    def _batches(self, masks: Masks) -> Iterator[torch.Tensor]:
        """Each batch's logits in turn; a caller that stops early leaves every batch's kept
        states consistent (each state carries the parameter keys it was run with)."""
        if self.data is None:
            raise DataError(f"'{self.bundle.name}' has no validation data to run on.")
        overrides = self._masked(masks)
        for batch, start in enumerate(range(0, len(self.data), self.batch_size)):
            x = self.data.x[start:start + self.batch_size]
            logits, begun = self._run_batch(batch, x, overrides, masks)
            if batch == 0:
                self.last_start = begun
            if not self._states:
                self.incremental = False
            yield logits

    def _run_batch(self, batch: int, x: torch.Tensor, overrides: dict[str, torch.Tensor],
                   masks: Masks) -> tuple[torch.Tensor, int]:
        """One batch's logits, resumed from the best of its kept states where it has them,
        and the index of the first node recomputed."""
        program = self.bundle.program
        kept = self._states.get(batch, {})
        resume = max(kept.values(), key=lambda s: program.resume_index(masks.keys, s),
                     default=None)
        logits, state = program.run(x, overrides, masks.keys, resume=resume,
                                    keep=self.incremental)
        if state is not None:
            self._keep(batch, x, state, masks)
        return logits, 0 if resume is None else program.resume_index(masks.keys, resume)

    def _keep(self, batch: int, x: torch.Tensor, state: RunState, masks: Masks) -> None:
        """Keep ``state`` as the batch's last run; a batch kept for the first time also keeps
        its dense run, if the budget holds both."""
        entry = self._states.get(batch)
        if entry is None:
            if self.kept_bytes + 2 * state.nbytes > self.memory_budget:
                return
            dense = state if not masks.keys else self.bundle.program.run(x, keep=True)[1]
            entry = self._states[batch] = {"dense": dense}
        entry["last"] = state

    @property
    def kept_batches(self) -> int:
        """How many batches resume from kept states (the others run from the input)."""
        return len(self._states)

    @property
    def kept_bytes(self) -> int:
        """Bytes of node values kept for resuming (a state kept twice counted once)."""
        states = {id(s): s for entry in self._states.values() for s in entry.values()}
        return sum(s.nbytes for s in states.values())

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

    def evaluate(self, plan: Plan, progress: Progress | None = None,
                 cancelled: Cancelled | None = None) -> Metrics:
        """Accuracy, loss, sizes and FLOPs of ``plan`` (see :mod:`explorer.metrics`).

        Plans seen recently (undo, the dense baseline) are answered from memory, without
        disturbing the state the next slider move resumes from. ``progress(done, total,
        so_far)`` follows the batches, ``so_far`` the metrics on the images evaluated so
        far; ``cancelled()`` is checked between batches, and a cancelled evaluation returns
        those metrics (``samples`` fewer than the data's; never remembered).
        """
        key = plan.key
        if key in self._metrics:
            self._metrics.move_to_end(key)
            return self._metrics[key]
        masks = self.masks(plan)
        costs = self.costs.costs(masks)
        if self.data is None:
            metrics = metrics_from(costs)
        else:
            metrics = self._measured(masks, costs, progress, cancelled)
            if metrics.samples < len(self.data):
                return metrics
        self._metrics[key] = metrics
        while len(self._metrics) > METRICS_KEPT:
            self._metrics.popitem(last=False)
        return metrics

    def _measured(self, masks: Masks, costs, progress: Progress | None,
                  cancelled: Cancelled | None) -> Metrics:
        """Metrics over the batches run before ``cancelled()``: all of them, as one."""
        parts: list[torch.Tensor] = []
        correct, loss_sum, seen = 0, 0.0, 0
        total = -(-len(self.data) // self.batch_size)  # batches
        for logits in self._batches(masks):
            y = self.data.y[seen:seen + len(logits)]
            seen += len(logits)
            parts.append(logits)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            if progress is not None and seen < len(self.data):
                tick(progress, len(parts), total,
                     metrics_from(costs, correct, loss_sum / seen, seen))
            if seen < len(self.data) and stop_now(cancelled):
                return metrics_from(costs, correct, loss_sum / seen, seen)
        correct, loss = score_logits(torch.cat(parts), self.data.y)  # the one-batch figures
        metrics = metrics_from(costs, correct, loss, len(self.data))
        tick(progress, total, total, metrics)
        return metrics


def default_memory_budget() -> int:
    """Bytes of node values an evaluator keeps by default: a sixteenth of the memory this
    machine has available now, between :data:`MIN_MEMORY_BUDGET` and
    :data:`DEFAULT_MEMORY_BUDGET` (a laptop with 4 GiB free keeps 256 MiB)."""
    return min(max(available_memory() // 16, MIN_MEMORY_BUDGET), DEFAULT_MEMORY_BUDGET)


def available_memory() -> int:
    """Bytes of memory available to new work (Linux: MemAvailable; elsewhere: free pages)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MEMORY_BUDGET * 16


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
