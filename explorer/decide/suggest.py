"""Suggested plans: per-layer fractions that meet a target, allocated from sensitivity curves.

The sensitivity scan (:mod:`explorer.decide.sensitivity`) says, for each unit — a layer for
``weights``, a coupled neuron group for ``neurons`` — what pruning it alone costs in
validation loss and saves in FLOPs or parameters. :func:`suggest` spends that budget
greedily, by marginal cost (the allocation of sensitivity-guided methods such as Han et al.
2015 and Li et al. 2017, made automatic):

1. per unit, *damage* at each grid fraction is the rise of validation loss over the dense
   model, as a running maximum (an upward bump never makes further pruning look free);
   loss rather than accuracy, because accuracy on a few hundred images moves in steps of
   one image and ties most early steps at zero;
2. starting from the dense model, repeatedly move the unit whose move to a further grid
   fraction costs the least damage per unit of saving (FLOPs saved for ``flops`` and
   ``accuracy_drop`` targets, parameters removed for ``size``); comparing every further
   fraction, not only the next, lets a unit jump over a bump in its curve, and among moves
   of equal ratio the one that saves more wins;
3. the path is checked on the real plan: for ``flops`` / ``size`` the first step whose exact
   cost arithmetic meets the target ends it; for ``accuracy_drop`` every step is evaluated
   and the path ends before the first step whose measured drop exceeds the target (as in
   :func:`explorer.decide.targets.fit`, never beyond a failure);
4. the last move is refined between its two grid fractions by bisection (four decimals), so
   the plan meets the target with no more pruning than it needs (or, for accuracy, prunes
   as much as the measured drop allows).

Each unit pruned alone is only an estimate of the units pruned together; step 3 is why the
result still meets the target exactly as :meth:`Evaluator.evaluate
<explorer.evaluator.Evaluator.evaluate>` measures it. The two baselines every pruning
paper compares against (Blalock et al. 2020) — the same fraction in every layer, and one
global threshold by magnitude (L1 norm for neurons) — are fitted to the same target, so a
page can show suggested vs uniform vs global side by side.

A ``latency`` target (N times faster, *measured*) runs the same allocation with each unit's
saving read from a measured latency table (:class:`~explorer.decide.targets.LatencyTable`,
handed in as data: this stage times nothing) and the path ends where the table's additive
estimate meets N. Units pruned together need not save the sum of what they save alone, so
the plan is then timed by the caller's ``measure`` (a plan -> measured speed-up callable,
e.g. :func:`explorer.export.latency.measure` wrapped by the CLI or a page); when it falls
short, the walk goes further, to the estimate that would meet N if every estimated saving
shrank as the measured plan's did (:func:`further_goal`) and aiming :data:`AIM_PAST` beyond
N, so that timing noise and savings that shrink at the margin do not leave it just short; at
most :data:`LATENCY_TRIES` times; the result says what was measured and whether it met N
(:class:`LatencyCheck`), never only the estimate.

Everything above happens on the *calibration* part of the validation data (the scan, the
greedy allocation, the target fit for ``accuracy_drop``, the baselines' fit); every row is
then also measured on the *held-out* part, which no choice saw, and that is the accuracy to
report (:mod:`explorer.decide.held_out`). Cost targets do not depend on data: they are met exactly
on both parts.

The verification — the suggested plan and the dense model measured on both parts, and each
baseline fitted and measured — is four independent shares an executor can run elsewhere
(:mod:`explorer.decide.cluster`), to the same rows; the greedy walk itself is one path and
stays here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from explorer.data import DecisionSplit
from explorer.decide.held_out import SplitEvaluator, SplitMetrics, split_report
from explorer.decide.sensitivity import Sensitivity, UnitCurve
from explorer.decide.targets import (
    STEPS,
    Target,
    bisect,
    cost_metrics,
    dense_metrics,
    fit,
    global_plan,
    uniform_plan,
)
from explorer.errors import DataError, ExplorerError, PlanError
from explorer.evaluator import Evaluator
from explorer.metrics import Metrics
from explorer.plan import WHOLE_BLOCKS, Plan, default_criterion

if TYPE_CHECKING:
    from explorer.decide.cluster import Executor

SUGGESTED, UNIFORM, GLOBAL = "suggested", "uniform", "global magnitude"
# A further latency plan aims this much past the target: two timings of one plan differ by a
# few per cent, and the last neurons removed save less than the estimate's share supposes
# (seen on digits-cnn: aiming at 1.5x itself measured 1.48-1.499x four times running).
AIM_PAST = 1.05
LATENCY_TRIES = 4  # a latency plan is measured at most this many times, going further each

Measure = Callable[[Plan], float]  # a plan -> its measured speed-up (dense time / pruned)


@dataclass(frozen=True)
class LatencyCheck:
    """A latency suggestion as measured: the target, the table's estimate and the measured
    speed-up of the plan returned, how many plans were measured to get there, and each
    baseline row's measured speed-up (by row name)."""

    target: float
    estimated: float
    measured: float
    tries: int
    batch: int
    threads: int
    form: str
    baselines: dict[str, float]

    @property
    def met(self) -> bool:
        return self.measured >= self.target

    def describe(self) -> str:
        """One line: measured against the target, and by how much it missed if it did."""
        line = (f"measured {self.measured:.2f}x (estimated {self.estimated:.2f}x) at batch "
                f"{self.batch}, {self.threads} thread(s), {self.form} form, after "
                f"{self.tries} measurement(s)")
        if self.met:
            return f"{line}: meets {self.target:g}x"
        return (f"{line}: MISSED {self.target:g}x by {self.target - self.measured:.2f}x "
                f"({1 - self.measured / self.target:.0%} short)")

    def to_dict(self) -> dict:
        return {"target": self.target, "estimated": self.estimated, "measured": self.measured,
                "met": self.met, "tries": self.tries, "batch": self.batch,
                "threads": self.threads, "form": self.form,
                "baselines_measured": self.baselines}


