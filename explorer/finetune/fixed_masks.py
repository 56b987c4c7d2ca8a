"""Fine-tuning a pruned model with its masks held fixed: pruned weights stay exactly zero.

Pruning after training costs accuracy; a few epochs of retraining of the weights that are
left win most of it back (Han et al. 2015, "Learning both Weights and Connections for
Efficient Neural Networks", arXiv:1506.02626). Here the masks a plan gives
(:func:`explorer.masks.masks_for`) are frozen: training starts from the masked (and, for
merge plans, merged) values, the gradient of every removed entry is zeroed before each
optimizer step and the mask is applied again after it, so Adam's momentum cannot revive a
removed weight. Iterative pruning (prune a step, fine-tune, repeat) is in
:mod:`explorer.finetune.iterative`. How to train — epochs, learning rate, iterative steps and their
schedule, threads — is one value, :class:`FinetuneSettings`, that checks itself once and
that the CLI, the app and the JSON report share. A run reports each epoch and is stopped in
the engine's one shape (:mod:`explorer.progress`).

The shared ``bundle.model`` is never written: training runs on a deep copy. The recipe is
the demo zoo's (:mod:`explorer.load.train_demos`): Adam, batches of 64, a cosine learning-rate decay
over the run; a fixed seed gives a fixed batch order, so a rerun on the same torch build
and thread count reproduces the same weights. The result becomes a new
:class:`~explorer.bundle.ModelBundle` (same architecture, zeros in place) that the app
explores and exports like any other, and a file that ``pruning-explorer evaluate --model``
loads (:func:`save_model`).
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from explorer.bundle import ModelBundle, load_into_graph
from explorer.data import ValidationSet, digits_train
from explorer.errors import DataError, ExplorerError, ModelError, short
from explorer.evaluator import torch_threads
from explorer.graph import Program, logits_of
from explorer.limits import MAX_FINETUNE_EPOCHS, MAX_ITERATIVE_STEPS
from explorer.load.data_file import check_compatible, require_digits_input
from explorer.load.files import first_line
from explorer.masks import Masks, ScoreCache, masks_for
from explorer.metrics import score_logits
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress, stop_now, tick

SEED = 0
BATCH = 64
THREADS = 1  # tiny models: one thread is as fast, reproducible, and fair to a busy machine
DEFAULT_LR = 1e-3
OVERLAP_LIMIT = 0.01  # share of validation samples allowed to appear in the training data
SCHEDULES = ("cubic", "linear")  # of iterative pruning's sparsity (explorer.finetune.iterative)


@dataclass(frozen=True)
class FinetuneSettings:
    """How a plan is fine-tuned: ``epochs`` (per step when iterative, at most
    :data:`MAX_FINETUNE_EPOCHS`), Adam's learning rate ``lr``, ``steps`` (None: fine-tune the
    plan once; else prune to it in that many rounds, at most :data:`MAX_ITERATIVE_STEPS`)
    following ``schedule`` (cubic or linear), and torch's intra-op ``threads`` for the run
    (None: as they are). Checked when made: a value that exists is a valid one."""

    epochs: int
    lr: float = DEFAULT_LR
    steps: int | None = None
    schedule: str = "cubic"
    threads: int | None = THREADS

    def __post_init__(self) -> None:
        bounded_count(self.epochs, "epochs", MAX_FINETUNE_EPOCHS)
        if self.steps is not None:
            bounded_count(self.steps, "steps", MAX_ITERATIVE_STEPS)
        lr = self.lr
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr)
                                        and lr > 0):
            raise ExplorerError(f"the learning rate must be a positive number; got {lr!r}.")
        check_schedule(self.schedule)

    @property
    def iterative(self) -> bool:
        return self.steps is not None

    def to_dict(self) -> dict:
        """JSON-ready, as the CLI's report and the model card give them (``schedule`` None
        for one fine-tuning; threads are how the run is computed, not what it is)."""
        return {"epochs_per_run": self.epochs, "lr": self.lr, "iterative_steps": self.steps,
                "schedule": self.schedule if self.iterative else None}


@dataclass(frozen=True)
class Finetuning:
    """What one fine-tuning run works on: ``bundle``'s model pruned by ``plan``, trained on
    ``train`` (N, *input_shape) and measured after each epoch on ``val`` (None: no
    accuracy), with ``settings``. ``statistics``: buffers to start from instead of the
    model's (the plan's recalibrated BatchNorm statistics, as its metrics were judged; see
    :meth:`explorer.evaluator.Evaluator.bn_statistics`; one fine-tuning, not an iterative
    run, whose steps re-mask as they go). The data are checked when the run starts
    (:func:`check_inputs`)."""

    bundle: ModelBundle
    plan: Plan
    train: ValidationSet
    val: ValidationSet | None
    settings: FinetuneSettings
    statistics: Mapping[str, torch.Tensor] | None = None  # recalibrated BatchNorm buffers


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's figures: ``epoch`` of ``total`` counted over the whole run (every step
    of an iterative run), the mean training cross-entropy over its batches, and the
    validation accuracy and loss after it. ``step`` is the iterative step (0: one plan)."""

    epoch: int
    total: int
    train_loss: float
    val_accuracy: float
    val_loss: float
    step: int = 0


