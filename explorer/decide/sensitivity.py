"""Per-layer sensitivity: how much each prunable unit tolerates when it alone is pruned.

For every unit — a layer for ``weights``, a coupled neuron group for ``neurons`` (all its
members at the same fraction) — the unit is pruned over a grid of fractions while every other
layer stays as in a base plan (default: dense), and accuracy, loss and effective FLOPs are
recorded at each point (the classic sensitivity scan of Han et al. 2015, "Learning both
Weights and Connections for Efficient Neural Networks", and Li et al. 2017, "Pruning
Filters for Efficient ConvNets"). Layers whose neurons cannot be removed are skipped, each
with the reason.

A block (``blocks``) is kept or dropped, never cut by a fraction: its curve has two points,
0 (the dense model) and 1 (the model without that block alone), the layer-removal ablation
that ShortGPT (Men et al. 2024) compares its block influence with. The base is the dense
model; ``grid`` does not apply.

A scan is a decision aid: the app and the CLI run it on the calibration part of the
validation data (:mod:`explorer.decide.held_out`), so the plans it suggests can be reported on
images it never saw. ``samples`` records how many images it ran on.

At real size a scan *screens* (``screen=True``): every point on the evaluator's stratified
subset, then each unit's tolerance — the points a per-layer fraction is read from — on
every image; each point's ``samples`` says which it is.

Each unit's grid is swept in order, so the incremental :class:`~explorer.evaluator.Evaluator`
reuses the network before the unit and its cached scores serve every fraction.

Progress and cancelling take the engine's one shape (:mod:`explorer.progress`): after each
evaluation ``progress(done, total, so_far)`` gets the result so far, for drawing a scan while
it runs; cancelling (``cancelled()`` returning True, checked before each evaluation) does not
raise: the result holds the points evaluated so far and ``cancelled`` is True; units not
reached have no curve, and the unit being swept has a shorter one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from explorer.decide.compare_criteria import checked_grid
from explorer.errors import PlanError
from explorer.evaluator import Evaluator
from explorer.metrics import Metrics
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress, stop_now

if TYPE_CHECKING:
    from explorer.decide.cluster import Executor

DEFAULT_GRID = tuple(round(i / 20, 2) for i in range(20))  # 0, 0.05, ..., 0.95
BLOCK_GRID = (0.0, 1.0)  # a block kept, then dropped
# A blocks plan's amount that drops its one candidate block: round(0.99 x 1) = 1.
ONE_OF_ONE = 0.99
REFINED_PER_UNIT = 2  # a screened unit's points evaluated on every image: its tolerance


@dataclass(frozen=True)
class UnitCurve:
    """One unit's scan, aligned by index with ``fractions`` (the fraction removed).

    ``layers`` are the layers set to each fraction (one for weights, the coupled group for
    neurons). ``accuracy`` and ``loss`` hold None for a model without validation data;
    ``flops_effective`` is per input sample, 2 per multiply-add (see :mod:`explorer.metrics`);
    ``samples`` is the number of images behind each point (a screened point: the
    stratified subset's; an exact one: every image).
    """

    unit: str
    layers: tuple[str, ...]
    fractions: tuple[float, ...]
    accuracy: tuple[float | None, ...]
    loss: tuple[float | None, ...]
    flops_effective: tuple[int, ...]
    samples: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {
            "unit": self.unit,
            "layers": list(self.layers),
            "fractions": list(self.fractions),
            "accuracy": list(self.accuracy),
            "loss": list(self.loss),
            "flops_effective": list(self.flops_effective),
            "samples": list(self.samples),
        }

    @classmethod
    def from_points(cls, unit: str, layers: tuple[str, ...], points: list[tuple]) -> UnitCurve:
        """A curve from :func:`unit_points`' (fraction, accuracy, loss, FLOPs, samples)."""
        fractions, accuracy, loss, flops, samples = zip(*points, strict=True)
        return cls(unit, layers, fractions, accuracy, loss, flops, samples)


@dataclass(frozen=True)
class Sensitivity:
    """The scan of every unit of one model (see the module docstring).

    ``skipped`` maps each layer that cannot be pruned at ``granularity`` to the reason;
    ``cancelled`` is True when the scan stopped early (its curves are then partial);
    ``samples`` is the number of validation images it ran on (0 without data) and ``exact``
    whether every point ran on all of them (False: screened on the stratified subset).
    """

    model: str
    granularity: str
    criterion: str
    grid: tuple[float, ...]
    base: Plan
    units: tuple[UnitCurve, ...]
    skipped: dict[str, str]
    cancelled: bool = False
    samples: int = 0
    exact: bool = True

    def unit(self, name: str) -> UnitCurve:
        return next(u for u in self.units if u.unit == name)

    @property
    def whole_units(self) -> tuple[UnitCurve, ...]:
        """The units scanned over the whole grid (a cancelled scan's last unit may stop
        midway)."""
        return tuple(u for u in self.units if len(u.fractions) == len(self.grid))

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "granularity": self.granularity,
            "criterion": self.criterion,
            "grid": list(self.grid),
            "base": self.base.to_dict(),
            "cancelled": self.cancelled,
            "samples": self.samples,
            "exact": self.exact,
            "units": [u.to_dict() for u in self.units],
            "skipped": dict(self.skipped),
        }