@dataclass(frozen=True)
class Row:
    """One plan of the comparison: its name, plan and metrics on both parts, or why there
    is none.

    ``fraction`` is a baseline's one knob (the fraction in every layer, or the global
    amount); None for the suggested plan, whose fractions differ per layer.
    """

    name: str
    plan: Plan | None
    metrics: SplitMetrics | None
    fraction: float | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        parts = {"calibration": None, "held_out": None} if self.metrics is None \
            else self.metrics.to_dict()
        return {
            "name": self.name,
            "plan": None if self.plan is None else self.plan.to_dict(),
            "fraction": self.fraction,
            **parts,
            "error": self.error,
        }


@dataclass(frozen=True)
class Suggestion:
    """A plan suggested for ``target`` with its metrics, and the baselines fitted to it.

    ``metrics`` and ``dense`` (the unpruned model) are measured on both parts of ``split``;
    ``baselines`` are rows for the uniform and the global-magnitude plan (a row's ``error``
    says when the target is out of that baseline's reach).
    """

    target: Target
    granularity: str
    criterion: str
    plan: Plan
    metrics: SplitMetrics
    dense: SplitMetrics
    baselines: tuple[Row, ...]
    split: DecisionSplit
    latency: LatencyCheck | None = None  # a latency target's measurements

    @property
    def rows(self) -> tuple[Row, ...]:
        """Suggested first, then the baselines: the comparison table's rows."""
        return (Row(SUGGESTED, self.plan, self.metrics), *self.baselines)

    def to_dict(self) -> dict:
        return {
            "target": self.target.to_dict(),
            "granularity": self.granularity,
            "criterion": self.criterion,
            "plan": self.plan.to_dict(),
            **split_report(self.split, self.metrics, self.dense),
            "dense": self.dense.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
            **({"latency": self.latency.to_dict()} if self.latency else {}),
        }


@dataclass(frozen=True)
class Estimate:
    """One unit's estimated damage and saving at each fraction (ascending, from 0)."""

    layers: tuple[str, ...]
    fractions: tuple[float, ...]
    damage: tuple[float, ...]
    saving: tuple[float, ...]


