"""Fine-tune a plan, once or iteratively, and make the result a model to explore.

:func:`retrain` is what the app's Fine-tune page and ``pruning-explorer finetune`` share:
it runs :func:`explorer.finetune.fixed_masks.finetune` (one plan, masks fixed) or
:func:`explorer.finetune.iterative.iterative_prune` (prune a step, fine-tune, repeat), then wraps
the fine-tuned weights in a new :class:`~explorer.bundle.ModelBundle` (same architecture,
removed entries exactly zero) and measures it with the engine's own evaluator. Which of the
two, and how, is one :class:`~explorer.finetune.fixed_masks.FinetuneSettings`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass

import torch
from torch import nn

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.finetune.fixed_masks import (
    FinetuneResult,
    FinetuneSettings,
    Finetuning,
    bundle_at,
    finetune,
)
from explorer.finetune.iterative import iterative_prune
from explorer.masks import Masks, ScoreCache
from explorer.metrics import Metrics, metrics_from, score_logits
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress


@dataclass
class Retrained:
    """A finished (or cancelled) run: the training record, the fine-tuned model as a bundle,
    its metrics on the validation set, and the settings it ran with."""

    result: FinetuneResult
    bundle: ModelBundle
    metrics: Metrics
    plan: Plan
    settings: FinetuneSettings

    def to_dict(self) -> dict:
        """JSON-ready: settings, every epoch and step, the final metrics."""
        return {
            "plan": self.plan.to_dict(), **self.settings.to_dict(),
            "cancelled": self.result.cancelled, "seconds": round(self.result.seconds, 3),
            "epochs": [asdict(e) for e in self.result.epochs],
            "steps": [asdict(s) for s in self.result.steps],
            "finetuned": self.metrics.to_dict(),
        }


def retrain(run: Finetuning, progress: Progress | None = None,
            cancelled: Cancelled | None = None, scores: ScoreCache | None = None) -> Retrained:
    """Fine-tune ``run.plan`` once (``settings.steps`` None) or prune to it in
    ``settings.steps`` rounds; see the two engines for the rest. ``scores`` (a cache on the
    bundle and ``run.val``) reuses the scores that already gave the plan's masks; iterative
    pruning scores each step's retrained weights afresh."""
    if run.settings.iterative:
        result = iterative_prune(run, progress=progress, cancelled=cancelled)
    else:
        result = finetune(run, progress=progress, cancelled=cancelled, scores=scores)
    new = finetuned_bundle(run.bundle, run.plan, result, run.settings)
    return Retrained(result, new, result_metrics(new, result.masks, run.val), run.plan,
                     run.settings)


def weights_digest(model: nn.Module) -> str:
    """A short hash of the model's ``state_dict`` values: names a fine-tuned model uniquely."""
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:8]


def finetuned_bundle(bundle: ModelBundle, plan: Plan, result: FinetuneResult,
                     settings: FinetuneSettings) -> ModelBundle:
    """The fine-tuned model as a bundle to explore, named after its origin and weights; its
    card says where it came from, the settings asked for and what was run (``epochs`` and
    ``iterative_steps`` done, fewer when cancelled)."""
    card = {**{k: v for k, v in bundle.card.items() if k != "validation_accuracy"},
            "finetuned_from": bundle.name, "plan": plan.to_dict(),
            "settings": settings.to_dict(), "epochs": len(result.epochs),
            "iterative_steps": len(result.steps), "cancelled": result.cancelled}
    name = f"{bundle.name} fine-tuned {weights_digest(result.model)}"
    return bundle_at(bundle, result.model, name=name, card=card, source="finetuned")


def result_metrics(bundle: ModelBundle, masks: Masks, val: ValidationSet) -> Metrics:
    """Metrics of a fine-tuned ``bundle`` under the masks it was trained with.

    Its removed entries are already zero, so the accuracy equals the dense plan's on the
    same bundle (what ``evaluate --model FILE`` reports); the masks add the structured size
    and kept-neuron counts of a neuron plan.
    """
    from explorer.evaluator import Evaluator

    evaluator = Evaluator(bundle, val)
    correct, loss = score_logits(evaluator.logits(masks), val.y)
    return metrics_from(evaluator.costs.costs(masks), correct, loss, len(val))


def plan_reproduces(run: Retrained, data: ValidationSet | None) -> bool:
    """Whether ``run.plan`` applied to the fine-tuned model removes exactly what was removed
    in training (true for magnitude and norm criteria, whose removed entries are now zero and
    rank lowest); then the app can keep showing the plan on the new model."""
    from explorer.errors import ExplorerError
    from explorer.evaluator import Evaluator

    try:
        again = Evaluator(run.bundle, data).masks(run.plan).masks
    except ExplorerError:
        return False
    trained = run.result.masks.masks
    return set(again) == set(trained) and all(
        torch.equal(again[name], trained[name]) for name in trained)
