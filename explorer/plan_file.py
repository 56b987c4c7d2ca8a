"""Reading a plan file: untrusted bytes (a CLI path, an upload) to the checked fields of a Plan.

A plan file comes from anywhere, so it is read defensively, in the order that costs least:

1. size: at most :data:`~explorer.limits.MAX_PLAN_FILE_BYTES`, checked before decoding;
2. text: strict UTF-8 (a UTF-8 byte-order mark is fine; UTF-16 and Latin-1 are refused);
3. nesting: at most :data:`~explorer.limits.MAX_PLAN_JSON_DEPTH` levels, counted on the
   brackets outside strings, without recursion, before the JSON parser sees the text;
4. JSON: integers of more than 20 digits, ``NaN``/``Infinity`` and a key given twice in one
   object are refused while parsing;
5. fields: the schema of DESIGN.md's "Plan file", validated by pydantic in strict mode with
   unknown fields forbidden and the fields of each scope: a ``"layer"`` plan has ``sparsity``
   (layer name -> fraction removed) and no ``amount``/``layers``; a ``"global"`` plan has an
   ``amount`` and optionally a non-empty ``layers`` list, no ``sparsity``. ``version`` is the
   integer 1 (not ``true``), fractions are finite numbers in [0, 1), ``merge`` a boolean,
   layer names non-empty strings, at most :data:`~explorer.limits.MAX_PLAN_LAYERS` of them;
   ``pattern`` (optional) the text ``"N:M"``, and a global plan with a pattern may leave out
   its ``amount`` (the pattern fixes it; :mod:`explorer.plan` checks the pattern itself).

Every refusal is one :class:`PlanError` naming at most
:data:`~explorer.limits.MAX_NAMED_IN_MESSAGE` problems, each with its field, what was expected
and what was given (cut short), never the whole input. What the fields *mean* for a model
(criterion names, merge, layers the model has) is checked by :class:`explorer.plan.Plan`.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from explorer.errors import PlanError, name_some, short
from explorer.limits import (
    MAX_NAMED_IN_MESSAGE,
    MAX_PLAN_FILE_BYTES,
    MAX_PLAN_JSON_DEPTH,
    MAX_PLAN_LAYERS,
)

PLAN_VERSION = 1
GRANULARITIES = ("weights", "neurons", "heads", "blocks")
SCOPES = ("layer", "global")
MAX_INT_DIGITS = 20
FRACTION_RULE = "a number in [0, 1) (the fraction removed; 1 would remove everything)"

Fraction = Annotated[float, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]
LayerName = Annotated[str, Field(min_length=1)]
LayerList = Annotated[list[LayerName], Field(min_length=1, max_length=MAX_PLAN_LAYERS)]


class PlanFile(BaseModel):
    """A plan file's fields, typed; :meth:`_fields_of_scope` keeps each scope's own fields."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    version: Annotated[int, Field(ge=PLAN_VERSION, le=PLAN_VERSION)]
    granularity: Literal["weights", "neurons", "heads", "blocks"] = "weights"
    # Absent: None, the granularity's default (explorer.plan); a default is not validated,
    # so an explicit null is still refused as not text.
    criterion: str = None  # type: ignore[assignment]
    scope: Literal["layer", "global"] = "layer"
    sparsity: Annotated[dict[LayerName, Fraction], Field(max_length=MAX_PLAN_LAYERS)] = {}
    amount: Fraction = 0.0
    layers: LayerList | None = None
    merge: bool = False
    pattern: str | None = None

    @model_validator(mode="after")
    def _fields_of_scope(self) -> PlanFile:
        given = self.model_fields_set
        wrong = [f for f in SCOPE_FIELDS if f in given and self.scope not in SCOPE_FIELDS[f]]
        if wrong:
            field = wrong[0]
            raise PydanticCustomError(SCOPE_ERROR, f"{field} does not belong in a plan with "
                                      f"scope '{self.scope}' ({OTHER_SCOPE[field]})")
        if self.scope == "global" and "amount" not in given and self.pattern is None:
            raise PydanticCustomError(SCOPE_ERROR, "a plan with scope 'global' needs an amount, "
                                      f"{FRACTION_RULE}")
        return self


SCOPE_ERROR = "scope_fields"
SCOPE_FIELDS = {"sparsity": ("layer",), "amount": ("global",), "layers": ("global",)}
# Why a field is refused in the other scope, and what to write instead.
OTHER_SCOPE = {
    "sparsity": "a global plan removes one 'amount' across its 'layers'",
    "amount": "a per-layer plan gives each layer's fraction in 'sparsity'",
    "layers": "a per-layer plan names its layers in 'sparsity'",
}
EXPECTED = {
    "version": f"this Pruning Explorer reads version {PLAN_VERSION}",
    "granularity": f"one of {', '.join(GRANULARITIES)}",
    "criterion": "a criterion name (text), e.g. 'magnitude'",
    "scope": f"one of {', '.join(SCOPES)}",
    "sparsity": "an object mapping layer names to fractions removed",
    "amount": FRACTION_RULE,
    "layers": "a non-empty list of layer names (leave it out for every prunable layer)",
    "merge": "true or false",
    "pattern": "an N:M pattern as text, e.g. '2:4' (leave it out for unstructured)",
}


