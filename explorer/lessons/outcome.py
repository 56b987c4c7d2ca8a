"""What a lesson's experiment returns: its numbers, a figure, the right answer and a plan.

The right answer is never written in a lesson file: it follows from the numbers
(:class:`Answer`), so the feedback is true for the numbers the learner sees. A lesson's
choices are keys the experiment has a value for (a layer, a criterion, "ticket"...), and
the right ones are those with the highest (or lowest) value among the choices offered; for
a numeric guess ("about 5 points") the keys are numbers and the right ones are those
nearest the measured value. Ties make several choices right.

The figure is plain data (:class:`Chart`): ``explorer/ui/charts/learn.py`` draws it. Table
cells are raw numbers with a unit per column (:class:`Column`), formatted by the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from explorer.plan import Plan

TIE = 1e-12  # values closer than this are a tie (float noise, not a difference)


@dataclass(frozen=True)
class Answer:
    """How the right choice follows from the numbers.

    ``best="highest"`` / ``"lowest"``: the choices whose ``values`` entry is the largest /
    smallest among the choices offered. ``best="nearest"``: the choices (numbers) nearest
    to ``measured``. ``unit`` says how a value reads: ``"%"`` (a fraction shown as a
    percentage), ``"points"`` (percentage points, from a fraction) or ``""``.
    """

    best: Literal["highest", "lowest", "nearest"]
    values: Mapping[str, float] = field(default_factory=dict)
    measured: float | None = None
    unit: str = ""

    def right(self, choices: Sequence[str]) -> frozenset[str]:
        """The right ones among ``choices`` (keys the experiment knows: see :func:`keys`)."""
        if self.best == "nearest":
            score = {c: -abs(float(c) - self.measured) for c in choices}
        else:
            sign = 1 if self.best == "highest" else -1
            score = {c: sign * self.values[c] for c in choices}
        top = max(score.values())
        return frozenset(c for c, s in score.items() if s >= top - TIE)

    def value(self, choice: str) -> float:
        """The number that decided ``choice``: its value, or the measured one for a guess."""
        return self.measured if self.best == "nearest" else self.values[choice]

    def shown(self, value: float) -> str:
        """``value`` as the feedback writes it, in this answer's unit."""
        if self.unit == "%":
            return percent(value)
        return f"{value:.2f} points" if self.unit == "points" else f"{value:g}"


@dataclass(frozen=True)
class Series:
    """One line or set of bars: ``y`` over ``x``; ``error`` the (low, high) of each y, e.g.
    its 95% interval (None: no error bars)."""

    name: str
    x: tuple[float | str, ...]
    y: tuple[float, ...]
    error: tuple[tuple[float, float], ...] | None = None


@dataclass(frozen=True)
class Chart:
    """A small figure as plain data: bars or lines, axis titles, an optional vertical
    ``marker`` at x (a threshold) and a logarithmic x axis. Values are as the axis reads
    them (percentages already multiplied by 100)."""

    kind: Literal["bar", "line"]
    title: str
    x_title: str
    y_title: str
    series: tuple[Series, ...]
    marker: float | None = None
    marker_label: str = ""
    log_x: bool = False


@dataclass(frozen=True)
class Column:
    """A table column: its heading and how its raw numbers read (``"%"``: a fraction as a
    percentage; ``"count"``; ``"x"``: a ratio; ``"bytes"``; ``"ms"``; ``"number"``;
    ``"text"``)."""

    name: str
    unit: str = "text"


@dataclass(frozen=True)
class Outcome:
    """An experiment's result on ``model``: the ``table`` (rows of raw values by column
    name, ``columns`` in order), the ``chart``, the ``answer``, ``facts`` (strings the
    lesson's feedback may quote as ``{name}``), and the ``plan`` the full ``page`` opens
    with, on ``model`` as shipped, with its accuracy there (``plan_accuracy``, as the
    evaluator measures it on the validation set). ``seconds``: how long the run took."""

    model: str
    columns: tuple[Column, ...]
    table: tuple[Mapping[str, object], ...]
    chart: Chart
    answer: Answer
    facts: Mapping[str, str]
    plan: Plan
    page: str
    plan_accuracy: float
    seconds: float = 0.0


def percent(fraction: float) -> str:
    """A fraction as the app writes it: ``95.00%``."""
    return f"{fraction * 100:.2f}%"


def points(fraction: float) -> str:
    """A difference of two accuracies in percentage points: ``2.50 points``."""
    return f"{fraction * 100:.2f} points"
