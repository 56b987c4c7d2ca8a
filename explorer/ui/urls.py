"""The plan and model in the URL, so a reload or a shared link reproduces the same view.

Query parameters (readable on purpose): ``model=digits-cnn&g=weights&c=magnitude&scope=layer
&s=features.0:50,classifier.1:90`` (percent removed per layer), or ``scope=global&amount=80``;
``merge=1`` for a neuron plan by redundancy that merges instead of dropping; ``pattern=2:4``
for an N:M weights plan (a global one may leave out ``amount``: the pattern fixes it). An uploaded
model is ``model=upload:<file name>``: a link cannot carry the file, so a new session asks
for it again and keeps the plan.
Pure functions: no Streamlit here, so they are tested directly.
"""

from __future__ import annotations

from collections.abc import Mapping

from explorer.errors import PlanError, short
from explorer.plan import DEFAULT_CRITERION, Plan

UPLOAD_PREFIX = "upload:"


def _percent(value: float) -> str:
    text = f"{value * 100:.4f}".rstrip("0").rstrip(".")
    return text or "0"


def plan_to_query(plan: Plan) -> dict[str, str]:
    """Query parameters that describe ``plan`` (the model is added by the caller)."""
    out = {"g": plan.granularity, "c": plan.criterion, "scope": plan.scope}
    if plan.scope == "global":
        out["amount"] = _percent(plan.amount)
        if plan.layers is not None:
            out["layers"] = ",".join(plan.layers)
    else:
        parts = [f"{name}:{_percent(v)}" for name, v in plan.sparsity.items() if v > 0]
        if parts:
            out["s"] = ",".join(parts)
    if plan.merge:
        out["merge"] = "1"
    if plan.pattern is not None:
        out["pattern"] = plan.pattern
    return out


def plan_from_query(params: Mapping[str, str]) -> Plan:
    """The plan in ``params``; raises :class:`PlanError` if it is malformed."""
    sparsity: dict[str, float] = {}
    for part in filter(None, params.get("s", "").split(",")):
        name, sep, value = part.rpartition(":")
        if not sep:
            raise PlanError(f"URL plan entry {short(part)} should look like layer:percent.")
        sparsity[name] = _number(value) / 100
    layers = params.get("layers")
    merge = params.get("merge", "0")
    if merge not in ("0", "1"):
        raise PlanError(f"URL plan value merge={short(merge)} should be 1 or 0.")
    scope = params.get("scope", "layer")
    stray = [k for k in (("amount", "layers") if scope == "layer" else ("s",)) if k in params]
    if stray:  # a value the plan would silently ignore
        raise PlanError(f"URL plan value {stray[0]}= does not belong with scope={short(scope)}.")
    return Plan(
        granularity=params.get("g", "weights"),
        criterion=params.get("c", DEFAULT_CRITERION.get(params.get("g", "weights"), "")),
        scope=scope,
        sparsity=sparsity,
        amount=_number(params.get("amount", "0")) / 100,
        layers=tuple(layers.split(",")) if layers else None,
        merge=merge == "1",
        pattern=params.get("pattern") or None,
    )


def upload_name(model: str) -> str | None:
    """The file name in ``model=upload:<file name>``, or None for any other model value."""
    name = model.removeprefix(UPLOAD_PREFIX)
    return name if name != model and name else None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PlanError(f"URL plan value {short(text)} is not a number.") from None