def suggest(
    sens: Sensitivity, judge: SplitEvaluator, target: Target, baselines: bool = True,
    measure: Measure | None = None, executor: Executor | None = None,
) -> Suggestion:
    """Per-layer fractions meeting ``target``, chosen from the curves of ``sens``.

    Args:
        sens: a complete sensitivity scan of ``judge``'s model from the dense model, run on
            its calibration part (its granularity and criterion are the plan's).
        judge: chooses on its calibration part, reports every row on its held-out part.
        target: what the plan must meet (on the calibration part, for ``accuracy_drop``).
        baselines: also fit the uniform and global baselines to ``target``.
        measure: a ``latency`` target's timing of a plan (its measured speed-up); required
            for it, with the target's table (:meth:`Target.with_table
            <explorer.decide.targets.Target.with_table>`) of the scan's granularity.
        executor: runs the verification (the plan and the dense model on both parts, each
            baseline's fit) as shares elsewhere (:mod:`explorer.decide.cluster`), to the
            same result; default: here.

    Raises:
        PlanError: the scan is partial, of another model or other data, or from a pruned
            base, or the target is out of reach of the scan's grid (the message says how
            far it gets).
        DataError: the scan has no accuracies (a model without validation data).
    """
    evaluator = judge.calibration
    if sens.granularity == "blocks":
        raise PlanError(f"No per-layer suggestion of blocks: {WHOLE_BLOCKS}.")
    _check(sens, evaluator)
    if target.kind == "latency":
        check_latency(sens, target, measure)
    dense = dense_metrics(evaluator)
    estimates = _estimates(sens, evaluator, dense, target)
    path = greedy_path(estimates)
    plan_of = _planner(sens, estimates)
    if target.needs_accuracy:
        fractions = _walk_accuracy(evaluator, target, dense, estimates, path, plan_of)
    else:
        fractions = _walk_cost(evaluator, target, estimates, path, plan_of)
    plan = plan_of(fractions)
    check = None
    if target.kind == "latency":
        plan, check = _verified(evaluator, target, estimates, path, plan_of, plan, measure)
    shares = [plan, Plan(), *((UNIFORM, GLOBAL) if baselines else ())]
    work = partial(_verify, granularity=sens.granularity, criterion=sens.criterion,
                   target=target)
    if executor is None:
        found = [work(judge, share) for share in shares]
    else:
        with suppress(ExplorerError):  # the global baseline's scores travel to its share
            judge.calibration.masks(_families(judge, sens.granularity, sens.criterion)[GLOBAL](0.5))
        found, _ = executor.map(judge, work, shares)
    metrics, dense, *rows = found
    if check is not None:
        check = replace(check, baselines={r.name: measure(r.plan) for r in rows if r.plan})
    return Suggestion(target, sens.granularity, sens.criterion, plan, metrics, dense,
                      tuple(rows), judge.split, check)


def _verify(judge: SplitEvaluator, share: Plan | str, granularity: str, criterion: str,
            target: Target) -> SplitMetrics | Row:
    """One share of the verification: a plan measured on both parts, or the baseline
    named ``share`` as a row (module level: it travels by name)."""
    if isinstance(share, Plan):
        return judge.evaluate(share)
    return _baseline_row(judge, share, granularity, criterion, target)


def check_latency(sens: Sensitivity | str, target: Target, measure: Measure | None) -> None:
    """Refuse a latency target without its table and timing, with a table of the other
    granularity, or where no unit got faster (``sens``: the scan or its granularity)."""
    granularity = sens if isinstance(sens, str) else sens.granularity
    table = target.table
    if table is None or measure is None:
        raise PlanError("a latency target needs a measured latency table and a way to time "
                        "the suggested plan (the CLI and the Suggest section provide both).")
    if (table.form == "shrunk") != (granularity != "weights"):
        raise PlanError(f"the latency table times the {table.form} form, which is not what a "
                        f"{granularity} plan runs as: measure it for {granularity}.")
    if not table.gains:
        raise PlanError(
            f"no {granularity} plan runs faster here (batch {table.batch}, "
            f"{table.threads} thread(s)): "
            + ("masked weights run the same dense kernels and the sparse ones were slower "
               "for every layer measured; prune neurons for a latency target."
               if granularity == "weights" else "no unit saved time when pruned."))


def _verified(evaluator, target, estimates, path, plan_of, plan, measure
              ) -> tuple[Plan, LatencyCheck]:
    """The plan measured, going further along ``path`` while the measurement falls short of
    the target, at most LATENCY_TRIES times: the first plan that meets the target, else the
    fastest measured.

    Each next plan aims at the estimate :func:`further_goal` asks for, AIM_PAST beyond the
    target; where that is beyond the table's grid, the path's last plan (the fastest the
    grid holds) is measured once.
    """
    tries: list[tuple[float, Plan]] = []
    while True:
        tries.append((measure(plan), plan))
        measured = tries[-1][0]
        if measured >= target.value or len(tries) >= LATENCY_TRIES:
            break
        goal = further_goal(target.value * AIM_PAST,
                            target.achieved(cost_metrics(evaluator, plan)), measured)
        fractions = None
        if goal is not None:
            with suppress(PlanError):  # the goal lies beyond the table's grid
                fractions = _walk_cost(evaluator, replace(target, value=goal), estimates,
                                       path, plan_of)
        plan = plan_of(_path_end(estimates, path) if fractions is None else fractions)
        if any(plan == p for _, p in tries):  # the grid reaches no further
            break
    measured, plan = next(((m, p) for m, p in tries if m >= target.value),
                          max(tries, key=lambda t: t[0]))
    table = target.table
    return plan, LatencyCheck(target.value, target.achieved(cost_metrics(evaluator, plan)),
                              measured, len(tries), table.batch, table.threads, table.form, {})


