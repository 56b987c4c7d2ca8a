"""What pruning broke, and two plans side by side.

Accuracy is one number; pruning rarely costs every class alike. Comparing the masked
model's predictions with the dense model's on the same validation images shows *where*
the loss sits:

* per-class accuracy (recall: correct / images of the class) dense vs pruned;
* the confusion matrices (rows: true class, columns: predicted class) and their difference;
* the images whose prediction flipped, split into **broken** (dense right, pruned wrong),
  **fixed** (dense wrong, pruned right) and **changed** (both wrong, differently).
  Accuracy moves by (fixed - broken) / N: a small accuracy drop can hide many flips
  that cancel out (Hooker et al. 2019, "What do compressed deep neural networks forget?").

:func:`compare_plans` puts two plans next to each other: per layer, overall metrics and
per class. Everything here is computed from an :class:`~explorer.evaluator.Evaluator`'s
logits, so the overall accuracies equal :meth:`Evaluator.evaluate`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explorer.errors import DataError
from explorer.evaluator import Evaluator
from explorer.metrics import Metrics
from explorer.plan import Plan

FLIP_KINDS = ("broken", "fixed", "changed")


def predictions(evaluator: Evaluator, plan: Plan) -> torch.Tensor:
    """Predicted labels (N,) int64 of the model masked by ``plan`` on the evaluator's data.

    Uses the evaluator's incremental forward (it resumes from the last evaluated plan), so
    the labels are the argmax of the very logits :meth:`Evaluator.evaluate` scores.
    Raises :class:`DataError` for an evaluator without validation data.
    """
    return evaluator.logits(evaluator.masks(plan)).argmax(1)


def dense_predictions(evaluator: Evaluator) -> torch.Tensor:
    """Predicted labels (N,) of the unpruned model."""
    return predictions(evaluator, Plan())


@dataclass(frozen=True)
class Flip:
    """One validation image whose prediction changed: ``kind`` is broken, fixed or changed."""

    index: int
    label: int
    dense: int
    plan: int
    kind: str


@dataclass(frozen=True)
class Breakage:
    """Dense vs pruned predictions on one validation set, by class and by image.

    Arrays: ``support`` (C,) images per true class; ``correct_dense`` / ``correct_plan``
    (C,) correct predictions per class; ``confusion_dense`` / ``confusion_plan`` (C, C)
    counts, rows the true class, columns the predicted class. ``flips`` in index order.
    """

    num_classes: int
    samples: int
    support: np.ndarray
    correct_dense: np.ndarray
    correct_plan: np.ndarray
    confusion_dense: np.ndarray
    confusion_plan: np.ndarray
    flips: tuple[Flip, ...]

    @classmethod
    def from_predictions(
        cls,
        labels: torch.Tensor | np.ndarray,
        dense: torch.Tensor | np.ndarray,
        plan: torch.Tensor | np.ndarray,
        num_classes: int,
    ) -> Breakage:
        """From true ``labels``, dense and pruned predicted labels, each (N,) in
        [0, num_classes)."""
        y, d, p = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (labels, dense, plan))
        if not len(y) == len(d) == len(p):
            raise DataError(
                f"labels ({len(y)}), dense predictions ({len(d)}) and pruned predictions "
                f"({len(p)}) must have the same length."
            )
        if len(y) == 0:
            raise DataError("There are no validation images to compare predictions on.")
        for name, v in (("labels", y), ("dense predictions", d), ("pruned predictions", p)):
            if v.min() < 0 or v.max() >= num_classes:
                raise DataError(
                    f"{name} must be class indices in 0..{num_classes - 1}; "
                    f"got values from {v.min()} to {v.max()}."
                )
        flips = []
        for i in np.flatnonzero(d != p):
            kind = "broken" if d[i] == y[i] else "fixed" if p[i] == y[i] else "changed"
            flips.append(Flip(int(i), int(y[i]), int(d[i]), int(p[i]), kind))
        return cls(
            num_classes=num_classes,
            samples=len(y),
            support=np.bincount(y, minlength=num_classes),
            correct_dense=np.bincount(y[d == y], minlength=num_classes),
            correct_plan=np.bincount(y[p == y], minlength=num_classes),
            confusion_dense=_confusion(y, d, num_classes),
            confusion_plan=_confusion(y, p, num_classes),
            flips=tuple(flips),
        )

    @property
    def classes(self) -> list[int]:
        return list(range(self.num_classes))

    @property
    def accuracy_dense(self) -> float:
        return int(self.correct_dense.sum()) / self.samples

    @property
    def accuracy_plan(self) -> float:
        return int(self.correct_plan.sum()) / self.samples

    @property
    def class_accuracy_dense(self) -> np.ndarray:
        """(C,) correct / support per class; NaN for a class with no validation image."""
        return _ratio(self.correct_dense, self.support)

    @property
    def class_accuracy_plan(self) -> np.ndarray:
        return _ratio(self.correct_plan, self.support)

    @property
    def class_accuracy_change(self) -> np.ndarray:
        """(C,) pruned minus dense per-class accuracy (NaN where a class has no image)."""
        return self.class_accuracy_plan - self.class_accuracy_dense

    @property
    def confusion_change(self) -> np.ndarray:
        """(C, C) pruned minus dense confusion counts; every row sums to zero."""
        return self.confusion_plan - self.confusion_dense

    def flipped(self, kind: str | None = None) -> list[Flip]:
        """The flips of ``kind`` (broken, fixed, changed), or all of them."""
        if kind is not None and kind not in FLIP_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FLIP_KINDS)}; got {kind!r}.")
        return [f for f in self.flips if kind is None or f.kind == kind]

    def counts(self) -> dict[str, int]:
        """Number of flips of each kind."""
        return {kind: len(self.flipped(kind)) for kind in FLIP_KINDS}

    def to_dict(self) -> dict:
        """JSON-ready: per class rows, both confusion matrices and their change, the flips."""
        dense, plan = self.class_accuracy_dense, self.class_accuracy_plan
        return {
            "samples": self.samples,
            "accuracy_dense": self.accuracy_dense,
            "accuracy_plan": self.accuracy_plan,
            "classes": [
                {"class": c, "support": int(self.support[c]),
                 "accuracy_dense": _number(dense[c]), "accuracy_plan": _number(plan[c]),
                 "change": _number(plan[c] - dense[c])}
                for c in self.classes
            ],
            "confusion_dense": self.confusion_dense.tolist(),
            "confusion_plan": self.confusion_plan.tolist(),
            "confusion_change": self.confusion_change.tolist(),
            "flip_counts": self.counts(),
            "flips": {kind: [{"index": f.index, "label": f.label, "dense": f.dense,
                              "plan": f.plan} for f in self.flipped(kind)]
                      for kind in FLIP_KINDS},
        }


def breakage(evaluator: Evaluator, plan: Plan) -> Breakage:
    """What ``plan`` changes in the predictions of the evaluator's model on its data.

    Raises :class:`DataError` when the evaluator has no validation data (an
    architecture-only model): there are no predictions to compare.
    """
    data = evaluator.data
    if data is None:
        raise DataError(
            f"'{evaluator.bundle.name}' has no validation data, so there are no predictions "
            "to compare: give a trained model with its data (the Model page's upload, or "
            "--data on the command line)."
        )
    if not data.labelled:
        raise DataError(f"{data.name} has no labels (x alone), so there are no classes to "
                        "break down by: give data with y (fidelity needs none: Prune page).")
    plan.check(evaluator.bundle)
    num_classes = max(evaluator.bundle.num_classes, data.num_classes)
    return Breakage.from_predictions(
        data.y, dense_predictions(evaluator), predictions(evaluator, plan), num_classes
    )


@dataclass(frozen=True)
class LayerComparison:
    """One prunable layer under plans a and b.

    ``sparsity_*`` is the measured fraction of the weight's entries that are zero (right for
    global plans too); FLOPs per sample, 2 per multiply-add.
    """

    layer: str
    kind: str
    params: int
    neurons: int
    sparsity_a: float
    sparsity_b: float
    nonzero_params_a: int
    nonzero_params_b: int
    neurons_kept_a: int
    neurons_kept_b: int
    flops_dense: int
    flops_a: int
    flops_b: int


@dataclass(frozen=True)
class PlanComparison:
    """Two plans side by side: per layer, overall metrics, per-class accuracy.

    ``class_accuracy_a`` / ``_b`` and ``support`` are None without validation data.
    """

    name_a: str
    name_b: str
    plan_a: Plan
    plan_b: Plan
    metrics_a: Metrics
    metrics_b: Metrics
    layers: tuple[LayerComparison, ...]
    support: np.ndarray | None
    class_accuracy_a: np.ndarray | None
    class_accuracy_b: np.ndarray | None

    def to_dict(self) -> dict:
        def summary(m: Metrics) -> dict:
            return {"accuracy": m.accuracy, "loss": m.loss, "flops": m.flops,
                    "size_bytes": m.size_bytes, "params": m.params,
                    "nonzero_params": m.nonzero_params,
                    "compression_ratio": m.compression_ratio, "speedup": m.speedup}

        classes = None
        if self.support is not None:
            classes = [{"class": c, "support": int(n),
                        "accuracy_a": _number(self.class_accuracy_a[c]),
                        "accuracy_b": _number(self.class_accuracy_b[c])}
                       for c, n in enumerate(self.support)]
        return {
            "a": {"name": self.name_a, "plan": self.plan_a.to_dict(),
                  "metrics": summary(self.metrics_a)},
            "b": {"name": self.name_b, "plan": self.plan_b.to_dict(),
                  "metrics": summary(self.metrics_b)},
            "layers": [vars(row).copy() for row in self.layers],
            "classes": classes,
        }


def compare_plans(
    evaluator: Evaluator, a: Plan, b: Plan, names: tuple[str, str] = ("A", "B")
) -> PlanComparison:
    """Plans ``a`` and ``b`` on the same model and data, side by side.

    Args:
        evaluator: holds the model and (optionally) the validation data.
        a, b: the two plans; each is checked against the model (:class:`PlanError`).
        names: labels for the two plans (e.g. the names a user pinned them under).

    Returns per-layer rows (measured sparsity, nonzero parameters, neurons kept, effective
    FLOPs of each), both plans' :class:`Metrics`, and per-class accuracy of each (None for
    an architecture-only model without data: costs are still compared).
    """
    for plan in (a, b):
        plan.check(evaluator.bundle)
    metrics_a, metrics_b = evaluator.evaluate(a), evaluator.evaluate(b)
    layers = tuple(
        LayerComparison(
            layer=la.name, kind=la.kind, params=la.params, neurons=la.neurons,
            sparsity_a=la.sparsity, sparsity_b=lb.sparsity,
            nonzero_params_a=la.nonzero_params, nonzero_params_b=lb.nonzero_params,
            neurons_kept_a=la.neurons_kept, neurons_kept_b=lb.neurons_kept,
            flops_dense=la.flops_dense, flops_a=la.flops_effective, flops_b=lb.flops_effective,
        )
        for la, lb in zip(metrics_a.layers, metrics_b.layers, strict=True)
    )
    support = accuracy_a = accuracy_b = None
    if evaluator.data is not None and evaluator.data.labelled:
        y = evaluator.data.y
        classes = max(evaluator.bundle.num_classes, evaluator.data.num_classes)
        pred_a, pred_b = predictions(evaluator, a), predictions(evaluator, b)
        ab = Breakage.from_predictions(y, pred_a, pred_b, classes)
        support, accuracy_a, accuracy_b = (
            ab.support, ab.class_accuracy_dense, ab.class_accuracy_plan)
    return PlanComparison(
        name_a=names[0], name_b=names[1], plan_a=a, plan_b=b, metrics_a=metrics_a,
        metrics_b=metrics_b, layers=layers, support=support, class_accuracy_a=accuracy_a,
        class_accuracy_b=accuracy_b,
    )


def _confusion(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts: row the true class, column the predicted class."""
    flat = np.bincount(y * num_classes + pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _number(value: float) -> float | None:
    """A float for JSON; NaN (a class without images) becomes None."""
    return None if np.isnan(value) else float(value)