@dataclass(frozen=True)
class StepRecord:
    """One step of iterative pruning: the share of the final plan's sparsity it reached,
    the fraction of the prunable weights removed, and the validation accuracy right after
    pruning and after fine-tuning."""

    step: int
    share: float
    removed: float
    pruned_accuracy: float
    finetuned_accuracy: float


@dataclass
class FinetuneResult:
    """A fine-tuned copy of the model (eval mode, removed entries exactly zero), the masks
    it was trained under (without merge updates: the trained values are final), every
    epoch's figures, the iterative steps (empty for one plan), and whether it was cancelled
    (the model is then as trained so far, masks applied)."""

    model: nn.Module
    masks: Masks
    epochs: list[EpochRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)
    cancelled: bool = False
    seconds: float = 0.0


def finetune(run: Finetuning, progress: Progress | None = None,
             cancelled: Cancelled | None = None,
             scores: ScoreCache | None = None) -> FinetuneResult:
    """Train a copy of ``run.bundle``'s model pruned by ``run.plan`` for
    ``run.settings.epochs`` epochs with the plan's masks fixed. ``progress(epoch, epochs,
    record)`` gets each epoch's :class:`EpochRecord`; ``cancelled()`` is checked between
    batches. ``scores`` (a cache on the bundle) reuses importance scores.
    ``settings.threads`` sets torch's intra-op threads of the calling thread for the run;
    ``settings.steps`` is not used here (see :func:`explorer.finetune.retrain.retrain`)."""
    start = time.monotonic()
    bundle, train, val, settings = run.bundle, run.train, run.val, run.settings
    check_inputs(bundle, train, val)
    masks = masks_for(bundle, run.plan, scores or ScoreCache(bundle, val))
    model = trainable_copy(bundle)
    apply_masks(model, masks, with_updates=True)
    load_buffers(model, run.statistics)
    records: list[EpochRecord] = []
    with torch_threads(settings.threads):
        stopped = train_masked(model, masks, train, val, settings.epochs, settings.lr,
                               records, progress=progress, cancelled=cancelled)
    return FinetuneResult(model.eval(), fixed(masks), records, [], stopped,
                          time.monotonic() - start)


def bounded_count(value: object, what: str, maximum: int) -> int:
    """``value`` if it is a whole number in [1, ``maximum``]; else an :class:`ExplorerError`
    (the CLI's argument parser and the engine say the same)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ExplorerError(f"{what} must be a whole number from 1 to {maximum:,} (a bound "
                            f"on one job); got {short(value)}.")
    return value


def check_schedule(kind: object) -> str:
    """``kind`` if it is one of :data:`SCHEDULES`; else an :class:`ExplorerError`."""
    if kind not in SCHEDULES:
        raise ExplorerError(f"schedule must be one of {', '.join(SCHEDULES)}; got {kind!r}.")
    return kind


def check_inputs(bundle: ModelBundle, train: ValidationSet, val: ValidationSet | None) -> None:
    """Raise a clear error unless there is validation data, the training data fit the
    model and the two do not share samples (the settings check themselves:
    :class:`FinetuneSettings`)."""
    if val is None:
        raise DataError(
            f"'{bundle.name}' has no validation data: fine-tuning needs data to train on and "
            "to measure the accuracy it wins back. Load a trained model with its data."
        )
    unlabelled = [d.name for d in (train, val) if not d.labelled]
    if unlabelled:
        raise DataError(f"{' and '.join(unlabelled)} has no labels (x alone): fine-tuning "
                        "trains on labels and measures accuracy; give data with y.")
    check_compatible(bundle, train)
    shared = overlap(train, val)
    if shared > max(0, OVERLAP_LIMIT * len(val)):
        raise DataError(
            f"{shared} of the {len(val)} validation samples are also in the training data "
            f"'{train.name}': training on them would make the validation accuracy "
            "meaningless. Give training data disjoint from the validation set."
        )


def default_training_data(bundle: ModelBundle) -> ValidationSet:
    """The digits training split (never the validation images), for a model taking digits."""
    require_digits_input(bundle, "training data")
    return digits_train()


def overlap(train: ValidationSet, val: ValidationSet) -> int:
    """How many validation samples appear (bit for bit) among the training inputs."""
    if tuple(train.x.shape[1:]) != tuple(val.x.shape[1:]):
        return 0
    seen = {row.tobytes() for row in train.x.flatten(1).numpy()}
    return sum(row.tobytes() in seen for row in val.x.flatten(1).numpy())


def trainable_copy(bundle: ModelBundle) -> nn.Module:
    """A private deep copy of the model whose parameters take gradients; a ModelError if
    the model cannot be trained (no parameters, or no backward pass through its graph)."""
    model = _copy(bundle.model)
    params = [p for p in model.parameters() if p.is_floating_point()]
    if not params:
        raise ModelError(f"'{bundle.name}' has no trainable parameters: nothing to fine-tune.")
    for p in params:
        p.requires_grad_(True)
    try:  # in eval mode: a probe must not move BatchNorm's running statistics
        model.eval()
        logits_of(model(torch.zeros((2, *bundle.input_shape)))).float().sum().backward()
    except Exception as exc:  # whatever the user's graph raises
        raise ModelError(
            f"'{bundle.name}' cannot be trained here ({first_line(exc)}): fine-tuning needs "
            "a backward pass through the model. Load it as a state_dict of a demo "
            "architecture or a torch.export program of a trainable model."
        ) from None
    finally:
        model.zero_grad(set_to_none=True)
    return model


def _copy(module: nn.Module) -> nn.Module:
    """A deep copy; an exported graph's copy warns about torch internals, not the user's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(module)


