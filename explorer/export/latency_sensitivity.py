"""Latency sensitivity: the milliseconds each unit saves, measured, when it alone is pruned.

FLOPs say what a unit *could* save; a timing says what it does on this machine, batch and
thread count (NetAdapt, Yang et al. 2018, arXiv:1804.03230, builds its per-layer latency
tables the same way; Neural Magic's Sparsify calls it performance sensitivity).
:func:`latency_sensitivity` times, for each prunable unit and each fraction of a grid, the
form of the model that really gets faster with only that unit pruned:

* ``neurons``: the physically shrunk model (:func:`explorer.export.shrink.shrink`), whose
  smaller layers also shrink the *next* layer's input;
* ``weights``: masked weights run the same dense kernels and save nothing, so they are not
  timed as if they did; a linear layer is timed with its weight as CSR
  (:class:`~explorer.export.latency.SparseLinear`, torch's sparse CPU kernel), every other
  layer is listed in ``skipped`` with the reason (no sparse convolution on the CPU).

Noise on a shared machine: at one thread the table counts the timing thread's CPU time
(``time.thread_time``), which another process taking the core does not inflate, as the wall
clock does (at more threads the work runs on other threads too: the wall clock then). The
whole model is timed (it holds the effect on the next layer, which a per-layer profile
would have to add up across layers anyway), one unit at a time,
the dense model and that unit's grid points interleaved in each of :data:`ROUNDS` rounds
(the order alternating). Each timing keeps its fastest block (the one least disturbed by
other work); each round gives a *ratio*, the point's time over the dense time of the same
round, since a burst of load slows both alike; the table holds the median ratio over
rounds, turned into milliseconds with the dense model's median time over every round of
every unit, so the units' savings are on one scale and can be added. Which neurons go
does not change any shape, so the table depends on the model, granularity, grid, batch
and threads only: :class:`TableCache` keeps it per that key (the model's weights digest
included), so it is measured once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from explorer.bundle import ModelBundle
from explorer.errors import ModelError, PlanError
from explorer.evaluator import Evaluator
from explorer.export.latency import (
    SparseLinear,
    block_times,
    check_count,
    latency_clock,
    timing_inputs,
)
from explorer.limits import MAX_LATENCY_BATCH, MAX_LATENCY_THREADS
from explorer.plan import GRANULARITIES, Plan, default_criterion
from explorer.progress import Cancelled, Progress, stop_now, tick

ROUNDS = 5  # each unit's points and the dense model are timed this many times, interleaved
DEFAULT_GRID = (0.25, 0.5, 0.75, 0.9)
MIN_RUN_TIME = 0.05  # seconds per timing of one model in one round


@dataclass(frozen=True)
class UnitLatency:
    """One unit: milliseconds per batch saved (the table's dense time times one minus the
    median pruned / dense ratio over rounds; negative: slower) at each fraction of the
    grid, and the pruned model's time on the same scale."""

    unit: str
    layers: tuple[str, ...]
    fractions: tuple[float, ...]
    saved_ms: tuple[float, ...]
    pruned_ms: tuple[float, ...]

    def to_dict(self) -> dict:
        return {"unit": self.unit, "layers": list(self.layers),
                "fractions": list(self.fractions), "saved_ms": list(self.saved_ms),
                "pruned_ms": list(self.pruned_ms)}


@dataclass(frozen=True)
class LatencySensitivity:
    """The measured table: per unit, ms saved per fraction; ``form`` names what was timed,
    ``skipped`` says why a unit has no row, ``rounds`` is the repeat count behind each
    median."""

    model: str
    granularity: str
    grid: tuple[float, ...]
    batch: int
    threads: int
    form: str
    dense_ms: float
    units: tuple[UnitLatency, ...]
    rounds: int = ROUNDS
    skipped: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False

    def saved(self) -> dict[tuple[str, ...], dict[float, float]]:
        """{unit's layers: {fraction: ms saved}}: the table as plain data for a decision."""
        return {u.layers: dict(zip(u.fractions, u.saved_ms, strict=True)) for u in self.units}

    def to_dict(self) -> dict:
        return {"model": self.model, "granularity": self.granularity, "grid": list(self.grid),
                "batch": self.batch, "threads": self.threads, "form": self.form,
                "dense_ms": self.dense_ms, "rounds": self.rounds,
                "units": [u.to_dict() for u in self.units], "skipped": self.skipped}


def latency_sensitivity(bundle: ModelBundle, granularity: str,
                        grid: Sequence[float] = DEFAULT_GRID, batch: int = 1, threads: int = 1,
                        min_run_time: float = MIN_RUN_TIME, progress: Progress | None = None,
                        cancelled: Cancelled | None = None) -> LatencySensitivity:
    """Time every unit of ``granularity`` pruned alone at each fraction of ``grid``.

    Args:
        bundle: the model (never written; every pruned form is a copy).
        granularity: ``neurons`` (shrunk models) or ``weights`` (CSR linear layers).
        grid: fractions removed, each in (0, 1).
        batch, threads: as :func:`explorer.export.latency.measure`.
        min_run_time: seconds each model is timed for in each round.
        progress, cancelled: :mod:`explorer.progress`'s callbacks, one step per unit; a
            cancelled run returns the units timed so far (``cancelled`` True).
    """
    grid = check_grid(granularity, grid)
    check_count(batch, "batch", MAX_LATENCY_BATCH)
    check_count(threads, "threads", MAX_LATENCY_THREADS)
    evaluator = Evaluator(bundle, None, memory_budget=0, estimate_samples=0)
    x = timing_inputs(bundle, batch)
    units, skipped, dense = [], {}, []
    todo = bundle.units(granularity)
    for done, (unit, layers) in enumerate(todo.items()):
        if stop_now(cancelled):
            return _table(bundle, granularity, grid, batch, threads, dense, units, skipped, True)
        try:
            models = [pruned_alone(bundle, evaluator, granularity, layers, f) for f in grid]
        except ModelError as exc:
            skipped[unit] = str(exc)
        else:
            ratios, dense_times = time_unit(bundle.model, models, x, threads, min_run_time)
            dense += dense_times
            units.append((unit, layers, ratios))
        tick(progress, done + 1, len(todo), unit)
    return _table(bundle, granularity, grid, batch, threads, dense, units, skipped, False)