def base_problem(plan: Plan, granularity: str) -> str | None:
    """Why ``plan`` cannot set the other layers of a ``granularity`` scan (None: it can)."""
    if plan.scope != "layer":
        return ("Your current plan is a global plan: it has no per-layer fractions to keep "
                "the other layers at. Use a per-layer plan (Prune page) or the dense base.")
    if plan.granularity != granularity:
        return (f"Your current plan prunes {plan.granularity}, this scan {granularity}: "
                "the base must prune the same kind.")
    return None


def scan_base(plan: Plan | None, granularity: str, criterion: str) -> Plan:
    """What a scan keeps the other layers at: dense (``plan`` None) or ``plan``'s fractions,
    scored by ``criterion`` (merge stays only with redundancy); a plan that cannot be a base
    raises :class:`PlanError` saying why (:func:`base_problem`)."""
    if plan is None:
        return Plan(granularity=granularity, criterion=criterion)
    problem = base_problem(plan, granularity)
    if problem is not None:
        raise PlanError(problem)
    return replace(plan, criterion=criterion, merge=plan.merge and criterion == "redundancy")


def sensitivity(
    evaluator: Evaluator,
    granularity: str,
    criterion: str,
    grid: Sequence[float] = DEFAULT_GRID,
    base: Plan | None = None,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
    screen: bool = False,
    executor: Executor | None = None,
) -> Sensitivity:
    """Accuracy, loss and effective FLOPs of each unit pruned alone over ``grid``.

    Args:
        evaluator: evaluates plans on the model and validation set it holds (or costs only,
            without data: accuracy and loss are then None).
        granularity: ``"weights"`` (a unit is a layer), ``"neurons"`` (a coupled group),
            ``"heads"`` (an attention) or ``"blocks"`` (a block, kept or dropped).
        criterion: a criterion registered for ``granularity`` (e.g. ``"magnitude"``).
        grid: fractions removed, each in [0, 1), evaluated in this order for every unit.
        base: a per-layer plan of the same granularity setting the other layers (its
            criterion is replaced by ``criterion``); default: all dense.
        progress: called as ``progress(done, total, so_far)`` after each evaluation, with
            ``done`` of ``total`` evaluations of the whole scan and the result so far: the
            finished units' curves and the current unit's curve up to this point
            (``cancelled`` False) — for drawing a scan while it runs.
        cancelled: called before each evaluation; when it returns True the scan stops and
            the partial result is returned with ``cancelled=True``.
        screen: evaluate each point on the evaluator's stratified subset only
            (:meth:`~explorer.evaluator.Evaluator.estimate`): on a large validation set a
            fraction of the cost, each point's ``samples`` saying so. Each unit's
            *tolerance* is then evaluated on every image: the largest fraction still
            holding up on the subset and the next one (:func:`tolerance_points`), the
            points a per-layer fraction is read from; decisions taken from the scan are
            checked with full evaluations too (as :mod:`explorer.decide.suggest` does).
            Without an estimate phase every point is exact anyway.
        executor: runs the units as shares elsewhere (:mod:`explorer.decide.cluster`: a
            Ray cluster) and merges them in this order, to the same result; ``progress``
            then hears each finished unit and ``cancelled`` stops the shares still
            running. Default: every point here, in order.

    Raises:
        PlanError: a bad granularity, criterion, grid or base plan.
    """
    if granularity == "blocks":
        grid, base = BLOCK_GRID, _dense_blocks(base, criterion)
    else:
        grid = tuple(checked_grid(granularity, grid))
        base = scan_base(base, granularity, criterion)
    base.check(evaluator.bundle)
    units = evaluator.bundle.units(granularity)
    skipped = evaluator.bundle.unprunable(granularity)
    images = 0 if evaluator.data is None else len(evaluator.data)
    screened = screen and evaluator.refines
    per_unit = len(grid) + (REFINED_PER_UNIT if screened else 0)
    total = len(units) * per_unit
    curves: list[UnitCurve] = []

    def result(units_so_far: list[UnitCurve], stopped: bool) -> Sensitivity:
        return Sensitivity(
            model=evaluator.bundle.name,
            granularity=granularity,
            criterion=criterion,
            grid=grid,
            base=base,
            units=tuple(units_so_far),
            skipped=skipped,
            cancelled=stopped,
            samples=evaluator.estimate_samples if screened else images,
            exact=not screened,
        )

    if executor is not None:
        # the scores computed here once travel with the evaluator to every share
        evaluator.masks(_at(base, [m for ms in units.values() for m in ms], 0.5))
        work = partial(_unit_share, base=base, grid=grid, screen=screen)
        return result(*_by_shares(executor, evaluator, work, units, per_unit, progress,
                                  cancelled, result))
    for i, (unit, members) in enumerate(units.items()):

        def report(evaluated: int, points: list[tuple], i=i, unit=unit, members=members
                   ) -> None:
            if progress is not None:  # the result so far is built only when reported
                progress(i * per_unit + evaluated, total,
                         result([*curves, UnitCurve.from_points(unit, members, points)],
                                stopped=False))

        points, stopped = unit_points(evaluator, base, members, grid, screen, cancelled,
                                      report)
        if points:
            curves.append(UnitCurve.from_points(unit, members, points))
        if stopped:
            return result(curves, True)
    return result(curves, False)


