"""The lessons' experiments: each one call into the real engine on a demo model.

Every run takes a :class:`Context` (how to get a model, the validation data) and its checked
parameters, and returns an :class:`~explorer.lessons.outcome.Outcome`. The numbers are the
engine's own: :class:`~explorer.evaluator.Evaluator` for accuracy, size and FLOPs,
:func:`~explorer.decide.sensitivity.sensitivity`,
:func:`~explorer.decide.compare_criteria.layer_curves`,
:func:`~explorer.decide.targets.fit_fraction` for the trade-off baselines,
:func:`~explorer.finetune.retrain.retrain` and :func:`~explorer.finetune.lottery.lottery`.
The runs are small on purpose (the digits demos, 360 validation images, a few epochs), so
a lesson answers in seconds. Which run a lesson file names, with which parameters, is the
registry's business (:mod:`explorer.lessons.registry`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from explorer.batchnorm import calibration_for
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet, digits_train
from explorer.decide.compare_criteria import layer_curves
from explorer.decide.sensitivity import sensitivity
from explorer.decide.targets import Target, fit_fraction, uniform_plan
from explorer.decide.tradeoff import baseline_families
from explorer.errors import ExplorerError
from explorer.evaluator import Evaluator, full_forward_logits
from explorer.finetune.fixed_masks import FinetuneSettings, Finetuning
from explorer.finetune.lottery import LotterySettings, lottery
from explorer.finetune.retrain import retrain
from explorer.lessons.outcome import Answer, Chart, Column, Outcome, Series, percent, points
from explorer.look.stats import weight_histogram
from explorer.metrics import Metrics
from explorer.plan import Plan

Params = Mapping[str, object]
HISTOGRAM_BINS = 60
TIMING_RUNS = 5  # forward passes timed per plan; the median is shown

ACCURACY = Column("accuracy", "%")
PLAN = Column("plan")


@dataclass(frozen=True)
class Context:
    """What a run may use: ``bundle_of(name)``, a demo model (the app passes its shared
    cache), and ``data``, the validation set every accuracy is measured on."""

    bundle_of: Callable[[str], ModelBundle]
    data: ValidationSet

    def evaluator(self, model: str) -> Evaluator:
        """An evaluator judging as the app does by default (a BatchNorm model recalibrated
        on the digits training split), so a lesson's numbers are the full page's."""
        bundle = self.bundle_of(model)
        calibration, _ = calibration_for(bundle, None, validation_is_digits=True)
        return Evaluator(bundle, self.data, bn_calibration=calibration)


def _bars(title: str, names: list[str], metrics: list[Metrics]) -> Chart:
    return Chart("bar", title, "", "accuracy (%)", (Series(
        "accuracy", tuple(names), tuple(m.accuracy * 100 for m in metrics),
        tuple((m.accuracy_ci[0] * 100, m.accuracy_ci[1] * 100) for m in metrics)),))


def removed_share(m: Metrics) -> float:
    """The fraction of all parameters (weights and biases) that ``m``'s plan zeroes."""
    return 1 - m.nonzero_params / m.params


def stored_bytes(m: Metrics) -> int:
    """The smallest of the storage formats the engine sizes (dense, bitmask, csr, shrunk)."""
    return min(m.size_bytes.values())


def weights_vs_neurons(ctx: Context, p: Params) -> Outcome:
    """The same fraction of every prunable layer's weights (magnitude) or neurons (l1)."""
    evaluator, fraction = ctx.evaluator(p["model"]), p["fraction"]
    bundle = evaluator.bundle
    plans = {"weights": uniform_plan(bundle, "weights", "magnitude", fraction),
             "neurons": uniform_plan(bundle, "neurons", "l1", fraction)}
    dense = evaluator.evaluate(Plan())
    m = {k: evaluator.evaluate(plan) for k, plan in plans.items()}
    table = tuple({"plan": name, "accuracy": x.accuracy, "parameters removed": removed_share(x),
                   "FLOPs per sample": x.flops["effective"], "stored size": stored_bytes(x)}
                  for name, x in (("dense", dense), *m.items()))
    facts = {"dense_accuracy": percent(dense.accuracy), "fraction": f"{fraction:.0%}"}
    for k, x in m.items():
        facts |= {f"{k}_accuracy": percent(x.accuracy), f"{k}_removed": percent(removed_share(x)),
                  f"{k}_speedup": f"{x.speedup:.2f}x"}
    return Outcome(
        p["model"], (PLAN, ACCURACY, Column("parameters removed", "%"),
                     Column("FLOPs per sample", "count"), Column("stored size", "bytes")),
        table, _bars(f"{fraction:.0%} of every layer removed", ["dense", *m],
                     [dense, *m.values()]),
        Answer("highest", {k: x.accuracy for k, x in m.items()}, unit="%"), facts,
        plans["weights"], "Prune", m["weights"].accuracy)


