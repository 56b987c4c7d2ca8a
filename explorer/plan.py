"""The pruning plan: what the user chose, as an immutable value with a versioned JSON form.

JSON (version 1)::

    {"version": 1, "granularity": "weights" | "neurons", "criterion": "magnitude",
     "scope": "layer", "sparsity": {"features.0": 0.5, "classifier.1": 0.9}}

    {"version": 1, "granularity": "weights", "criterion": "magnitude",
     "scope": "global", "amount": 0.8, "layers": ["features.0", "features.2"]}

Sparsity is the fraction removed, in [0, 1). Layer names are module names from
``model.named_modules()``; layers not named keep everything. With ``scope: "global"`` one
fraction ``amount`` is removed across ``layers`` (default: every prunable layer) by one
threshold on the criterion's scores.

``"merge": true`` (neuron plans by ``redundancy`` only; omitted when false) folds each
removed neuron into its most similar kept neuron instead of dropping it (see
:mod:`explorer.masks`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from explorer.criteria import criterion
from explorer.errors import PlanError

if TYPE_CHECKING:
    from explorer.bundle import ModelBundle

PLAN_VERSION = 1
GRANULARITIES = ("weights", "neurons")
SCOPES = ("layer", "global")


def _fraction(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanError(f"{what} must be a number in [0, 1); got {value!r}.")
    if not 0.0 <= float(value) < 1.0:
        raise PlanError(
            f"{what} must be in [0, 1) (the fraction removed; 1 would remove everything); "
            f"got {value}."
        )
    return float(value)


@dataclass(frozen=True)
class Plan:
    """What to remove: a fraction per prunable layer (or one global fraction), by one criterion."""

    granularity: Literal["weights", "neurons"] = "weights"
    criterion: str = "magnitude"
    scope: Literal["layer", "global"] = "layer"
    sparsity: Mapping[str, float] = field(default_factory=dict)
    amount: float = 0.0
    layers: tuple[str, ...] | None = None
    merge: bool = False

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise PlanError(
                f"granularity must be one of {', '.join(GRANULARITIES)}; "
                f"got {self.granularity!r}."
            )
        criterion(self.granularity, self.criterion)  # raises PlanError naming the choices
        if self.scope not in SCOPES:
            raise PlanError(f"scope must be one of {', '.join(SCOPES)}; got {self.scope!r}.")
        if not isinstance(self.sparsity, Mapping):
            raise PlanError("sparsity must map layer names to fractions removed.")
        clean = {str(k): _fraction(v, f"sparsity of layer '{k}'") for k, v in self.sparsity.items()}
        object.__setattr__(self, "sparsity", MappingProxyType(clean))
        object.__setattr__(self, "amount", _fraction(self.amount, "amount"))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(str(n) for n in self.layers))
        if not isinstance(self.merge, bool):
            raise PlanError(f"merge must be true or false; got {self.merge!r}.")
        if self.merge and (self.granularity, self.criterion) != ("neurons", "redundancy"):
            raise PlanError(
                "merge (fold each removed neuron into its most similar kept neuron) works "
                "only with granularity 'neurons' and criterion 'redundancy'; the plan has "
                f"granularity {self.granularity!r} and criterion {self.criterion!r}."
            )

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.to_dict() == other.to_dict()

    def with_sparsity(self, layer: str, fraction: float) -> Plan:
        """A copy with one layer's fraction changed (the other layers keep theirs)."""
        return replace(self, sparsity={**self.sparsity, layer: fraction})

    def fraction(self, layer: str) -> float:
        return self.sparsity.get(layer, 0.0)

    @property
    def removes_nothing(self) -> bool:
        """No fraction above zero (per layer) or a global amount of zero: the dense model."""
        if self.scope == "global":
            return self.amount == 0
        return not any(v > 0 for v in self.sparsity.values())

    def check(self, bundle: ModelBundle) -> None:
        """Raise :class:`PlanError` if the plan names layers the model does not have."""
        known = bundle.layer_names
        named = list(self.sparsity) if self.scope == "layer" else list(self.layers or [])
        unknown = [n for n in named if n not in known]
        if unknown:
            raise PlanError(
                f"The plan names layer(s) {', '.join(map(repr, unknown))} that "
                f"'{bundle.name}' does not have as prunable layers. "
                f"Its prunable layers are: {', '.join(known)}."
            )
        if self.granularity == "neurons" and self.scope == "layer":
            for name, frac in self.sparsity.items():
                layer = bundle.layer(name)
                if frac > 0 and not layer.neuron_prunable:
                    raise PlanError(
                        f"Neurons of layer '{name}' cannot be removed: {layer.neuron_reason}."
                    )
            for group in bundle.group_names:
                members = bundle.group(group)
                given = {la.name: self.sparsity[la.name] for la in members
                         if la.name in self.sparsity}
                if len(set(given.values())) > 1:
                    raise PlanError(
                        f"Layers {', '.join(la.name for la in members)} are coupled (their "
                        "channels are added together) and must lose the same neurons; the "
                        f"plan gives them different fractions: {given}."
                    )

    def to_dict(self) -> dict:
        out: dict = {
            "version": PLAN_VERSION,
            "granularity": self.granularity,
            "criterion": self.criterion,
            "scope": self.scope,
        }
        if self.scope == "layer":
            out["sparsity"] = {k: v for k, v in self.sparsity.items() if v > 0}
        else:
            out["amount"] = self.amount
            if self.layers is not None:
                out["layers"] = list(self.layers)
        if self.merge:
            out["merge"] = True
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: object) -> Plan:
        if not isinstance(data, Mapping):
            raise PlanError("A plan must be a JSON object; see the README for its fields.")
        version = data.get("version")
        if version != PLAN_VERSION:
            raise PlanError(
                f"Unsupported plan version {version!r}; this Pruning Explorer reads version "
                f"{PLAN_VERSION}."
            )
        known = {"version", "granularity", "criterion", "scope", "sparsity", "amount", "layers",
                 "merge"}
        extra = sorted(set(data) - known)
        if extra:
            raise PlanError(f"Unknown plan field(s): {', '.join(extra)}.")
        granularity = data.get("granularity", "weights")
        default_criterion = "magnitude" if granularity == "weights" else "l1"
        layers = data.get("layers")
        if layers is not None and not isinstance(layers, list):
            raise PlanError("layers must be a list of layer names.")
        return cls(
            granularity=granularity,
            criterion=data.get("criterion", default_criterion),
            scope=data.get("scope", "layer"),
            sparsity=data.get("sparsity", {}),
            amount=data.get("amount", 0.0),
            layers=tuple(layers) if layers is not None else None,
            merge=data.get("merge", False),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlanError(f"The plan is not valid JSON: {exc}.") from None
        return cls.from_dict(data)
