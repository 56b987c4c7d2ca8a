"""Decisions chosen on one part of the validation data and reported on the other.

A plan picked because it scores best on some images scores optimistically on those same
images: the choice has fitted their noise (on a few hundred images, one image is 0.3
points). Sensitivity scans, suggested plans and Pareto fronts therefore *choose* on the
calibration part of a :func:`~explorer.data.split_for_decisions` split and *report* the
held-out part, which no choice has seen; a page or the CLI shows both.

Importance scores are computed on the calibration part too (the activation and Taylor
criteria read data; Taylor reads labels), so nothing from a held-out image enters a choice.
Sizes and FLOPs do not depend on data and are the same on both parts.

Memory: the two parts together are one copy of the validation set, and the two evaluators
share one evaluator's budget for cached activations (each part holds about half the images).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch

from explorer.bundle import ModelBundle
from explorer.data import DECISION_FRACTION, DecisionSplit, ValidationSet, split_for_decisions
from explorer.evaluator import Evaluator, default_memory_budget
from explorer.masks import ScoreCache
from explorer.metrics import Metrics
from explorer.plan import Plan

JUDGED_KEPT = 1024  # plans remembered (a session's history holds at most 500)


class SplitMetrics(NamedTuple):
    """One plan's metrics on the calibration part (where it was chosen) and the held-out
    part (what is reported)."""

    calibration: Metrics
    held_out: Metrics

    def to_dict(self) -> dict:
        return {"calibration": self.calibration.to_dict(), "held_out": self.held_out.to_dict()}


class SplitEvaluator:
    """Two evaluators over one model: ``calibration`` to choose, ``held_out`` to report.

    Without data (an architecture-only model) there is nothing to split: ``split`` is None
    and both evaluators give costs only (accuracy None).

    Args:
        bundle: the model.
        data: the validation set to split (or None).
        fraction: the share of each class in the calibration part.
        seed: None for the file-order rule, else the seed of the order within each class.
        scores: a score cache computed on the calibration part (default: a new one).
        memory_budget: bytes of node values both parts keep, together (default: the
            evaluator's default).
        device: where both parts are evaluated (default: CUDA where available).
        bn_calibration: images to re-estimate BatchNorm statistics on for each pruned plan
            (never validation images; see :mod:`explorer.batchnorm`); None: raw statistics.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        data: ValidationSet | None,
        fraction: float = DECISION_FRACTION,
        seed: int | None = None,
        scores: ScoreCache | None = None,
        memory_budget: int | None = None,
        device: str | torch.device | None = None,
        bn_calibration: ValidationSet | None = None,
    ) -> None:
        split = None if data is None else split_for_decisions(data, fraction, seed)
        self._start(bundle, split, scores, memory_budget, device, bn_calibration)

    @classmethod
    def on_split(
        cls, bundle: ModelBundle, split: DecisionSplit | None, scores: ScoreCache | None = None
    ) -> SplitEvaluator:
        """A split evaluator over a split made beforehand (its parts used as they are)."""
        judge = cls.__new__(cls)
        judge._start(bundle, split, scores)
        return judge

    @classmethod
    def of_parts(cls, calibration: Evaluator, held_out: Evaluator,
                 split: DecisionSplit | None) -> SplitEvaluator:
        """A split evaluator over two evaluators built elsewhere (one model, one score
        cache: a cluster worker's copy, :mod:`explorer.decide.cluster`)."""
        judge = cls.__new__(cls)
        judge.bundle, judge.split, judge.scores = calibration.bundle, split, calibration.scores
        judge.calibration, judge.held_out = calibration, held_out
        judge._judged = OrderedDict()
        return judge

    def _start(self, bundle: ModelBundle, split: DecisionSplit | None,
               scores: ScoreCache | None, memory_budget: int | None = None,
               device: str | torch.device | None = None,
               bn_calibration: ValidationSet | None = None) -> None:
        """Both parts' evaluators, each with half of ``memory_budget`` (default: the
        evaluator's default)."""
        self.bundle, self.split = bundle, split
        calibration = None if split is None else split.calibration
        self.scores = scores or ScoreCache(bundle, calibration)
        budget = (default_memory_budget() if memory_budget is None else memory_budget) // 2
        self.calibration = Evaluator(bundle, calibration, self.scores, budget, device=device,
                                     bn_calibration=bn_calibration)
        self.held_out = Evaluator(bundle, None if split is None else split.held_out,
                                  self.scores, budget, device=device,
                                  bn_calibration=bn_calibration)
        self._judged: OrderedDict[str, SplitMetrics] = OrderedDict()

    def evaluate(self, plan: Plan) -> SplitMetrics:
        """``plan`` measured on both parts (remembered: a front over many plans is cheap)."""
        key = plan.key
        if key not in self._judged:
            self._judged[key] = SplitMetrics(self.calibration.evaluate(plan),
                                             self.held_out.evaluate(plan))
            while len(self._judged) > JUDGED_KEPT:
                self._judged.popitem(last=False)
        self._judged.move_to_end(key)
        return self._judged[key]

    def estimate(self, plan: Plan) -> SplitMetrics:
        """``plan`` screened on each part's stratified subset (each part's ``samples`` says
        how many images; exact where a part has no estimate phase)."""
        return SplitMetrics(self.calibration.estimate(plan), self.held_out.estimate(plan))

    @property
    def refines(self) -> bool:
        """Whether either part answers in two steps (an estimate, then every image)."""
        return self.calibration.refines or self.held_out.refines

    def dense(self) -> SplitMetrics:
        return self.evaluate(Plan())

    def report(self, plan: Plan) -> dict:
        """:func:`split_report` of ``plan``: both parts' accuracy, for a JSON report."""
        return split_report(self.split, self.evaluate(plan), self.dense())


def split_report(split: DecisionSplit | None, judged: SplitMetrics, dense: SplitMetrics) -> dict:
    """The ``split`` (rule, fraction, seed), ``calibration`` and ``held_out`` blocks of a JSON
    report: per part the samples, the plan's accuracy with its 95% interval, the dense
    model's accuracy and which images (positions in the source set). Empty without data."""
    if split is None:
        return {}
    parts = {"calibration": split.calibration, "held_out": split.held_out}
    about = {k: v for k, v in split.to_dict().items() if not k.endswith("_indices")}
    return {"split": about, **{part: _block(getattr(judged, part), getattr(dense, part),
                                            data.indices.tolist())
                               for part, data in parts.items()}}


def _block(metrics: Metrics, dense: Metrics, indices: list[int]) -> dict:
    return {"samples": metrics.samples, "accuracy": metrics.accuracy,
            "accuracy_ci": None if metrics.accuracy_ci is None else list(metrics.accuracy_ci),
            "dense_accuracy": dense.accuracy, "indices": indices}