def apply_masks(model: nn.Module, masks: Masks, with_updates: bool = False) -> None:
    """Write the masked values into ``model`` (a private copy), in place."""
    params = dict(model.named_parameters())
    names = {**masks.masks, **(masks.updates if with_updates else {})}
    with torch.no_grad():
        for name in names:
            value = masks.updates.get(name, params[name]) if with_updates else params[name]
            if name in masks.masks:
                value = value * masks.masks[name]
            params[name].copy_(value)


def load_buffers(model: nn.Module, buffers: Mapping[str, torch.Tensor] | None) -> None:
    """Write ``buffers`` (by name) into ``model`` (a private copy), in place."""
    with torch.no_grad():
        for name, value in (buffers or {}).items():
            model.get_buffer(name).copy_(value)


def fixed(masks: Masks) -> Masks:
    """The masks without merge updates: after training, the model's values are final."""
    return replace(masks, updates={}) if masks.updates else masks


def train_masked(
    model: nn.Module,
    masks: Masks,
    train: ValidationSet,
    val: ValidationSet,
    epochs: int,
    lr: float,
    records: list[EpochRecord],
    total: int | None = None,
    step: int = 0,
    progress: Progress | None = None,
    cancelled: Cancelled | None = None,
) -> bool:
    """Train ``model`` in place for ``epochs`` epochs with ``masks`` fixed; append one
    :class:`EpochRecord` per epoch to ``records`` and report it as
    ``progress(epoch, total, record)``. Returns True if cancelled."""
    params = dict(model.named_parameters())
    keep = [(params[name], mask.to(params[name].dtype)) for name, mask in masks.masks.items()]
    opt = torch.optim.Adam([p for p in params.values() if p.requires_grad], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    order = torch.Generator().manual_seed(SEED + step)
    total = total or epochs
    for _ in range(epochs):
        model.train()
        losses = []
        for idx in torch.randperm(len(train), generator=order).split(BATCH):
            if stop_now(cancelled):
                model.eval()
                return True
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(logits_of(model(train.x[idx])), train.y[idx])
            loss.backward()
            with torch.no_grad():
                for p, mask in keep:
                    if p.grad is not None:
                        p.grad.mul_(mask)
                opt.step()
                for p, mask in keep:
                    p.mul_(mask)
            losses.append(float(loss.detach()))
        sched.step()
        mean = sum(losses) / len(losses)
        if not math.isfinite(mean):
            raise ModelError(
                "Fine-tuning diverged (the training loss became NaN or infinite); "
                f"lower the learning rate (it is {lr:g})."
            )
        acc, val_loss = accuracy(model, val)
        record = EpochRecord(len(records) + 1, total, mean, acc, val_loss, step)
        records.append(record)
        tick(progress, record.epoch, record.total, record)
    return False


def accuracy(model: nn.Module, data: ValidationSet) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on ``data``, in eval mode."""
    model.eval()
    with torch.no_grad():
        correct, loss = score_logits(logits_of(model(data.x)), data.y)
    return correct / len(data), loss


def bundle_at(bundle: ModelBundle, model: nn.Module, name: str | None = None,
              card: dict | None = None, source: str | None = None) -> ModelBundle:
    """``bundle`` with ``model``'s weights: same architecture, layers, groups and FLOPs.

    The exported graph is copied and given ``model``'s ``state_dict`` (a model known only
    as its graph is that graph itself), so nothing is traced or analysed again.
    """
    model.eval()
    if bundle.model is bundle.program.module:
        module = model
    else:
        module = _copy(bundle.program.module)
        load_into_graph(module, model.state_dict())  # the graph's block gates stay
    for pname, p in module.named_parameters():
        if not torch.isfinite(p).all():
            raise ModelError(f"Parameter '{pname}' became NaN or infinite in training; "
                             "lower the learning rate.")
    return replace(bundle, model=model, program=Program(module),
                   name=name or bundle.name, card=dict(card if card is not None else bundle.card),
                   source=source or bundle.source)
