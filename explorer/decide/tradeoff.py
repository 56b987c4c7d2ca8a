"""The trade-off workspace: baseline curves at fixed compression ratios, and Pareto fronts.

Blalock et al. 2020 ("What is the State of Neural Network Pruning?", MLSys) ask every
pruning result to be reported as accuracy at compression ratios 2, 4, 8, 16 and 32, next to
the same points of simple baselines. :func:`baseline_curves` fits three of them to each
ratio (with :func:`explorer.decide.targets.fit`, a size target):

* ``uniform``: the same fraction in every layer, by magnitude (L1 norm for neurons);
* ``global magnitude``: one threshold across all layers, by magnitude (L1 for neurons);
* ``random``: the same fraction in every layer, chosen at random — the control.

:func:`pareto_front` marks the plans no other plan beats on both axes (lower cost, higher
accuracy); :func:`decision_front` applies it to plans measured on both parts of the
validation data (:mod:`explorer.decide.held_out`): the front is *chosen* on the calibration part,
and its held-out accuracies are what a page reports, since a plan that made the front by
fitting the noise of some images looks best on exactly those images. The baselines are
fitted to a cost alone (no data) and measured on both parts, so they sit beside either.
:func:`history_front` does it with cost = effective FLOPs or nonzero parameters, so a page
can highlight the front of everything the user tried.

At real size (a validation set the evaluators answer in two steps) the baselines can be
*screened*: each fitted plan measured on the stratified subsets of both parts, with its
interval. They are a reference line to read a plan against, not a choice; a suggestion's
baselines, which a decision is read from, are always measured on every image
(:mod:`explorer.decide.suggest`).

Fitting the baselines reports in the engine's one shape (:mod:`explorer.progress`): after each
fit, ``progress(done, total, baseline)`` with the name of the baseline being fitted. Each
fit (one baseline, one ratio) is a share an executor can run elsewhere
(:mod:`explorer.decide.cluster`), to the same curves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

from explorer.bundle import ModelBundle
from explorer.decide.held_out import SplitEvaluator, SplitMetrics
from explorer.decide.targets import Target, fit_fraction, global_plan, uniform_plan
from explorer.errors import ExplorerError, PlanError
from explorer.metrics import Metrics
from explorer.plan import GRANULARITIES, Plan, default_criterion
from explorer.progress import Progress, tick

if TYPE_CHECKING:
    from explorer.decide.cluster import Executor

BLALOCK_RATIOS = (2, 4, 8, 16, 32)
AXES = ("flops", "size")


class CurvePoint(NamedTuple):
    """A baseline plan fitted to compression ``ratio`` (its metrics, on both parts of the
    validation data, reach at least it)."""

    ratio: float
    plan: Plan
    metrics: SplitMetrics


class BaselineCurves(dict[str, list[CurvePoint]]):
    """Points per baseline name, in ratio order; ``unreachable[name][ratio]`` is the message
    for each ratio that baseline cannot reach."""

    def __init__(
        self, points: dict[str, list[CurvePoint]], unreachable: dict[str, dict[float, str]]
    ) -> None:
        super().__init__(points)
        self.unreachable = {name: dict(r) for name, r in unreachable.items()}

    def __reduce__(self):  # keep ``unreachable`` through pickling (st.cache_data, copies)
        return (BaselineCurves, (dict(self), self.unreachable))


def baseline_families(bundle: ModelBundle, granularity: str) -> dict[str, Callable[[float], Plan]]:
    """Each baseline's plan as a function of its one fraction (see the module docstring)."""
    if granularity not in GRANULARITIES:
        raise PlanError(
            f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}."
        )
    criterion = default_criterion(granularity)
    return {
        "uniform": lambda f: uniform_plan(bundle, granularity, criterion, f),
        "global magnitude": lambda f: global_plan(granularity, criterion, f),
        "random": lambda f: uniform_plan(bundle, granularity, "random", f),
    }