def further_goal(target: float, estimated: float, measured: float) -> float | None:
    """The estimated speed-up to aim at for a measured ``target``, after a plan estimated at
    ``estimated`` measured ``measured``; None where no estimate would do.

    It supposes the machine delivers the same share of every estimated saving as it did for
    that plan. A saving is the share of the dense time removed (1 - 1/speed-up): a plan
    estimated 1.91x (48% saved) that measured 1.45x (31% saved) delivered 65% of it, so a
    measured 1.5x (33% saved) needs an estimated 51% saved, 2.05x. Scaling the speed-up
    itself instead (1.91 x 1.5 / 1.45 = 1.98x) aims short, the more so the larger it is.
    """
    estimated_saved, measured_saved = 1 - 1 / estimated, 1 - 1 / measured
    if measured_saved <= 0 or estimated_saved <= 0:
        return None  # nothing measured faster: no share to go by
    needed = (1 - 1 / target) * estimated_saved / measured_saved
    return None if needed >= 1 else 1 / (1 - needed)


def _path_end(estimates: list[Estimate], path: list[tuple[int, int]]) -> list[float]:
    """Each unit's fraction once every move of ``path`` is taken."""
    fractions = [0.0] * len(estimates)
    for u, j in path:
        fractions[u] = estimates[u].fractions[j]
    return fractions


def greedy_path(estimates: list[Estimate]) -> list[tuple[int, int]]:
    """The greedy moves (unit index, grid index moved to), cheapest damage per saving first.

    From every unit at index 0, each move takes a unit from its current index i to the
    further index j with the least ``(damage[j] - damage[i]) / (saving[j] - saving[i])``
    over all units (ties: the larger saving); moves that save nothing are never taken. The
    path ends with every unit at the furthest index that saves more.
    """
    at = [0] * len(estimates)
    path = []
    while True:
        best = None
        for u, est in enumerate(estimates):
            i = at[u]
            for j in range(i + 1, len(est.fractions)):
                gain = est.saving[j] - est.saving[i]
                if gain <= 0:
                    continue
                key = ((est.damage[j] - est.damage[i]) / gain, -gain, u, j)
                if best is None or key < best:
                    best = key
        if best is None:
            return path
        u, j = best[2], best[3]
        at[u] = j
        path.append((u, j))


def _check(sens: Sensitivity, evaluator: Evaluator) -> None:
    if sens.model != evaluator.bundle.name:
        raise PlanError(
            f"The sensitivity scan is of '{sens.model}', not of '{evaluator.bundle.name}'."
        )
    if sens.cancelled:
        raise PlanError("The sensitivity scan was cancelled: run it to the end to get a "
                        "suggestion from every layer's curve.")
    if not sens.units:
        raise PlanError(f"'{sens.model}' has no {sens.granularity} that can be pruned.")
    if not sens.base.removes_nothing:
        raise PlanError("Suggestions start from the dense model: run the sensitivity scan "
                        "without a base plan.")
    if any(a is None for u in sens.units for a in u.accuracy) or evaluator.data is None:
        raise DataError(f"'{sens.model}' has no validation data: a suggestion weighs the "
                        "accuracy each layer loses, which needs it.")
    ran_on = len(evaluator.data) if sens.exact else evaluator.estimate_samples
    if sens.samples != ran_on:
        raise PlanError(f"The sensitivity scan ran on {sens.samples} images, not on the "
                        f"{len(evaluator.data)} calibration images the suggestion is chosen "
                        "on: run the scan on the calibration part.")


def _estimates(
    sens: Sensitivity, evaluator: Evaluator, dense: Metrics, target: Target
) -> list[Estimate]:
    out = []
    for curve in sens.units:
        points = _points(curve, dense)
        fractions = tuple(p[0] for p in points)
        rise, damage = 0.0, []
        for _, _, loss, _ in points:
            rise = max(rise, loss - dense.loss)
            damage.append(rise)
        if target.kind == "latency":
            saving = tuple(target.table.saved(curve.layers, f) for f in fractions)
        elif target.kind == "size":
            saving = tuple(dense.nonzero_params - cost_metrics(
                evaluator, _unit_plan(sens, curve.layers, f)).nonzero_params
                for f in fractions)
        else:
            saving = tuple(dense.flops["effective"] - p[3] for p in points)
        out.append(Estimate(curve.layers, fractions, tuple(damage), saving))
    return out