def magnitude_threshold(ctx: Context, p: Params) -> Outcome:
    """One layer's smallest weights removed: the |w| histogram, the threshold, the cost."""
    evaluator, layer, fraction = ctx.evaluator(p["model"]), p["layer"], p["fraction"]
    bundle = evaluator.bundle
    plan = Plan(sparsity={layer: fraction})
    dense, pruned = evaluator.evaluate(Plan()), evaluator.evaluate(plan)
    name = bundle.layer(layer).weight
    w = bundle.params()[name].detach().abs()
    removed = w[~evaluator.masks(plan).masks[name]]
    threshold = float(removed.max()) if removed.numel() else 0.0
    hist = weight_histogram(bundle, layer, HISTOGRAM_BINS)
    centers = (hist.edges[:-1] + hist.edges[1:]) / 2
    drop = dense.accuracy - pruned.accuracy
    facts = {"layer": layer, "fraction": f"{fraction:.0%}", "dense_accuracy": percent(
        dense.accuracy), "accuracy": percent(pruned.accuracy), "drop": points(drop),
        "threshold": f"{threshold:.4f}", "largest": f"{float(w.max()):.4f}",
        "threshold_share": f"{threshold / float(w.max()):.0%}",
        "removed_mass": f"{float(removed.sum()) / float(w.sum()):.0%}"}
    chart = Chart("bar", f"|w| of {layer}: {hist.total:,} weights", "|w|", "weights",
                  (Series("weights", tuple(centers.tolist()), tuple(hist.counts.tolist())),),
                  marker=threshold, marker_label=f"threshold {threshold:.4f}")
    table = ({"plan": "dense", "accuracy": dense.accuracy, "threshold": 0.0},
             {"plan": f"{layer} {fraction:.0%} by magnitude", "accuracy": pruned.accuracy,
              "threshold": threshold})
    return Outcome(p["model"], (PLAN, ACCURACY, Column("threshold", "number")), table, chart,
                   Answer("nearest", measured=drop * 100, unit="points"), facts, plan, "Weights",
                   pruned.accuracy)


def layer_sensitivity(ctx: Context, p: Params) -> Outcome:
    """Each layer pruned alone (magnitude) over a grid, against one fraction for all."""
    evaluator, fraction = ctx.evaluator(p["model"]), p["fraction"]
    grid = tuple(sorted({0.0, *p["grid"], fraction}))
    scan = sensitivity(evaluator, "weights", "magnitude", grid)
    at = {u.unit: u.accuracy[grid.index(fraction)] for u in scan.units}
    uniform = uniform_plan(evaluator.bundle, "weights", "magnitude", fraction)
    both = evaluator.evaluate(uniform)
    worst, best = min(at, key=at.get), max(at, key=at.get)
    params = {la.name: math.prod(la.weight_shape) for la in evaluator.bundle.layers}
    table = (*({"plan": f"{u} alone", "accuracy": a, "weights": params[u]} for u, a in at.items()),
             {"plan": "every layer (uniform)", "accuracy": both.accuracy,
              "weights": sum(params.values())})
    facts = {"fraction": f"{fraction:.0%}", "dense_accuracy": percent(scan.units[0].accuracy[0]),
             "most_sensitive": worst, "most_sensitive_accuracy": percent(at[worst]),
             "least_sensitive": best, "least_sensitive_accuracy": percent(at[best]),
             "uniform_accuracy": percent(both.accuracy)}
    chart = Chart("line", "each layer pruned alone", "removed (%)", "accuracy (%)", tuple(
        Series(u.unit, tuple(f * 100 for f in grid), tuple(a * 100 for a in u.accuracy))
        for u in scan.units), marker=fraction * 100, marker_label=f"{fraction:.0%}")
    return Outcome(p["model"], (PLAN, ACCURACY, Column("weights", "count")), table, chart,
                   Answer("lowest", at, unit="%"), facts, uniform, "Sensitivity", both.accuracy)