def _table(bundle, granularity, grid, batch, threads, dense, rows, skipped, cancelled):
    dense_ms = float(torch.tensor(dense).median()) if dense else float("nan")
    units = tuple(UnitLatency(unit, layers, grid, tuple(dense_ms * (1 - r) for r in ratios),
                              tuple(dense_ms * r for r in ratios))
                  for unit, layers, ratios in rows)
    form = "sparse" if granularity == "weights" else "shrunk"
    return LatencySensitivity(bundle.name, granularity, grid, batch, threads, form, dense_ms,
                              units, ROUNDS, skipped, cancelled)


def check_grid(granularity: str, grid: Sequence[float]) -> tuple[float, ...]:
    if granularity not in GRANULARITIES:
        raise PlanError(f"granularity must be one of {', '.join(GRANULARITIES)}; got "
                        f"{granularity!r}.")
    fractions = tuple(sorted({float(f) for f in grid}))
    if not fractions or not all(0 < f < 1 for f in fractions):
        raise PlanError(f"a latency grid is fractions removed between 0 and 1 (exclusive), "
                        f"e.g. 0.25,0.5,0.75; got {list(grid)}.")
    return fractions


def pruned_alone(bundle: ModelBundle, evaluator: Evaluator, granularity: str,
                 layers: tuple[str, ...], fraction: float) -> nn.Module:
    """The model that runs faster with only ``layers`` pruned by ``fraction``: shrunk
    (neurons), or with CSR weights in that linear layer (weights); ModelError where none."""
    plan = Plan(granularity=granularity, criterion=default_criterion(granularity),
                sparsity=dict.fromkeys(layers, fraction))
    masks = evaluator.masks(plan)
    if granularity != "weights":
        from explorer.export.shrink import shrink

        return shrink(bundle, masks).eval()
    from explorer.export.latency import masked_model

    module = dict(bundle.model.named_modules()).get(layers[0])
    if not isinstance(module, nn.Linear):
        raise ModelError("dense kernels run masked weights as fast as the dense ones, and "
                         "torch has no sparse CPU kernel for this layer (only linear ones)")
    model = masked_model(bundle, masks)
    model.set_submodule(layers[0], SparseLinear(model.get_submodule(layers[0])))
    return model


def time_unit(dense: nn.Module, models: list[nn.Module], x: torch.Tensor, threads: int,
              min_run_time: float) -> tuple[tuple[float, ...], list[float]]:
    """(median over rounds of pruned / dense time, per model; the dense model's time in
    each round): the dense model and ``models`` timed in interleaved rounds, each timing
    its fastest block."""
    clock = latency_clock(threads)
    runs = [dense, *models]
    fastest: list[list[float]] = [[] for _ in runs]
    for r in range(ROUNDS):
        order = range(len(runs)) if r % 2 == 0 else reversed(range(len(runs)))
        for i in order:  # alternate the order: drift in load hits both ends alike
            times = block_times(runs[i], x, threads, min_run_time, r == 0, clock)
            fastest[i].append(min(times))
    base = torch.tensor(fastest[0])
    ratios = tuple(float((torch.tensor(m) / base).median()) for m in fastest[1:])
    return ratios, fastest[0]


def model_digest(bundle: ModelBundle) -> str:
    """A digest of the model's weights and input shape: a table's key names the content."""
    h = hashlib.sha256(repr((bundle.name, bundle.input_shape)).encode())
    for name, value in sorted(bundle.model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TableCache:
    """Measured tables by (model digest, granularity, grid, batch, threads), the
    ``max_entries`` most recent kept: a table is measured once, then served."""

    def __init__(self, max_entries: int = 16) -> None:
        self.max_entries = max_entries
        self.tables: OrderedDict[tuple, LatencySensitivity] = OrderedDict()

    def get(self, bundle: ModelBundle, granularity: str, grid: Sequence[float] = DEFAULT_GRID,
            batch: int = 1, threads: int = 1, **kwargs) -> LatencySensitivity:
        """The cached table for these settings, else a new measurement (not cached when
        cancelled); ``kwargs`` go to :func:`latency_sensitivity`."""
        key = (model_digest(bundle), granularity, check_grid(granularity, grid), batch, threads)
        if key in self.tables:
            self.tables.move_to_end(key)
            return self.tables[key]
        table = latency_sensitivity(bundle, granularity, grid, batch, threads, **kwargs)
        if not table.cancelled:
            self.tables[key] = table
            while len(self.tables) > self.max_entries:
                self.tables.popitem(last=False)
        return table