def unit_points(
    evaluator: Evaluator,
    base: Plan,
    members: tuple[str, ...],
    grid: tuple[float, ...],
    screen: bool,
    cancelled: Cancelled | None = None,
    report: Callable[[int, list[tuple]], None] | None = None,
) -> tuple[list[tuple], bool]:
    """One unit's scan (see :func:`sensitivity`): its points, each (fraction, accuracy,
    loss, effective FLOPs, samples), and whether ``cancelled`` stopped it. ``members`` are
    set to each fraction of ``grid`` over ``base``; ``report(evaluated, points)`` hears
    each evaluation (how many so far in this unit, the points so far)."""
    measure = evaluator.estimate if screen else evaluator.evaluate
    points, measured = [], []

    def plan_at(fraction: float) -> Plan:
        return _at(base, members, fraction)

    def point(fraction: float, m: Metrics) -> tuple:
        return (fraction, m.accuracy, m.loss, m.flops["effective"], m.samples)

    for fraction in grid:
        if stop_now(cancelled):
            return points, True
        measured.append(measure(plan_at(fraction)))
        points.append(point(fraction, measured[-1]))
        if report is not None:
            report(len(points), points)
    refine = tolerance_points(measured) if screen and evaluator.refines else []
    for n, i in enumerate(refine, start=1):
        if stop_now(cancelled):
            return points, True
        points[i] = point(grid[i], evaluator.evaluate(plan_at(grid[i])))
        if report is not None:
            report(len(grid) + n, points)
    return points, False


def _by_shares(
    executor: Executor,
    evaluator: Evaluator,
    work: Callable[[Evaluator, tuple[str, ...]], list[tuple]],
    units: dict[str, tuple[str, ...]],
    per_unit: int,
    progress: Progress | None,
    cancelled: Cancelled | None,
    result: Callable[[list[UnitCurve], bool], Sensitivity],
) -> tuple[list[UnitCurve], bool]:
    """The scan's units as the executor's shares (``work`` on each unit's layers), merged
    in unit order: (curves, stopped). A cancelled scan keeps the units that finished."""
    names = list(units)
    finished: dict[int, UnitCurve] = {}

    def done(i: int, points: list[tuple]) -> None:
        finished[i] = UnitCurve.from_points(names[i], units[names[i]], points)
        if progress is not None:
            progress(len(finished) * per_unit, len(names) * per_unit,
                     result([finished[k] for k in sorted(finished)], False))

    _, stopped = executor.map(evaluator, work, list(units.values()), done, cancelled)
    return [finished[k] for k in sorted(finished)], stopped


def _dense_blocks(base: Plan | None, criterion: str) -> Plan:
    """The base of a blocks scan: the dense model (a blocks plan that drops nothing)."""
    if base is not None and not (base.granularity == "blocks" and base.amount == 0):
        raise PlanError("A blocks scan drops each block alone from the dense model: it "
                        "takes no base plan.")
    return Plan(granularity="blocks", criterion=criterion, scope="global", amount=0.0)


def _at(base: Plan, layers: Sequence[str], fraction: float) -> Plan:
    """``base`` with ``layers`` set to ``fraction`` removed (a block's layers: that block
    dropped alone at 1, nothing at 0)."""
    if base.granularity == "blocks":
        return replace(base, layers=tuple(layers), amount=ONE_OF_ONE if fraction else 0.0)
    for layer in layers:
        base = base.with_sparsity(layer, fraction)
    return base


def _unit_share(evaluator: Evaluator, members: tuple[str, ...], base: Plan,
                grid: tuple[float, ...], screen: bool) -> list[tuple]:
    """One unit's points, as a share an executor runs (module level: it travels by name)."""
    return unit_points(evaluator, base, members, grid, screen)[0]


def tolerance_points(screened: Sequence[Metrics]) -> list[int]:
    """Where one unit's screened curve says how far it can go (indices, at most
    :data:`REFINED_PER_UNIT`): the largest fraction whose 95% interval still reaches the
    first point's accuracy (the base when the grid starts at 0; the same images, so the
    comparison is paired) and the next fraction, the first that falls clearly below it.
    None without accuracy (no data)."""
    if not screened or screened[0].accuracy is None:
        return []
    base = screened[0].accuracy
    holding = [i for i, m in enumerate(screened) if m.accuracy_ci[1] >= base]
    last = holding[-1]
    return [last, last + 1] if last + 1 < len(screened) else [last]