def criteria(ctx: Context, p: Params) -> Outcome:
    """Every criterion of a granularity on one layer over a grid; random is the control."""
    evaluator, layer, fraction = ctx.evaluator(p["model"]), p["layer"], p["fraction"]
    granularity = p["granularity"]
    grid = sorted({0.0, *p["grid"], fraction})
    curves = layer_curves(evaluator, granularity, layer, grid)
    if curves.errors:
        raise ExplorerError(next(iter(curves.errors.values())))
    at = {name: pts[grid.index(fraction)] for name, pts in curves.items()}
    best = max(at, key=lambda name: at[name].accuracy)
    control = at["random"].accuracy
    beat = [name for name, pt in at.items() if name != "random" and pt.accuracy > control]
    table = tuple({"plan": name, "accuracy": pt.accuracy,
                   "95% interval": "[{:.1f}-{:.1f}]".format(*(v * 100 for v in pt.accuracy_ci))}
                  for name, pt in at.items())
    plan = Plan(granularity=granularity, criterion=best,
                sparsity=dict.fromkeys(evaluator.bundle.linked(layer, granularity), fraction))
    facts = {"layer": layer, "fraction": f"{fraction:.0%}", "best": best,
             "best_accuracy": percent(at[best].accuracy), "random_accuracy": percent(control),
             "beat_random": (f"{len(beat)} of the {len(at) - 1} criteria ({', '.join(beat)})"
                             if beat else f"none of the {len(at) - 1} criteria"),
             "dense_accuracy": percent(curves[best][0].accuracy)}  # the grid starts at 0
    chart = Chart("line", f"{granularity} of {layer} removed", "removed (%)", "accuracy (%)",
                  tuple(Series(name, tuple(x.fraction * 100 for x in pts),
                               tuple(x.accuracy * 100 for x in pts))
                        for name, pts in curves.items()),
                  marker=fraction * 100, marker_label=f"{fraction:.0%}")
    return Outcome(p["model"], (PLAN, ACCURACY, Column("95% interval")), table, chart,
                   Answer("highest", {k: v.accuracy for k, v in at.items()}, unit="%"), facts,
                   plan, "Prune", at[best].accuracy)


def prune_then_finetune(ctx: Context, p: Params) -> Outcome:
    """One plan three ways: pruned only, fine-tuned once, reached iteratively (same epochs)."""
    evaluator, fraction = ctx.evaluator(p["model"]), p["fraction"]
    bundle, steps, epochs = evaluator.bundle, p["steps"], p["epochs_per_step"]
    plan = uniform_plan(bundle, "weights", "magnitude", fraction)
    train = digits_train()
    once = retrain(Finetuning(bundle, plan, train, ctx.data, FinetuneSettings(steps * epochs)))
    gradual = retrain(Finetuning(bundle, plan, train, ctx.data,
                                 FinetuneSettings(epochs, steps=steps, schedule="cubic")))
    m = {"none": evaluator.evaluate(plan), "once": once.metrics, "iterative": gradual.metrics}
    labels = {"none": "pruned, not retrained", "once": f"pruned, then {steps * epochs} epochs",
              "iterative": f"{steps} steps x {epochs} epochs (cubic)"}
    table = tuple({"plan": labels[k], "accuracy": x.accuracy} for k, x in m.items())
    facts = {"fraction": f"{fraction:.0%}", "epochs": str(steps * epochs), "steps": str(steps),
             "epochs_per_step": str(epochs), "dense_accuracy": percent(
                 evaluator.evaluate(Plan()).accuracy),
             **{f"{k}_accuracy": percent(x.accuracy) for k, x in m.items()}}
    return Outcome(p["model"], (PLAN, ACCURACY), table,
                   _bars(f"{fraction:.0%} of every layer's weights removed", list(labels.values()),
                         list(m.values())),
                   Answer("highest", {k: x.accuracy for k, x in m.items()}, unit="%"), facts,
                   plan, "Fine-tune", m["none"].accuracy)


def forward_ms(evaluator: Evaluator, plan: Plan) -> float:
    """The median wall time (ms) of one forward pass over the validation set under ``plan``
    (masked weights, dense kernels: what pruning without sparse kernels runs)."""
    masks, x = evaluator.masks(plan), evaluator.data.x
    runs = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        with torch.no_grad():
            full_forward_logits(evaluator.bundle, masks, x)
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


