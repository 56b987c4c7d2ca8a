"""Comparing criteria: accuracy-vs-sparsity curves of every registered criterion, side by side.

Two sweeps answer "which criterion matters where":

* :func:`layer_curves` prunes one layer (for neurons, its whole coupled group) over a grid of
  fractions while every other layer stays as in a base plan (default: dense) — how much
  that layer tolerates under each criterion;
* :func:`global_curves` removes one global fraction across every prunable layer with one
  threshold — the criteria compared on the whole model.

Every criterion registered for the granularity at call time takes part (``random`` is the
control). A criterion that cannot score (for example one that needs validation data the
score cache lacks) is reported in :attr:`Curves.errors` with its message instead of raising;
an evaluator without validation data has no accuracy to draw and raises :class:`DataError`.
Each criterion's fractions are evaluated in order, one criterion after the other, so the
incremental evaluator resumes from the swept layer and its cached scores serve every point.
Progress takes the engine's one shape (:mod:`explorer.progress`): after each point,
``progress(done, total, criterion)`` with the name of the criterion being swept.

At real size (a validation set large enough for the evaluator to answer in two steps) a
sweep can *screen*: every point on the evaluator's stratified subset, with its interval,
except the points a decision is read from — the table's fractions (:data:`TABLE_FRACTIONS`),
where the criteria are ranked — which run on every image. Each point says which it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from explorer.errors import DataError, ExplorerError, PlanError
from explorer.evaluator import Evaluator
from explorer.plan import (
    GRANULARITIES,
    WHOLE_BLOCKS,
    Plan,
    criterion_names,
    default_criterion,
)
from explorer.progress import Progress, tick

if TYPE_CHECKING:
    from explorer.decide.cluster import Executor

TABLE_FRACTIONS = (0.5, 0.8)


@dataclass(frozen=True)
class Point:
    """One evaluated plan on a curve: the fraction removed and what it kept and cost.

    ``flops_effective`` is per input sample, 2 per multiply-add (see :mod:`explorer.metrics`);
    ``samples`` is the number of images behind the point and ``exact`` whether that is every
    image (False: screened on the stratified subset; ``accuracy_ci`` is its 95% interval).
    """

    fraction: float
    accuracy: float
    loss: float
    flops_effective: int
    samples: int = 0
    exact: bool = True
    accuracy_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy_ci": None if self.accuracy_ci is None
                else list(self.accuracy_ci)}


class Curves(dict[str, list[Point]]):
    """Points per criterion name (in grid order); criteria that failed are in ``errors``."""

    def __init__(self, points: dict[str, list[Point]], errors: dict[str, str]) -> None:
        super().__init__(points)
        self.errors = dict(errors)

    def __reduce__(self):  # keep ``errors`` through pickling (st.cache_data, copies)
        return (Curves, (dict(self), self.errors))


def default_fractions(granularity: str) -> list[float]:
    """0, 0.1, ..., 0.9 — and 0.95 for weights, where many layers still hold up at 90%."""
    _check_granularity(granularity)
    grid = [round(i / 10, 2) for i in range(10)]
    return grid + [0.95] if granularity == "weights" else grid


def swept_layers(evaluator: Evaluator, granularity: str, layer: str) -> list[str]:
    """The layers one sweep moves together: the layer, or for neurons its coupled group (for
    heads, its attention's four layers)."""
    bundle = evaluator.bundle
    if layer not in bundle.layer_names:
        raise PlanError(
            f"'{bundle.name}' has no prunable layer {layer!r}; "
            f"its prunable layers are: {', '.join(bundle.layer_names)}."
        )
    found = bundle.layer(layer)
    if granularity == "blocks":
        raise PlanError(f"No per-layer curves of blocks: {WHOLE_BLOCKS}.")
    if granularity == "neurons" and (not found.neuron_prunable or found.group is None):
        raise PlanError(f"Neurons of layer '{layer}' cannot be removed: {found.neuron_reason}.")
    if granularity == "heads" and bundle.head_group_of(layer) is None:
        raise PlanError(f"Layer '{layer}' has no attention heads: it is not a query, key, "
                        "value or output projection of an attention.")
    return list(bundle.linked(layer, granularity))


def layer_curves(
    evaluator: Evaluator,
    granularity: str,
    layer: str,
    fractions: Sequence[float] | None = None,
    base: Plan | None = None,
    progress: Progress | None = None,
    screen: bool = False,
    executor: Executor | None = None,
) -> Curves:
    """Accuracy vs the fraction removed from ``layer``, for every criterion of ``granularity``.

    Args:
        evaluator: evaluates plans on the model and validation set it holds.
        granularity: ``"weights"`` or ``"neurons"``.
        layer: a prunable layer's module name; for neurons the sweep sets every layer of its
            coupled group to the same fraction.
        fractions: the grid of fractions removed, each in [0, 1); default
            :func:`default_fractions`.
        base: a per-layer plan of the same granularity giving the fractions of the other
            layers (its criterion is replaced by each swept one); default: all dense.
        progress: called as ``progress(done, total, criterion)`` after each evaluated
            point (``done`` of ``total`` points of the whole sweep, the criterion swept).
        screen: screen the points off the table's fractions on the evaluator's stratified
            subset (see the module docstring); without an estimate phase every point is
            exact anyway.
        executor: runs each criterion's curve as a share elsewhere
            (:mod:`explorer.decide.cluster`: a Ray cluster), merged in this order to the
            same curves; ``progress`` then hears each finished criterion. Default: here.
    """
    members = swept_layers(evaluator, granularity, layer)
    base = base_plan(base, granularity)
    base.check(evaluator.bundle)

    def plan_at(name: str, fraction: float) -> Plan:
        plan = replace(base, criterion=name)
        for member in members:
            plan = plan.with_sparsity(member, fraction)
        return plan

    return _sweep(evaluator, granularity, fractions, plan_at, progress, screen, executor)


def global_curves(
    evaluator: Evaluator,
    granularity: str,
    amounts: Sequence[float] | None = None,
    progress: Progress | None = None,
    screen: bool = False,
    executor: Executor | None = None,
) -> Curves:
    """Accuracy vs one global fraction removed across all prunable layers, per criterion.

    ``amounts`` default to :func:`default_fractions`; the plans are global-scope plans over
    every prunable layer (for neurons, every neuron group), as the Prune page's global slider.
    ``screen`` and ``executor`` as in :func:`layer_curves`.
    """

    def plan_at(name: str, amount: float) -> Plan:
        return Plan(granularity=granularity, criterion=name, scope="global", amount=amount)

    return _sweep(evaluator, granularity, amounts, plan_at, progress, screen, executor)


def accuracy_at(points: Iterable[Point], fraction: float) -> float | None:
    """The accuracy of the point at ``fraction`` (None if the grid does not have it)."""
    return next((p.accuracy for p in points if abs(p.fraction - fraction) < 1e-9), None)


def accuracy_table(
    curves: Curves, fractions: Sequence[float] = TABLE_FRACTIONS
) -> dict[str, dict[float, float | None]]:
    """Accuracy per criterion at a few fractions removed (default 50% and 80%)."""
    return {name: {f: accuracy_at(points, f) for f in fractions} for name, points in curves.items()}


def _sweep(
    evaluator: Evaluator,
    granularity: str,
    fractions: Sequence[float] | None,
    plan_at: Callable[[str, float], Plan],
    progress: Progress | None,
    screen: bool,
    executor: Executor | None = None,
) -> Curves:
    if evaluator.data is None:
        raise DataError(
            f"'{evaluator.bundle.name}' has no validation data: accuracy curves need it. "
            "Upload the model with its data on the Model page."
        )
    names = criterion_names(granularity)
    grid = checked_grid(granularity, fractions)
    total = len(names) * len(grid)
    points: dict[str, list[Point]] = {}
    errors: dict[str, str] = {}
    if executor is not None:
        for name in names:  # the scores computed here once travel to every share
            with suppress(ExplorerError):  # the share reports it, as here
                evaluator.masks(plan_at(name, 0.5))
        work = partial(criterion_curve, grid=grid, plan_at=plan_at, screen=screen)
        finished = 0

        def done(i: int, curve: list[Point] | str) -> None:
            nonlocal finished
            finished += 1
            tick(progress, finished * len(grid), total, names[i])

        found, _ = executor.map(evaluator, work, names, done)
        for name, curve in zip(names, found, strict=True):
            if isinstance(curve, str):
                errors[name] = curve
            else:
                points[name] = curve
        return Curves(points, errors)
    for i, name in enumerate(names):
        report = partial(_point_done, progress, i * len(grid), total, name)
        curve = criterion_curve(evaluator, name, grid, plan_at, screen, report)
        if isinstance(curve, str):
            errors[name] = curve
            tick(progress, (i + 1) * len(grid), total, name)
        else:
            points[name] = curve
    return Curves(points, errors)


def _point_done(progress: Progress | None, before: int, total: int, name: str,
                n: int) -> None:
    """Progress after the ``n``-th point of criterion ``name``, ``before`` points earlier."""
    tick(progress, before + n, total, name)


def criterion_curve(
    evaluator: Evaluator,
    name: str,
    grid: Sequence[float],
    plan_at: Callable[[str, float], Plan],
    screen: bool,
    report: Callable[[int], None] | None = None,
) -> list[Point] | str:
    """Criterion ``name``'s points over ``grid`` (``plan_at(name, fraction)`` each), or the
    message of the :class:`ExplorerError` that stopped it; ``report(n)`` hears each point
    (``n`` so far). One share of a sweep an executor runs elsewhere."""
    curve = []
    try:
        for fraction in grid:
            decides = any(abs(fraction - f) < 1e-9 for f in TABLE_FRACTIONS)
            measure = evaluator.estimate if screen and not decides else evaluator.evaluate
            metrics = measure(plan_at(name, fraction))
            curve.append(Point(fraction=fraction, accuracy=metrics.accuracy,
                               loss=metrics.loss, flops_effective=metrics.flops["effective"],
                               samples=metrics.samples,
                               exact=metrics.samples == len(evaluator.data),
                               accuracy_ci=metrics.accuracy_ci))
            if report is not None:
                report(len(curve))
    except ExplorerError as exc:
        return str(exc)
    return curve


def checked_grid(granularity: str, fractions: Sequence[float] | None) -> list[float]:
    grid = default_fractions(granularity) if fractions is None else list(fractions)
    bad = [f for f in grid if isinstance(f, bool) or not isinstance(f, (int, float))
           or not 0.0 <= f < 1.0]
    if not grid or bad:
        raise PlanError(
            "fractions must be a non-empty list of numbers in [0, 1) (the fraction removed); "
            f"got {list(grid)!r}."
        )
    return [float(f) for f in grid]


def base_plan(base: Plan | None, granularity: str) -> Plan:
    if base is None:
        return Plan(granularity=granularity, criterion=default_criterion(granularity))
    if base.granularity != granularity or base.scope != "layer":
        raise PlanError(
            f"The base plan must be a per-layer {granularity} plan; got a {base.scope}-scope "
            f"{base.granularity} plan."
        )
    return base


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise PlanError(
            f"granularity must be one of {', '.join(GRANULARITIES)}; got {granularity!r}."
        )