def baseline_curves(
    judge: SplitEvaluator,
    granularity: str,
    ratios: Sequence[float] = BLALOCK_RATIOS,
    progress: Progress | None = None,
    screen: bool = False,
    executor: Executor | None = None,
) -> BaselineCurves:
    """Each baseline fitted to each compression ratio (parameters / nonzero parameters).

    A ratio a baseline cannot reach (e.g. 32 at neuron granularity where the output layer's
    neurons must stay) is recorded in :attr:`BaselineCurves.unreachable`, not raised.
    Each fitted plan is the least pruning that reaches the ratio; it is measured on both
    parts of ``judge``'s data (``screen``: on their stratified subsets, see the module
    docstring). ``progress(done, total, baseline)`` is called after each fit.
    ``executor``: runs each fit (one baseline, one ratio) as a share elsewhere
    (:mod:`explorer.decide.cluster`: a Ray cluster) and merges them in this order, to the
    same curves; default: every fit here, in order.

    Raises:
        PlanError: a bad granularity, or a ratio not greater than 1.
    """
    targets = [Target("size", r) for r in ratios]  # raises on a bad ratio before any work
    families = baseline_families(judge.bundle, granularity)
    shares = [(name, target) for name in families for target in targets]
    work = partial(baseline_point, granularity=granularity, screen=screen)
    if executor is None:
        found = []
        for name, target in shares:
            found.append(work(judge, (name, target)))
            tick(progress, len(found), len(shares), name)
    else:
        for family in families.values():  # the scores computed here travel to every share
            with suppress(ExplorerError):
                judge.calibration.masks(family(0.5))
        finished = 0

        def done(i: int, _: CurvePoint | str) -> None:
            nonlocal finished
            finished += 1
            tick(progress, finished, len(shares), shares[i][0])

        found, _ = executor.map(judge, work, shares, done)
    points: dict[str, list[CurvePoint]] = {name: [] for name in families}
    unreachable: dict[str, dict[float, str]] = {}
    for (name, target), point in zip(shares, found, strict=True):
        if isinstance(point, str):
            unreachable.setdefault(name, {})[target.value] = point
        else:
            points[name].append(point)
    return BaselineCurves(points, unreachable)


def baseline_point(judge: SplitEvaluator, share: tuple[str, Target], granularity: str,
                   screen: bool) -> CurvePoint | str:
    """One baseline (by name) fitted to one size target on the calibration part and
    measured on both parts, or the message saying why it cannot reach it: one share of
    :func:`baseline_curves` (module level: it travels by name)."""
    name, target = share
    family = baseline_families(judge.bundle, granularity)[name]
    try:
        plan = family(fit_fraction(judge.calibration, family, target))
    except ExplorerError as exc:
        return str(exc)
    return CurvePoint(target.value, plan, (judge.estimate if screen else judge.evaluate)(plan))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points that no other point dominates.

    Lower cost and higher accuracy are better; a point is dominated when another is at
    least as good on both and better on one. Equal points do not dominate each other, so
    duplicates on the front are all kept. Points whose accuracy is None (no data) are never
    on the front. Returned in order of increasing cost (then index).
    """
    order = sorted((i for i, (_, acc) in enumerate(points) if acc is not None),
                   key=lambda i: (points[i][0], -points[i][1], i))
    front: list[int] = []
    best = None  # the highest accuracy among cheaper points
    for i in order:
        cost, acc = points[i]
        if best is None or acc > best[1]:
            front.append(i)
            best = (cost, acc)
        elif acc == best[1] and cost == best[0]:
            front.append(i)  # a duplicate of the point that set ``best``
    return front


def cost(metrics: Metrics, axis: str) -> float:
    """A plan's cost on ``axis``: effective FLOPs per sample, or nonzero parameters."""
    if axis == "flops":
        return metrics.flops["effective"]
    if axis == "size":
        return metrics.nonzero_params
    raise PlanError(f"axis must be one of {', '.join(AXES)}; got {axis!r}.")


def decision_front(judged: Sequence[SplitMetrics], cost: Callable[[Metrics], float]) -> list[int]:
    """Indices of the plans on the Pareto front of accuracy vs ``cost``, chosen on the
    calibration part (report their held-out accuracy beside it)."""
    return pareto_front([(cost(m.calibration), m.calibration.accuracy) for m in judged])


def history_front(history: Sequence[tuple[Plan, SplitMetrics]], axis: str) -> list[int]:
    """Indices of the evaluated plans on the Pareto front of accuracy vs ``axis``."""
    return decision_front([m for _, m in history], lambda m: cost(m, axis))
