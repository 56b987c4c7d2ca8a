"""The experiments a lesson file may name, with the parameters each takes, and their checks.

An :class:`Experiment` is a run (:mod:`explorer.lessons.runs`), its parameters (each a
:class:`Param` of a kind with a default, or required), the choice keys it can answer for
(:attr:`Experiment.keys`: layers, criteria, fixed words, or numbers), the facts its
feedback may quote, and the page its plan opens in. :func:`check_params` turns a lesson
file's raw values into checked parameters — every message names the parameter and what it
should be — and asks the experiment's own check (a layer the model lacks, a neuron layer
whose neurons cannot go, a training setting over the limits) without running anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from explorer.bundle import ModelBundle
from explorer.decide.tradeoff import baseline_families
from explorer.errors import ExplorerError, short
from explorer.finetune.fixed_masks import FinetuneSettings
from explorer.finetune.lottery import LotterySettings, lottery_entry
from explorer.lessons import runs
from explorer.lessons.outcome import Outcome
from explorer.lessons.runs import Context, Params
from explorer.load.zoo import ZOO
from explorer.plan import GRANULARITIES, Plan, criterion_names, default_criterion

REQUIRED = object()
MAX_GRID = 20  # values in a list parameter (fractions, ratios)
MAX_RATIO = 1000.0


@dataclass(frozen=True)
class Param:
    """One parameter: its ``kind`` (see :data:`KINDS`) and its default (``REQUIRED``: the
    lesson file must give it)."""

    kind: str
    default: object = REQUIRED


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: (isinstance(v, list) and 0 < len(v) <= MAX_GRID
                      and all(check(x) for x in v))


def _fraction(v: object) -> bool:
    return _number(v) and 0 <= v < 1


def _ratio(v: object) -> bool:
    return _number(v) and 1 < v <= MAX_RATIO


# kind: (test, what a good value is)
KINDS: Mapping[str, tuple[Callable[[object], bool], str]] = {
    "model": (lambda v: v in lesson_models(), "a demo model with data"),
    "layer": (lambda v: isinstance(v, str) and v != "", "a prunable layer's name"),
    "granularity": (lambda v: v in GRANULARITIES, " or ".join(GRANULARITIES)),
    "fraction": (_fraction, "a number in [0, 1), the fraction removed"),
    "fractions": (_numbers(_fraction), f"a list of 1 to {MAX_GRID} numbers in [0, 1)"),
    "count": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
              "a whole number of at least 1"),
    "rate": (lambda v: _number(v) and 0 < v < 1, "a number strictly between 0 and 1"),
    "ratio": (_ratio, f"a compression ratio above 1 and at most {MAX_RATIO:g}"),
    "ratios": (_numbers(_ratio), f"a list of 1 to {MAX_GRID} ratios above 1"),
}


def lesson_models() -> list[str]:
    """The demo models a lesson may use: those with validation data."""
    return [name for name, entry in ZOO.items() if not entry.architecture_only]


@dataclass(frozen=True)
class Experiment:
    """A run a lesson may name (see the module docstring). ``keys(bundle, params)``: the
    choice keys it answers for, None where the choices are numbers; ``check(bundle,
    params)`` raises an ExplorerError for parameters the run would refuse."""

    name: str
    summary: str
    run: Callable[[Context, Params], Outcome]
    params: Mapping[str, Param]
    keys: Callable[[ModelBundle, Params], tuple[str, ...] | None]
    facts: tuple[str, ...]
    page: str
    check: Callable[[ModelBundle, Params], None] = field(default=lambda bundle, p: None)

    def __call__(self, context: Context, params: Params) -> Outcome:
        """Run on ``params`` (checked); the outcome records how long it took."""
        start = time.perf_counter()
        outcome = self.run(context, params)
        return replace(outcome, seconds=time.perf_counter() - start)


def check_params(experiment: Experiment, raw: Mapping[str, object],
                 bundle_of: Callable[[str], ModelBundle]) -> dict[str, object]:
    """``raw`` checked against ``experiment``'s parameters, defaults filled in.

    Raises:
        ExplorerError: an unknown or missing parameter, a value of the wrong kind, or one
            the experiment's own check refuses (the message says which and why).
    """
    unknown = [k for k in raw if k not in experiment.params]
    if unknown:
        raise ExplorerError(f"experiment {experiment.name} has no parameter {short(unknown[0])}; "
                            f"its parameters are: {', '.join(experiment.params)}.")
    params: dict[str, object] = {}
    for name, param in experiment.params.items():
        value = raw.get(name, param.default)
        if value is REQUIRED:
            raise ExplorerError(f"experiment {experiment.name} needs the parameter {name} "
                                f"({KINDS[param.kind][1]}).")
        test, good = KINDS[param.kind]
        if not test(value):
            extra = f": {', '.join(lesson_models())}" if param.kind == "model" else ""
            raise ExplorerError(f"parameter {name} must be {good}{extra}; got {short(value)}.")
        params[name] = float(value) if param.kind in ("fraction", "rate", "ratio") else value
    experiment.check(bundle_of(params["model"]), params)
    return params


def _layer_plan(bundle: ModelBundle, p: Params, granularity: str = "weights") -> None:
    Plan(granularity=granularity, criterion=default_criterion(granularity),
         sparsity={p["layer"]: p["fraction"]}).check(bundle)


def _finetune_settings(bundle: ModelBundle, p: Params) -> None:
    FinetuneSettings(p["steps"] * p["epochs_per_step"])
    FinetuneSettings(p["epochs_per_step"], steps=p["steps"])


def _lottery_settings(bundle: ModelBundle, p: Params) -> None:
    lottery_entry(p["model"])
    LotterySettings(p["rounds"], p["rate"], p["epochs"])


MODEL = Param("model")
FRACTION = Param("fraction")
EXPERIMENTS: Mapping[str, Experiment] = {e.name: e for e in (
    Experiment(
        "weights_vs_neurons", "the same fraction of every layer's weights or neurons removed",
        runs.weights_vs_neurons, {"model": MODEL, "fraction": FRACTION},
        lambda b, p: ("weights", "neurons"),
        ("dense_accuracy", "fraction", "weights_accuracy", "weights_removed", "weights_speedup",
         "neurons_accuracy", "neurons_removed", "neurons_speedup"), "Prune"),
    Experiment(
        "magnitude_threshold", "one layer's smallest weights removed: histogram and threshold",
        runs.magnitude_threshold,
        {"model": MODEL, "layer": Param("layer"), "fraction": FRACTION}, lambda b, p: None,
        ("layer", "fraction", "dense_accuracy", "accuracy", "drop", "threshold", "largest",
         "threshold_share", "removed_mass"), "Weights", _layer_plan),
    Experiment(
        "sensitivity", "each layer pruned alone, against one fraction for every layer",
        runs.layer_sensitivity,
        {"model": MODEL, "fraction": FRACTION,
         "grid": Param("fractions", [0.5, 0.8, 0.9, 0.95])},
        lambda b, p: tuple(b.layer_names),
        ("fraction", "dense_accuracy", "most_sensitive", "most_sensitive_accuracy",
         "least_sensitive", "least_sensitive_accuracy", "uniform_accuracy"), "Sensitivity"),
    Experiment(
        "criteria", "every criterion on one layer; random is the control", runs.criteria,
        {"model": MODEL, "layer": Param("layer"), "fraction": FRACTION,
         "granularity": Param("granularity", "neurons"),
         "grid": Param("fractions", [0.25, 0.5, 0.75, 0.9])},
        lambda b, p: criterion_names(p["granularity"]),
        ("layer", "fraction", "best", "best_accuracy", "random_accuracy", "beat_random",
         "dense_accuracy"), "Prune", lambda b, p: _layer_plan(b, p, p["granularity"])),
    Experiment(
        "finetune", "pruned only, fine-tuned once, or pruned iteratively with fine-tuning",
        runs.prune_then_finetune,
        {"model": MODEL, "fraction": FRACTION, "steps": Param("count", 5),
         "epochs_per_step": Param("count", 4)},
        lambda b, p: ("none", "once", "iterative"),
        ("fraction", "epochs", "steps", "epochs_per_step", "dense_accuracy", "none_accuracy",
         "once_accuracy", "iterative_accuracy"), "Fine-tune", _finetune_settings),
    Experiment(
        "tradeoff", "the uniform, global and random baselines at each compression ratio",
        runs.tradeoff,
        {"model": MODEL, "ratio": Param("ratio"), "ratios": Param("ratios", [2, 4, 8, 16, 32])},
        lambda b, p: tuple(baseline_families(b, "weights")),
        ("ratio", "best", "runner_up", "uniform_accuracy", "global_magnitude_accuracy",
         "random_accuracy", "uniform_speedup", "global_magnitude_speedup", "random_speedup",
         "intervals", "dense_ms", "best_ms", "samples"),
        "Trade-offs"),
    Experiment(
        "lottery", "lottery tickets against the same masks from a fresh initialisation",
        runs.lottery_tickets,
        {"model": MODEL, "rounds": Param("count", 4), "rate": Param("rate", 0.5),
         "epochs": Param("count", 8)},
        lambda b, p: ("ticket", "reinit"),
        ("kept", "ticket_accuracy", "reinit_accuracy", "rounds", "rate", "epochs",
         "dense_ticket", "dense_reinit", "pruned_accuracy"), "Fine-tune", _lottery_settings),
)}
