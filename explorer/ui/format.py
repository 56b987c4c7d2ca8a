"""How numbers read in the app: one place, so pages, tests and the CLI agree."""

from __future__ import annotations

from explorer.metrics import Metrics
from explorer.plan import Plan


def percent(value: float, digits: int = 2) -> str:
    return f"{value * 100:.{digits}f}%"


def count(value: float) -> str:
    return f"{value:,.0f}"


def nbytes(value: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def compressed_bytes(metrics: Metrics) -> int:
    """The smallest storage of the plan: the shrunk model, or the best sparse format."""
    sizes = metrics.size_bytes
    if "structured" in sizes:
        return sizes["structured"]
    return min(sizes["dense"], sizes["bitmask"], sizes["csr"])


def with_interval(metrics: Metrics) -> str:
    """Accuracy with its 95% Wilson interval: ``95.51% [91.4-97.7]``."""
    lo, hi = metrics.accuracy_ci
    return f"{percent(metrics.accuracy)} [{lo * 100:.1f}-{hi * 100:.1f}]"


def describe(plan: Plan) -> str:
    """A one-line label of a plan for hover text and tables."""
    if plan.scope == "global":
        return f"{plan.granularity}/{plan.criterion}: {plan.amount:.0%} global"
    parts = [f"{k} {v:.0%}" for k, v in plan.sparsity.items() if v > 0]
    return f"{plan.granularity}/{plan.criterion}: " + (", ".join(parts) or "dense")