def tradeoff(ctx: Context, p: Params) -> Outcome:
    """The baselines (uniform, global magnitude, random) fitted to compression ratios."""
    evaluator, ratio = ctx.evaluator(p["model"]), p["ratio"]
    ratios = sorted({*p["ratios"], ratio})
    families = baseline_families(evaluator.bundle, "weights")
    curves: dict[str, dict[float, tuple[Plan, Metrics]]] = {}
    for name, family in families.items():
        curves[name] = {}
        for r in ratios:
            plan = family(fit_fraction(evaluator, family, Target("size", r)))
            curves[name][r] = plan, evaluator.evaluate(plan)
    at = {name: c[ratio][1] for name, c in curves.items()}
    best = max(at, key=lambda name: at[name].accuracy)
    dense_ms = forward_ms(evaluator, Plan())
    ms = {name: forward_ms(evaluator, c[ratio][0]) for name, c in curves.items()}
    table = tuple({"plan": name, "accuracy": m.accuracy, "95% interval": "[{:.1f}-{:.1f}]".format(
        *(v * 100 for v in m.accuracy_ci)), "compression": m.compression_ratio,
        "FLOPs speed-up": m.speedup, "measured time": ms[name]} for name, m in at.items())
    runner_up = max((n for n in at if n != best), key=lambda n: at[n].accuracy)
    apart = at[runner_up].accuracy_ci[1] < at[best].accuracy_ci[0]
    facts = {"ratio": f"{ratio:g}x", "best": best, "runner_up": runner_up,
             **{f"{n.replace(' ', '_')}_accuracy": percent(m.accuracy) for n, m in at.items()},
             **{f"{n.replace(' ', '_')}_speedup": f"{m.speedup:.2f}x" for n, m in at.items()},
             "intervals": ("do not overlap: the data separate them" if apart else
                           "overlap: these images alone cannot separate them"),
             "dense_ms": f"{dense_ms:.1f} ms",
             "best_ms": f"{ms[best]:.1f} ms", "samples": f"{len(ctx.data):,}"}
    chart = Chart("line", "baselines at each compression ratio", "compression (x)",
                  "accuracy (%)", tuple(Series(
                      name, tuple(c), tuple(m.accuracy * 100 for _, m in c.values()),
                      tuple((m.accuracy_ci[0] * 100, m.accuracy_ci[1] * 100)
                            for _, m in c.values())) for name, c in curves.items()),
                  marker=ratio, marker_label=f"{ratio:g}x", log_x=True)
    columns = (PLAN, ACCURACY, Column("95% interval"), Column("compression", "x"),
               Column("FLOPs speed-up", "x"), Column("measured time", "ms"))
    return Outcome(p["model"], columns, table, chart,
                   Answer("highest", {k: m.accuracy for k, m in at.items()}, unit="%"), facts,
                   curves[best][ratio][0], "Trade-offs", at[best].accuracy)


def lottery_tickets(ctx: Context, p: Params) -> Outcome:
    """The lottery-ticket lab: tickets (rewound to theta_0) vs the same masks reinitialised."""
    rounds, rate = p["rounds"], p["rate"]
    lab = lottery(p["model"], LotterySettings(rounds, rate, p["epochs"]))
    last = lab.rounds[-1]
    evaluator = ctx.evaluator(p["model"])
    plan = uniform_plan(evaluator.bundle, "weights", "magnitude", 1 - (1 - rate) ** rounds)
    pruned = evaluator.evaluate(plan)
    table = tuple({"round": str(r.round), "kept": r.kept, "ticket": r.ticket_accuracy,
                   "reinit": r.reinit_accuracy} for r in lab.rounds)
    facts = {"kept": percent(last.kept), "ticket_accuracy": percent(last.ticket_accuracy),
             "reinit_accuracy": percent(last.reinit_accuracy), "rounds": str(rounds),
             "rate": f"{rate:.0%}", "epochs": str(lab.epochs),
             "dense_ticket": percent(lab.rounds[0].ticket_accuracy),
             "dense_reinit": percent(lab.rounds[0].reinit_accuracy),
             "pruned_accuracy": percent(pruned.accuracy)}
    kept = tuple(r.kept * 100 for r in lab.rounds)
    chart = Chart("line", "trained from theta_0 (ticket) or a fresh draw (reinit)",
                  "weights kept (%)", "accuracy (%)", (
                      Series("ticket", kept, tuple(r.ticket_accuracy * 100 for r in lab.rounds)),
                      Series("reinit", kept, tuple(r.reinit_accuracy * 100 for r in lab.rounds))),
                  log_x=True)
    columns = (Column("round"), Column("kept", "%"), Column("ticket", "%"), Column("reinit", "%"))
    return Outcome(p["model"], columns, table, chart,
                   Answer("highest", {"ticket": last.ticket_accuracy,
                                      "reinit": last.reinit_accuracy}, unit="%"),
                   facts, plan, "Fine-tune", pruned.accuracy)