def plan_fields(data: object) -> dict:
    """The keyword arguments of :class:`~explorer.plan.Plan` for a parsed plan ``data``
    (a JSON object as a dict); raises :class:`PlanError` naming what does not fit."""
    if not isinstance(data, Mapping):
        raise PlanError("A plan must be a JSON object; see the README for its fields.")
    try:
        plan = PlanFile.model_validate(data)
    except ValidationError as exc:
        raise PlanError(_message(exc)) from None
    kwargs = plan.model_dump(exclude={"version"})
    if kwargs.get("layers") is not None:
        kwargs["layers"] = tuple(kwargs["layers"])
    return kwargs


def parse_plan_bytes(data: bytes | str) -> object:
    """The JSON value in a plan file's ``data`` (bytes as read, or text), after the size,
    encoding and nesting checks of the module docstring."""
    if len(data) > MAX_PLAN_FILE_BYTES:
        raise PlanError(f"The plan file is {len(data):,} bytes; a plan file may be at most "
                        f"{MAX_PLAN_FILE_BYTES:,} bytes.")
    text = data if isinstance(data, str) else _utf8(data)
    if not text.strip():
        raise PlanError("The plan file is empty; a plan is a JSON object (see the README).")
    if _depth(text) > MAX_PLAN_JSON_DEPTH:
        raise PlanError(f"The plan is nested more than {MAX_PLAN_JSON_DEPTH} levels deep; a "
                        "plan is a JSON object of at most 3 levels (see the README).")
    try:
        return json.loads(text, parse_int=_int, parse_constant=_constant,
                          object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise PlanError(f"The plan is not valid JSON: {exc}.") from None


def _utf8(data: bytes) -> str:
    # JSON never holds a raw NUL byte; UTF-16 text of ASCII is every other byte NUL
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\x00" in data:
        raise PlanError("The plan file is not UTF-8 text (it looks like UTF-16); save it as "
                        "UTF-8 and load it again.")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanError(f"The plan file is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                        f"position {exc.start:,}); save it as UTF-8 and load it again.") from None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def _depth(text: str) -> int:
    """The deepest nesting of ``[`` and ``{`` outside JSON strings (a linear scan)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise PlanError(f"The plan holds a number of {len(text.lstrip('-')):,} digits; plan "
                        "numbers are fractions in [0, 1) and the version 1.")
    return int(text)


def _constant(text: str) -> float:
    raise PlanError(f"The plan holds {text}, which is not a number a plan may hold; fractions "
                    "are numbers in [0, 1).")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise PlanError(f"The plan gives the key {short(key)} more than once in one "
                            "object; give each field and layer once.")
        out[key] = value
    return out


def _message(exc: ValidationError) -> str:
    """One short message for pydantic's errors: problems of one kind (bad fractions, bad layer
    names) grouped, at most a few items and problems named, each value cut short."""
    groups: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        rule, item = _problem(err)
        groups.setdefault(rule, []).append(item)
    problems = [rule.format(items=name_some(items)) if "{items}" in rule else rule
                for rule, items in groups.items()]
    shown = "; ".join(problems[:MAX_NAMED_IN_MESSAGE])
    rest = len(problems) - MAX_NAMED_IN_MESSAGE
    return shown + (f"; and {rest:,} more problem(s)" if rest > 0 else "") + "."


class _Raw(str):
    """An item already formatted: :func:`name_some` shows it without quotes."""

    def __repr__(self) -> str:
        return str(self)


def _problem(err: dict) -> tuple[str, str]:
    """(the rule broken, with ``{items}`` where a group names its offending items; the item)."""
    loc, kind = err["loc"], err["type"]
    field = str(loc[0]) if loc else "plan"
    got = _shown(err.get("input"))
    if kind == SCOPE_ERROR:
        return err["msg"], ""
    if kind == "extra_forbidden":
        return "Unknown plan field(s) {items} (the fields are in the README's 'Plan file')", field
    if kind == "missing":
        return f"{field} is missing ({EXPECTED[field]})", ""
    if field == "version":
        return (f"Unsupported plan version {got}; this Pruning Explorer reads version "
                f"{PLAN_VERSION}"), ""
    if kind == "too_long":
        return f"{field} names more than {MAX_PLAN_LAYERS:,} layers, the most a plan may name", ""
    if len(loc) == 1:
        return f"{field} must be {EXPECTED[field]}; got {got}", ""
    if loc[-1] == "[key]" or field == "layers":
        return f"layer names in {field} must be non-empty text; got {{items}}", _Raw(got)
    item = _Raw(f"{short(loc[1])}: {got}")
    return f"sparsity of layer(s) {{items}} must be {FRACTION_RULE}", item


def _shown(value: object) -> str:
    """A JSON value as the file wrote it, cut short (``true``/``null``, not Python's names)."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return short(value)
