"""The pruning plan: what the user chose, as an immutable value with a versioned JSON form.

JSON (version 1)::

    {"version": 1, "granularity": "weights" | "neurons" | "heads", "criterion": "magnitude",
     "scope": "layer", "sparsity": {"features.0": 0.5, "classifier.1": 0.9}}

    {"version": 1, "granularity": "weights", "criterion": "magnitude",
     "scope": "global", "amount": 0.8, "layers": ["features.0", "features.2"]}

Sparsity is the fraction removed, in [0, 1). Layer names are module names from
``model.named_modules()``; layers not named keep everything. With ``scope: "global"`` one
fraction ``amount`` is removed across ``layers`` (default: every prunable layer) by one
threshold on the criterion's scores.

A ``heads`` plan removes whole attention heads (:class:`~explorer.groups.HeadGroup`): an attention's
query, key, value and output-projection layers share one fraction, the share of its heads
removed, as the layers of a coupled neuron group do.

A ``blocks`` plan drops whole transformer blocks (:class:`~explorer.groups.Block`): it is
global, ``amount`` being the share of the blocks (those named in ``layers``, by their module
or a layer inside them; default every block) dropped, lowest-scored first (a model whose every
block is dropped still runs: what is outside the blocks remains).

``"merge": true`` (neuron plans by ``redundancy`` only; omitted when false) folds each
removed neuron into its most similar kept neuron instead of dropping it (see
:mod:`explorer.masks`).

``"pattern": "N:M"`` (weights plans only; omitted when unstructured) is N:M semi-structured
sparsity, the pattern NVIDIA's sparse tensor cores accelerate for 2:4: in every group of M
consecutive weights along a layer's input dimension exactly N are kept (the N highest scores;
ties go to the lower index). For a linear layer the groups run along ``in_features``, as
``torch.sparse.to_sparse_semi_structured`` groups a 2-D weight's rows; for a convolution
(out, in, kh, kw) along the input channels at each kernel position, as NVIDIA's ASP library
lays a convolution out (KRSC, channels innermost). So a layer takes the pattern only if its
input channels (per convolution group) are a multiple of M; padding would add fake weights
that no hardware format stores, so a layer that does not fit is refused, never padded.
The pattern fixes every fraction at ``1 - N/M``:

* ``scope: "layer"``: the pattern applies to the layers named in ``sparsity``; each fraction
  given must be that fraction (0.5 for 2:4) or 0 (the layer stays dense);
* ``scope: "global"``: it applies to every layer in ``layers``; without ``layers``, to every
  prunable layer whose input fits (others, such as a first convolution on one input
  channel, stay dense, as ASP skips them). ``amount`` may be left out; if given, it must be
  that fraction.

A fraction or layer that does not fit is one :class:`PlanError`, never silently changed.

A plan file is untrusted input: :meth:`Plan.from_bytes` is the one way in for bytes from
anywhere (its checks are in :mod:`explorer.plan_file`). The constructor checks what a plan
built in Python must satisfy, and :meth:`Plan.check` what it must satisfy for one model;
every message names at most a few offending items.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

from explorer.errors import PlanError, name_some, short
from explorer.limits import MAX_NAMED_IN_MESSAGE, MAX_PLAN_LAYERS
from explorer.plan_file import (
    FRACTION_RULE,
    GRANULARITIES,
    PLAN_VERSION,
    SCOPES,
    parse_plan_bytes,
    plan_fields,
)

if TYPE_CHECKING:
    from explorer.bundle import ModelBundle
    from explorer.graph import Layer

__all__ = [
    "CRITERIA",
    "DEFAULT_CRITERION",
    "GRANULARITIES",
    "PLAN_VERSION",
    "SCOPES",
    "Plan",
    "criterion_names",
    "default_criterion",
]

# The criteria a plan may name, per granularity, in the order pages and sweeps list them
# (:mod:`explorer.criteria` registers one scorer under each; a test holds the two equal).
CRITERIA: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "weights": ("magnitude", "wanda", "taylor", "random"),
    "neurons": ("l1", "l2", "activation", "apoz", "redundancy", "taylor", "random"),
    "heads": ("l1", "taylor", "random"),
    "blocks": ("influence", "random"),
})
# What a plan, the CLI and the pages use when no criterion is named.
DEFAULT_CRITERION: Mapping[str, str] = MappingProxyType(
    {"weights": "magnitude", "neurons": "l1", "heads": "l1", "blocks": "influence"})


def criterion_names(granularity: str) -> tuple[str, ...]:
    """The criteria for ``granularity`` (raises :class:`PlanError` for an unknown one)."""
    if granularity not in CRITERIA:
        raise PlanError(f"granularity must be one of {', '.join(GRANULARITIES)}; "
                        f"got {short(granularity)}.")
    return CRITERIA[granularity]


def dense_plan(granularity: str) -> Plan:
    """The plan of ``granularity`` (by its default criterion) that removes nothing."""
    return Plan(granularity=granularity, criterion=default_criterion(granularity),
                scope="global" if granularity == "blocks" else "layer")


def default_criterion(granularity: str) -> str:
    """The criterion used for ``granularity`` when none is named."""
    criterion_names(granularity)
    return DEFAULT_CRITERION[granularity]


# Why fractions per layer cannot take blocks (a layer's curves, a suggestion).
WHOLE_BLOCKS = ("a block is dropped whole, not by a fraction per layer: judge blocks plans "
                "with evaluate (global, amount = the share of blocks dropped), compare "
                "criteria on one global threshold, or sensitivity (each block dropped alone)")

# Why the layers of one unit must share a fraction, per granularity that couples layers.
COUPLED = {
    "neurons": "are coupled (their channels are added together) and must lose the same "
               "neurons",
    "heads": "are one attention's query, key, value and output and lose the same heads",
}

PATTERN_RULE = "an N:M pattern such as '2:4' (N kept of every M, 0 < N < M <= 16)"
MAX_PATTERN_M = 16
_PATTERN = re.compile(r"([1-9][0-9]?):([1-9][0-9]?)")


def parse_pattern(pattern: object) -> tuple[int, int]:
    """(N, M) of an N:M pattern written ``"N:M"``; raises :class:`PlanError` otherwise."""
    match = _PATTERN.fullmatch(pattern) if isinstance(pattern, str) else None
    if match is None:
        raise PlanError(f"pattern must be {PATTERN_RULE}; got {short(pattern)}.")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m <= MAX_PATTERN_M:
        raise PlanError(f"pattern must be {PATTERN_RULE}; got {short(pattern)}.")
    return n, m


def pattern_fits(layer: Layer, m: int) -> bool:
    """Whether ``layer``'s input dimension (per convolution group) splits into groups of M."""
    return layer.weight_shape[1] % m == 0