def _points(curve: UnitCurve, dense: Metrics) -> list[tuple]:
    """The curve's (fraction, accuracy, loss, FLOPs) ascending, with the dense model at 0."""
    points = dict(zip(curve.fractions, zip(curve.fractions, curve.accuracy, curve.loss,
                                           curve.flops_effective, strict=True), strict=True))
    points.setdefault(0.0, (0.0, dense.accuracy, dense.loss, dense.flops["effective"]))
    return [points[f] for f in sorted(points)]


def _unit_plan(sens: Sensitivity, layers: tuple[str, ...], fraction: float) -> Plan:
    return Plan(granularity=sens.granularity, criterion=sens.criterion,
                sparsity={name: fraction for name in layers})


def _planner(sens: Sensitivity, estimates: list[Estimate]) -> Callable[[list[float]], Plan]:
    def plan_of(fractions: list[float]) -> Plan:
        sparsity = {name: f for est, f in zip(estimates, fractions, strict=True)
                    for name in est.layers if f > 0}
        return Plan(granularity=sens.granularity, criterion=sens.criterion, sparsity=sparsity)

    return plan_of


def _between(lo: float, hi: float) -> tuple[int, int, Callable[[int], float]]:
    """Steps bracketing the fractions (lo, hi] on the four-decimal grid, and step -> fraction
    (the two ends map back to ``lo`` and ``hi`` exactly)."""
    first = math.floor(lo * STEPS + 1e-9)
    last = max(math.ceil(hi * STEPS - 1e-9), first + 1)
    return first, last, lambda s: lo if s == first else hi if s == last else s / STEPS


def _walk_cost(evaluator, target, estimates, path, plan_of) -> list[float]:
    fractions = [0.0] * len(estimates)

    def meets(unit: int, fraction: float) -> bool:
        trial = list(fractions)
        trial[unit] = fraction
        return target.meets(cost_metrics(evaluator, plan_of(trial)))

    for u, j in path:
        before, after = fractions[u], estimates[u].fractions[j]
        if meets(u, after):
            first, last, at = _between(before, after)
            fractions[u] = at(bisect(lambda s, u=u, at=at: meets(u, at(s)), first, last))
            return fractions
        fractions[u] = after
    best = cost_metrics(evaluator, plan_of(fractions))
    raise PlanError(
        f"{target.describe()} is out of reach of the sensitivity grid (up to "
        f"{max(max(e.fractions) for e in estimates):.0%} per layer): it reaches at most "
        f"{target.achieved(best):.4g}x. Scan a grid that goes further, or choose a smaller "
        "target."
    )


def _walk_accuracy(evaluator, target, dense, estimates, path, plan_of) -> list[float]:
    fractions = [0.0] * len(estimates)

    def meets(unit: int, fraction: float) -> bool:
        trial = list(fractions)
        trial[unit] = fraction
        return target.meets(evaluator.evaluate(plan_of(trial)), dense)

    for u, j in path:
        before, after = fractions[u], estimates[u].fractions[j]
        if not meets(u, after):
            first, last, at = _between(before, after)
            fails = bisect(lambda s, u=u, at=at: not meets(u, at(s)), first, last)
            fractions[u] = at(fails - 1)
            return fractions
        fractions[u] = after
    return fractions


def _families(judge: SplitEvaluator, granularity: str, criterion: str
              ) -> dict[str, Callable[[float], Plan]]:
    """The uniform plan (by the scan's criterion) and the global plan by magnitude (L1 for
    neurons), as functions of their one fraction."""
    bundle = judge.bundle
    return {
        UNIFORM: lambda f: uniform_plan(bundle, granularity, criterion, f),
        GLOBAL: lambda f: global_plan(granularity, default_criterion(granularity), f),
    }


def _baseline_row(judge: SplitEvaluator, name: str, granularity: str, criterion: str,
                  target: Target) -> Row:
    """Baseline ``name`` fitted to ``target`` on the calibration part and measured on both;
    the row holds the error where it is out of reach."""
    family = _families(judge, granularity, criterion)[name]
    try:
        fraction, plan, _ = fit(judge.calibration, family, target)
    except ExplorerError as exc:
        return Row(name, None, None, error=str(exc))
    return Row(name, plan, judge.evaluate(plan), fraction)

