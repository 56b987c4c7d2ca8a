"""Targets a plan must meet, and fitting a one-knob family of plans to a target.

A :class:`Target` is what the user asks for:

* ``flops``: a reduction factor, e.g. 4 = effective FLOPs at most a quarter of the dense
  model's (the theoretical speed-up of Blalock et al. 2020, "What is the State of Neural
  Network Pruning?", MLSys);
* ``size``: a compression ratio, parameters / nonzero parameters, e.g. 8 (Blalock et al.'s
  definition; :attr:`~explorer.metrics.Metrics.compression_ratio`);
* ``accuracy_drop``: the largest accuracy drop accepted, as a fraction (0.01 = one point
  below the dense model on the validation set);
* ``latency``: a *measured* speed-up factor, e.g. 2 = the pruned model runs a batch in half
  the dense model's time. Nothing here measures: a :class:`LatencyTable` (milliseconds saved
  per unit and fraction, measured by the export stage,
  :mod:`explorer.export.latency_sensitivity`) is handed in as data, and a plan's latency is
  *estimated* from it as dense ms / (dense ms - the sum of its units' savings): additive,
  which the caller then checks by timing the plan itself (:mod:`explorer.decide.suggest`).

A *family* maps one fraction in [0, 1) to a plan — :func:`uniform_plan` (the same fraction
in every layer) or :func:`global_plan` (one threshold across layers), the two baselines
every pruning paper compares against. :func:`fit` finds the family's fraction for a target,
on a grid of :data:`STEPS` (fractions with four decimals), so the returned plan meets the
target exactly as :meth:`Evaluator.evaluate <explorer.evaluator.Evaluator.evaluate>`
measures it:

* FLOPs and size are monotone in the fraction (each family removes a growing, nested set
  of weights or neurons), so a bisection on the cost arithmetic alone (no forward pass)
  finds the *smallest* fraction that meets them;
* accuracy is not monotone (a little pruning sometimes helps), so ``accuracy_drop`` walks
  a coarse grid until the first fraction that fails and bisects between it and the last
  one that passed: the result is the largest fraction *before the first failure*, never
  one beyond a failure that happened to pass again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple

from explorer.errors import DataError, PlanError
from explorer.metrics import Metrics, metrics_from
from explorer.plan import Plan

if TYPE_CHECKING:
    from explorer.bundle import ModelBundle
    from explorer.evaluator import Evaluator

KINDS = ("flops", "size", "accuracy_drop", "latency")
ALIASES = {"drop": "accuracy_drop"}
STEPS = 10_000  # fractions are searched as i / STEPS: four decimals
MAX_STEP = 9_990  # the largest fraction a family is tried at: 0.999
COARSE_STEP = 500  # accuracy fits walk 0, 0.05, 0.10, ... before bisecting
DROP_TOLERANCE = 1e-12  # float noise in "0.01" versus a difference of two accuracies
EXAMPLES = {"flops": "4x fewer FLOPs", "size": "compression ratio 4",
            "latency": "2 = twice as fast, measured"}

Family = Callable[[float], Plan]


@dataclass(frozen=True)
class LatencyTable:
    """Measured milliseconds per batch: the dense model's, and each unit's saving (by its
    layers) at each fraction removed, when that unit alone is pruned; ``form`` is what was
    timed (``shrunk``, ``sparse``), at ``batch`` inputs on ``threads`` threads."""

    dense_ms: float
    saved_ms: Mapping[tuple[str, ...], Mapping[float, float]]
    batch: int
    threads: int
    form: str

    def saved(self, layers: tuple[str, ...], fraction: float) -> float:
        """The unit's saving at ``fraction``, linear between the measured fractions (0 ms
        at 0; the last measured saving beyond the grid); 0 for a unit not in the table."""
        points = sorted({0.0: 0.0, **self.saved_ms.get(layers, {})}.items())
        for (f0, s0), (f1, s1) in zip(points, points[1:], strict=False):
            if fraction <= f1:
                return s0 + (s1 - s0) * (fraction - f0) / (f1 - f0)
        return points[-1][1]

    def speedup(self, metrics: Metrics) -> float:
        """The estimated speed-up of the plan ``metrics`` describe: each unit's fraction is
        read from its first layer (neurons removed, or weights zeroed)."""
        layers = {la.name: la for la in metrics.layers}
        total = 0.0
        for unit in self.saved_ms:
            la = layers.get(unit[0])
            if la is None:
                continue
            removed = la.sparsity if self.form == "sparse" else \
                1 - la.neurons_kept / max(la.neurons, 1)
            total += self.saved(unit, removed)
        left = self.dense_ms - total
        return self.dense_ms / left if left > 0 else math.inf

    @property
    def gains(self) -> bool:
        """Whether any unit is faster pruned at some fraction (else no plan of this
        granularity is)."""
        return any(v > 0 for row in self.saved_ms.values() for v in row.values())


@dataclass(frozen=True)
class Target:
    """What a plan must achieve (see the module docstring for each kind).

    ``value``: a factor > 1 for ``flops``, ``size`` and ``latency``; a fraction in [0, 1)
    for ``accuracy_drop``. ``table``: a ``latency`` target's measured table
    (:meth:`with_table`); the estimate it gives is what :func:`fit` meets.
    """

    kind: str
    value: float
    table: LatencyTable | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        kind = ALIASES.get(self.kind, self.kind)
        if kind not in KINDS:
            raise PlanError(
                f"target kind must be one of {', '.join(KINDS)} (or drop); got {self.kind!r}."
            )
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value):
            raise PlanError(f"the {kind} target must be a finite number; got {value!r}.")
        if kind == "accuracy_drop" and not 0.0 <= value < 1.0:
            raise PlanError(
                "the accuracy_drop target is the largest accepted drop as a fraction in "
                f"[0, 1) (0.01 = one point); got {value}."
            )
        if kind != "accuracy_drop" and value <= 1.0:
            raise PlanError(
                f"the {kind} target is a factor greater than 1 (e.g. 4 = "
                f"{EXAMPLES[kind]}); "
                f"got {value}."
            )
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "value", float(value))

    @classmethod
    def parse(cls, text: str) -> Target:
        """``"flops=4"``, ``"size=8"``, ``"latency=2"``, ``"drop=0.01"`` or ``"drop=1%"`` as
        a target."""
        kind, sep, value = str(text).partition("=")
        if not sep:
            raise PlanError(f"a target is kind=value, e.g. flops=4, size=8, latency=2 or "
                            f"drop=0.01; got {text!r}.")
        value = value.strip()
        scale = 0.01 if value.endswith("%") else 1.0
        try:
            number = float(value.rstrip("%")) * scale
        except ValueError:
            raise PlanError(f"the target value must be a number; got {value!r}.") from None
        return cls(kind.strip(), number)

    @property
    def needs_accuracy(self) -> bool:
        return self.kind == "accuracy_drop"

    def with_table(self, table: LatencyTable) -> Target:
        """This latency target estimating plans from ``table``."""
        return replace(self, table=table)

    def achieved(self, metrics: Metrics, dense: Metrics | None = None) -> float:
        """The quantity the target bounds, for ``metrics``: speed-up, compression ratio, or
        accuracy drop versus ``dense`` (needed for ``accuracy_drop`` only)."""
        if self.kind == "flops":
            return metrics.speedup
        if self.kind == "size":
            return metrics.compression_ratio
        if self.kind == "latency":
            if self.table is None:
                raise PlanError("a latency target needs a measured latency table "
                                "(explorer.export.latency_sensitivity) to estimate plans.")
            return self.table.speedup(metrics)
        if dense is None or metrics.accuracy is None or dense.accuracy is None:
            raise DataError("an accuracy_drop target needs accuracies measured on data.")
        return dense.accuracy - metrics.accuracy

    def meets(self, metrics: Metrics, dense: Metrics | None = None) -> bool:
        """Whether ``metrics`` meet the target (``dense``: the unpruned model's metrics on
        the same data, needed for ``accuracy_drop``)."""
        reached = self.achieved(metrics, dense)
        if self.kind == "accuracy_drop":
            return reached <= self.value + DROP_TOLERANCE
        return reached >= self.value

    def describe(self) -> str:
        if self.kind == "flops":
            return f"{self.value:g}x fewer FLOPs"
        if self.kind == "size":
            return f"compression ratio {self.value:g}x"
        if self.kind == "latency":
            where = "" if self.table is None else \
                f" (batch {self.table.batch}, {self.table.threads} thread(s))"
            return f"{self.value:g}x faster, measured{where}"
        return f"accuracy at most {self.value * 100:g} points below the dense model"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}


class Fitted(NamedTuple):
    """A family's plan fitted to a target: its fraction, the plan and the plan's metrics."""

    fraction: float
    plan: Plan
    metrics: Metrics


def uniform_plan(bundle: ModelBundle, granularity: str, criterion: str, fraction: float) -> Plan:
    """The same ``fraction`` removed from every prunable layer (for neurons: every layer
    whose neurons can be removed; coupled layers thereby get equal fractions)."""
    names = bundle.prunable_layers(granularity)
    return Plan(granularity=granularity, criterion=criterion,
                sparsity={name: fraction for name in names})


def global_plan(granularity: str, criterion: str, amount: float) -> Plan:
    """One threshold across every prunable layer removing ``amount`` of all the scores."""
    return Plan(granularity=granularity, criterion=criterion, scope="global", amount=amount)


def cost_metrics(evaluator: Evaluator, plan: Plan) -> Metrics:
    """Sizes and FLOPs of ``plan`` by arithmetic alone (accuracy None): no forward pass."""
    return metrics_from(evaluator.costs.costs(evaluator.masks(plan)))


def dense_metrics(evaluator: Evaluator) -> Metrics:
    return evaluator.evaluate(Plan())


def fit(evaluator: Evaluator, family: Family, target: Target) -> Fitted:
    """The fraction of ``family`` that meets ``target``, with its plan and metrics.

    ``flops`` / ``size``: the smallest fraction (to four decimals) that meets the target;
    ``accuracy_drop``: the largest fraction before the first one whose measured drop
    exceeds the target (see the module docstring).

    Raises:
        PlanError: the target is out of the family's reach (the message gives the most
            it reaches, at fraction 0.999).
        DataError: an ``accuracy_drop`` target on an evaluator without validation data.
    """
    fraction = fit_fraction(evaluator, family, target)
    plan = family(fraction)
    return Fitted(fraction, plan, evaluator.evaluate(plan))


def fit_fraction(evaluator: Evaluator, family: Family, target: Target) -> float:
    """:func:`fit`'s fraction alone: for a cost target no plan is evaluated on data (a
    caller can then measure the plan as it needs, e.g. screened); raises as :func:`fit`."""
    if target.needs_accuracy:
        return _fit_accuracy(evaluator, family, target) / STEPS
    return _fit_cost(evaluator, family, target) / STEPS


def _fit_cost(evaluator: Evaluator, family: Family, target: Target) -> int:
    def meets(step: int) -> bool:
        return target.meets(cost_metrics(evaluator, family(step / STEPS)))

    top = cost_metrics(evaluator, family(MAX_STEP / STEPS))
    best = target.achieved(top)
    if not target.meets(top):
        raise unreachable(target, family(MAX_STEP / STEPS), best)
    # Nonzero parameters (and the FLOPs of weight-pruned layers) fall linearly with the
    # fraction, so 1 / achieved is about linear in it: start from that guess.
    guess = round(MAX_STEP * (1 - 1 / target.value) / (1 - 1 / best))
    return bisect(meets, -1, MAX_STEP, guess)


def _fit_accuracy(evaluator: Evaluator, family: Family, target: Target) -> int:
    if evaluator.data is None:
        raise DataError(
            f"'{evaluator.bundle.name}' has no validation data: an accuracy target needs it."
        )
    dense = dense_metrics(evaluator)

    def meets(step: int) -> bool:
        return target.meets(evaluator.evaluate(family(step / STEPS)), dense)

    passed = 0  # fraction 0 is the dense model: a drop of 0 always meets the target
    for step in [*range(COARSE_STEP, MAX_STEP, COARSE_STEP), MAX_STEP]:
        if not meets(step):
            return bisect(lambda s: not meets(s), passed, step) - 1
        passed = step
    return MAX_STEP


def bisect(meets: Callable[[int], bool], lo: int, hi: int, guess: int | None = None) -> int:
    """The smallest step in (lo, hi] that meets, given that ``hi`` meets and ``lo`` does
    not; where ``meets`` is not monotone, some step that meets with its predecessor failing.

    With a ``guess``, the bracket is first narrowed around it by steps growing 4x (an
    exponential search): a few probes instead of ~14 when the guess is close.
    """
    if guess is not None and lo < guess < hi:
        width = 4
        if meets(guess):
            hi = guess
            while hi - width > lo and meets(hi - width):
                hi, width = hi - width, width * 4
            lo = max(lo, hi - width)
        else:
            lo = guess
            while lo + width < hi and not meets(lo + width):
                lo, width = lo + width, width * 4
            hi = min(hi, lo + width)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return hi


def unreachable(target: Target, plan: Plan, best: float) -> PlanError:
    """The error for a target no plan of the family meets; ``plan`` is its furthest one."""
    how = (f"one global threshold on {plan.granularity} by {plan.criterion}"
           if plan.scope == "global" else f"{plan.granularity} by {plan.criterion}")
    return PlanError(
        f"{target.describe()} is out of reach with {how}: removing up to "
        f"{MAX_STEP / STEPS:.1%} reaches at most {best:.4g}x. Choose a smaller target"
        + (" or prune weights instead of neurons." if plan.granularity == "neurons" else ".")
    )