def _fraction(value: object, what: str) -> float:
    """``value`` as a float in [0, 1) (NaN and infinities fail the range test)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PlanError(f"{what} must be {FRACTION_RULE}; got {short(value)}.")
    try:
        fraction = float(value)
    except OverflowError:  # an int too large for a float
        fraction = float("inf")
    if not 0.0 <= fraction < 1.0:
        raise PlanError(f"{what} must be {FRACTION_RULE}; got {short(value)}.")
    return fraction


def _names(names: object, what: str) -> tuple[str, ...]:
    """``names`` as a tuple of layer names, at most :data:`MAX_PLAN_LAYERS` of them."""
    if isinstance(names, (str, bytes)) or not hasattr(names, "__len__"):
        raise PlanError(f"{what} must be a list of layer names; got {short(names)}.")
    if len(names) > MAX_PLAN_LAYERS:
        raise PlanError(f"{what} names {len(names):,} layers; a plan may name at most "
                        f"{MAX_PLAN_LAYERS:,}.")
    return tuple(str(n) for n in names)


@dataclass(frozen=True)
class Plan:
    """What to remove: a fraction per prunable layer (or one global fraction), by one criterion."""

    granularity: Literal["weights", "neurons", "heads", "blocks"] = "weights"
    criterion: str = "magnitude"
    scope: Literal["layer", "global"] = "layer"
    sparsity: Mapping[str, float] = field(default_factory=dict)
    amount: float = 0.0
    layers: tuple[str, ...] | None = None
    merge: bool = False
    pattern: str | None = None
    # The plan's identity: its JSON form, compact with sorted keys, computed once. Equality,
    # hashing and every cache keyed by a plan use it (a slider move builds one plan, not
    # several JSON strings).
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_choices()
        if not isinstance(self.sparsity, Mapping):
            raise PlanError("sparsity must map layer names to fractions removed.")
        names = _names(self.sparsity, "sparsity")
        clean = {n: _fraction(v, f"sparsity of layer {short(n)}")
                 for n, v in zip(names, self.sparsity.values(), strict=True)}
        object.__setattr__(self, "sparsity", MappingProxyType(clean))
        object.__setattr__(self, "amount", _fraction(self.amount, "amount"))
        if self.layers is not None:
            object.__setattr__(self, "layers", _names(self.layers, "layers"))
            if self.scope == "global" and not self.layers:
                raise PlanError("A global plan's layers must name at least one layer (None: "
                                "every prunable layer).")
        if self.pattern is not None:
            self._fit_pattern()
        object.__setattr__(self, "key", json.dumps(self.to_dict(), sort_keys=True,
                                                   separators=(",", ":")))

    def _check_choices(self) -> None:
        """Granularity, criterion, scope and merge are among the known choices."""
        if self.granularity not in GRANULARITIES:
            raise PlanError(
                f"granularity must be one of {', '.join(GRANULARITIES)}; "
                f"got {short(self.granularity)}."
            )
        if not isinstance(self.criterion, str):
            raise PlanError(f"criterion must be a criterion name; got {short(self.criterion)}.")
        names = CRITERIA[self.granularity]
        if self.criterion not in names:
            raise PlanError(f"No criterion {short(self.criterion)} for {self.granularity}; "
                            f"choose one of: {', '.join(names)}.")
        if self.scope not in SCOPES:
            raise PlanError(f"scope must be one of {', '.join(SCOPES)}; got {short(self.scope)}.")
        if self.granularity == "blocks" and self.scope != "global":
            raise PlanError("A blocks plan is global: a block is dropped whole, so give the "
                            "share of blocks dropped as amount (and the candidates as layers).")
        if not isinstance(self.merge, bool):
            raise PlanError(f"merge must be true or false; got {short(self.merge)}.")
        if self.merge and (self.granularity, self.criterion) != ("neurons", "redundancy"):
            raise PlanError(
                "merge (fold each removed neuron into its most similar kept neuron) works "
                "only with granularity 'neurons' and criterion 'redundancy'; the plan has "
                f"granularity {self.granularity!r} and criterion {self.criterion!r}."
            )

    def _fit_pattern(self) -> None:
        """Fractions fixed by the pattern: each given one must be the pattern's (or 0)."""
        if self.granularity != "weights":
            raise PlanError(f"pattern {self.pattern} (N:M sparsity) applies to granularity "
                            f"'weights' only; the plan has granularity {self.granularity!r}.")
        if self.merge:
            raise PlanError("merge and pattern do not go together; merge is for neurons.")
        fraction = self.pattern_fraction
        rule = (f"pattern {self.pattern} removes exactly {fraction:g} of each layer it "
                "applies to")
        if self.scope == "global":
            if self.amount == 0:  # left out: the pattern gives it
                object.__setattr__(self, "amount", fraction)
            elif not math.isclose(self.amount, fraction):
                raise PlanError(f"{rule}; amount is {self.amount:g} (give {fraction:g} or "
                                "leave amount out).")
            return
        wrong = [n for n, v in self.sparsity.items() if v > 0 and not math.isclose(v, fraction)]
        if wrong:
            raise PlanError(f"{rule}; the sparsity of {name_some(wrong)} is not (give "
                            f"{fraction:g}, or 0 to keep a layer dense).")
        object.__setattr__(self, "sparsity", MappingProxyType(
            {n: fraction if v > 0 else 0.0 for n, v in self.sparsity.items()}))

    @property
    def nm(self) -> tuple[int, int] | None:
        """(N, M) of the plan's pattern, or None for an unstructured plan."""
        return None if self.pattern is None else parse_pattern(self.pattern)

    @property
    def pattern_fraction(self) -> float:
        """The fraction an N:M pattern removes from each layer it covers, 1 - N/M."""
        n, m = parse_pattern(self.pattern)
        return (m - n) / m

    def pattern_layers(self, bundle: ModelBundle) -> tuple[str, ...]:
        """The layers the plan's pattern applies to (see the module docstring); call
        :meth:`check` first so that every named layer fits."""
        if self.scope == "layer":
            return tuple(n for n, v in self.sparsity.items() if v > 0)
        if self.layers is not None:
            return self.layers
        _, m = parse_pattern(self.pattern)
        return tuple(la.name for la in bundle.layers if pattern_fits(la, m))

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.key == other.key

    def with_sparsity(self, layer: str, fraction: float) -> Plan:
        """A copy with one layer's fraction changed (the other layers keep theirs)."""
        return replace(self, sparsity={**self.sparsity, layer: fraction})

    def with_choices(self, bundle: ModelBundle, granularity: str, criterion: str,
                     scope: str, merge: bool, pattern: str | None = None) -> Plan:
        """The plan after the user picks another granularity, criterion, scope or merge.

        Each layer the new granularity may prune keeps its fraction (the layers of a coupled
        group take their largest, as they must lose the same neurons); a criterion the
        granularity does not have becomes its default; merge stays only where it applies
        (neurons by redundancy). The global amount and layers are kept for a switch back.
        A ``pattern`` (weights only) covers the layers that had a fraction and fit it, or,
        where none had, every layer that fits; a global plan takes the pattern's amount.
        ``blocks`` is global whatever ``scope`` says (a block is dropped whole).
        """
        if criterion not in criterion_names(granularity):
            criterion = DEFAULT_CRITERION[granularity]
        if pattern is not None and granularity == "weights":
            return self._with_pattern(bundle, criterion, scope, pattern)
        if granularity == "blocks":  # global only; the amount carries over
            return Plan(granularity="blocks", criterion=criterion, scope="global",
                        amount=self.amount)
        sparsity = {}
        for layers in bundle.units(granularity).values():
            fraction = max(self.fraction(name) for name in layers)
            sparsity.update(dict.fromkeys(layers, fraction))
        return Plan(granularity=granularity, criterion=criterion, scope=scope,
                    sparsity=sparsity, amount=self.amount, layers=self.layers,
                    merge=merge and (granularity, criterion) == ("neurons", "redundancy"))

    def _with_pattern(self, bundle: ModelBundle, criterion: str, scope: str,
                      pattern: str) -> Plan:
        _, m = parse_pattern(pattern)
        fits = [la.name for la in bundle.layers if pattern_fits(la, m)]
        if scope == "global":
            layers = None if self.layers is None else tuple(n for n in self.layers if n in fits)
            return Plan(criterion=criterion, scope="global", layers=layers or None,
                        pattern=pattern)
        chosen = [n for n in fits if self.fraction(n) > 0] or fits
        fraction = Plan(pattern=pattern).pattern_fraction
        return Plan(criterion=criterion, sparsity=dict.fromkeys(chosen, fraction),
                    amount=self.amount, layers=self.layers, pattern=pattern)

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
        if self.granularity == "blocks":
            known = [*known, *(b.name for b in bundle.blocks)]
        named = list(self.sparsity) if self.scope == "layer" else list(self.layers or [])
        unknown = [n for n in named if n not in known]
        if unknown:
            raise PlanError(
                f"The plan names layer(s) {name_some(unknown)} that {short(bundle.name)} does "
                f"not have as prunable layers. Its prunable layers are: {name_some(known)}"
                + (" (the Model page and `pruning-explorer layers` list them all)."
                   if len(known) > MAX_NAMED_IN_MESSAGE else ".")
            )
        if self.pattern is not None:
            self._check_pattern(bundle)
        if self.granularity == "blocks" and not bundle.blocks:
            raise PlanError(f"{short(bundle.name)} has no transformer blocks to drop (blocks "
                            "are found in transformers loaded with their Python definition, "
                            "such as minilm).")
        if self.granularity == "heads" and not bundle.heads:
            raise PlanError(f"{short(bundle.name)} has no attention heads (heads are found in "
                            "transformers loaded with their Python definition, such as "
                            "minilm); prune its weights or neurons instead.")
        if self.granularity == "neurons" and self.scope == "layer":
            for name, frac in self.sparsity.items():
                layer = bundle.layer(name)
                if frac > 0 and not layer.neuron_prunable:
                    raise PlanError(
                        f"Neurons of layer '{name}' cannot be removed: {layer.neuron_reason}."
                    )
        if self.granularity == "heads" and self.scope == "layer":
            for name, frac in self.sparsity.items():
                if frac > 0 and bundle.head_group_of(name) is None:
                    raise PlanError(f"Layer '{name}' has no attention heads: it is not a "
                                    "query, key, value or output projection of an attention.")
        if self.granularity in COUPLED and self.scope == "layer":
            self._check_coupled(bundle)

    def _check_coupled(self, bundle: ModelBundle) -> None:
        """The layers of one unit (a coupled neuron group, an attention) share a fraction."""
        for members in bundle.units(self.granularity).values():
            given = {n: self.sparsity[n] for n in members if n in self.sparsity}
            if len(set(given.values())) > 1:
                shown = ", ".join(members[:MAX_NAMED_IN_MESSAGE])
                raise PlanError(f"Layers {shown} {COUPLED[self.granularity]}; the plan gives "
                                f"them different fractions: {short(given)}.")

    def _check_pattern(self, bundle: ModelBundle) -> None:
        """Every layer the pattern applies to splits into groups of M along its input."""
        n, m = parse_pattern(self.pattern)
        layers = self.pattern_layers(bundle)
        misfits = [name for name in layers if not pattern_fits(bundle.layer(name), m)]
        if misfits:
            first = bundle.layer(misfits[0])
            raise PlanError(
                f"Layer(s) {name_some(misfits)} cannot take pattern {self.pattern}: the "
                f"weights of {misfits[0]!r} have {first.weight_shape[1]} inputs per row (per "
                f"kernel position), not a multiple of {m}; leave them out of the plan.")
        if self.scope == "global" and not layers:
            raise PlanError(f"No prunable layer of {short(bundle.name)} has inputs in groups "
                            f"of {m}, so pattern {self.pattern} cannot apply to any.")

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
        if self.pattern is not None:
            out["pattern"] = self.pattern
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Plan:
        """The plan in a plan file's content (bytes as read from a file or an upload); raises
        :class:`PlanError` with one short message for anything outside the contract."""
        return cls.from_dict(parse_plan_bytes(data))

    @classmethod
    def from_dict(cls, data: object) -> Plan:
        """The plan in parsed plan JSON, checked as strictly as a file
        (:mod:`explorer.plan_file`); no criterion means the granularity's default."""
        fields = plan_fields(data)
        if fields.get("criterion") is None:
            fields["criterion"] = DEFAULT_CRITERION.get(fields.get("granularity"), "magnitude")
        return cls(**fields)

    @classmethod
    def from_json(cls, text: str | bytes) -> Plan:
        """The plan in JSON text or bytes (:meth:`from_bytes`)."""
        return cls.from_bytes(text)
