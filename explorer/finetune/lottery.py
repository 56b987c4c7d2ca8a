"""The lottery-ticket lab: iterative magnitude pruning with rewinding to the initial weights.

Frankle & Carbin 2019 ("The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
Networks", arXiv:1803.03635) find, inside a dense network, sparse subnetworks that train
from the *original* initialisation to the dense network's accuracy — and the same masks
with a fresh random initialisation do worse. Their procedure, here on a demo model:

* round 0 trains the dense network from its initial weights theta_0 (the demo zoo's own:
  :func:`explorer.load.train_demos.initial_model`);
* round r >= 1 removes ``rate`` of the weights still kept in every prunable layer, the
  smallest by magnitude in the network trained in round r-1 (so each layer keeps
  ``(1 - rate) ** r`` of its weights, to the nearest weight, and a removed weight never
  comes back), rewinds the kept weights to theta_0 and trains again with the masks fixed;
* the control ("reinit") trains the same masks from another initialisation, drawn from a
  different fixed seed. Round 0's control is the dense network trained from that other
  initialisation: the same rule at every round, and it shows how much the accuracy moves
  with the initialisation alone — the yardstick for whether a ticket beats its control.

Every training is the fine-tuning recipe with the masks fixed
(:func:`explorer.finetune.fixed_masks.train_masked`: Adam at the zoo entry's learning rate,
batches of 64, a cosine decay, a fixed batch order), on the digits training split; accuracy
is measured on the validation split, never on training data. Unlike Frankle & Carbin, the
output layer is pruned at the same rate as the others, biases are never pruned, and the
masks come from the engine's per-layer magnitude rule (:func:`explorer.masks.masks_for`,
which removes what ``torch.nn.utils.prune.l1_unstructured`` would). One thread and fixed
seeds make a rerun give the same numbers on the same torch build. Progress and cancel come
in the engine's one shape (:mod:`explorer.progress`): one tick per finished round.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.data import ValidationSet, digits_train, digits_validation
from explorer.errors import ExplorerError, ModelError, short
from explorer.evaluator import torch_threads
from explorer.finetune.fixed_masks import (
    THREADS,
    accuracy,
    apply_masks,
    bounded_count,
    bundle_at,
    check_inputs,
    train_masked,
)
from explorer.limits import MAX_FINETUNE_EPOCHS, MAX_LOTTERY_ROUNDS
from explorer.load.train_demos import SEED, initial_model
from explorer.load.zoo import ZOO, ZooEntry
from explorer.masks import Masks, ScoreCache, masks_for
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress, tick

DEFAULT_RATE = 0.2  # Frankle & Carbin's per-round rate for fully connected layers
DEFAULT_EPOCHS = 20  # per training: digits-mlp, 5 rounds in ~15 s, 10 rounds in ~30 s, one core
CONTROL_SEED = SEED + 1  # the reinit control's initial weights: another fixed draw

State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LotterySettings:
    """How the lab runs: ``rounds`` of pruning after the dense round 0 (at most
    :data:`MAX_LOTTERY_ROUNDS`), the fraction ``rate`` of the kept weights each round removes
    (strictly between 0 and 1) and the ``epochs`` of every training. Checked when made."""

    rounds: int
    rate: float = DEFAULT_RATE
    epochs: int = DEFAULT_EPOCHS

    def __post_init__(self) -> None:
        bounded_count(self.rounds, "rounds", MAX_LOTTERY_ROUNDS)
        bounded_count(self.epochs, "epochs", MAX_FINETUNE_EPOCHS)
        check_rate(self.rate)


@dataclass(frozen=True, eq=False)
class LotteryRound:
    """One round: ``kept``, the fraction of the prunable weights kept, the validation accuracy
    of the ticket (theta_0, masked, trained) and of the control (the control's
    initialisation, same masks, trained); the keep-``masks`` by weight name (none in round
    0) and both trained networks' ``state_dict`` values (removed weights exactly zero)."""

    round: int
    kept: float
    ticket_accuracy: float
    reinit_accuracy: float
    masks: State
    ticket: State
    reinit: State

    def to_dict(self) -> dict:
        return {"round": self.round, "kept": self.kept,
                "ticket_accuracy": self.ticket_accuracy, "reinit_accuracy": self.reinit_accuracy}


@dataclass(frozen=True, eq=False)
class LotteryResult:
    """The lab's table (``rounds``, round 0 dense) and how it was made: the model, the rate,
    epochs per training, the seeds of theta_0 (``seed``) and of the control
    (``control_seed``), the sizes of the training and validation data, and whether it was
    cancelled (then ``rounds`` holds the rounds finished)."""

    model: str
    rate: float
    epochs: int
    seed: int
    control_seed: int
    train_size: int
    validation_size: int
    rounds: tuple[LotteryRound, ...] = field(default_factory=tuple)
    cancelled: bool = False

    def to_dict(self) -> dict:
        """JSON-ready: the settings and the table (no weights)."""
        return {"model": self.model, "rate": self.rate, "epochs": self.epochs,
                "seed": self.seed, "control_seed": self.control_seed,
                "train_size": self.train_size, "validation_size": self.validation_size,
                "cancelled": self.cancelled, "rounds": [r.to_dict() for r in self.rounds]}


def check_rate(rate: object) -> float:
    """``rate`` if it is a number strictly between 0 and 1; else an :class:`ExplorerError`."""
    if isinstance(rate, bool) or not (isinstance(rate, (int, float)) and 0 < rate < 1):
        raise ExplorerError(f"rate (the fraction of the kept weights each round removes) must "
                            f"be a number strictly between 0 and 1, e.g. 0.2; got {short(rate)}.")
    return float(rate)


def lottery_entry(name: str) -> ZooEntry:
    """The zoo entry ``name`` if the lab can run on it: a demo the zoo builds from its
    initial weights and that has training data (the digits demos); else a ModelError."""
    usable = [n for n, e in ZOO.items() if not e.architecture_only]
    entry = ZOO.get(name)
    if entry is None or entry.architecture_only:
        why = ("is architecture-only: there is no data to train it on"
               if entry is not None else "is not a demo model (an uploaded model has no "
               "initial weights to rewind to and no training data here)")
        raise ModelError(f"The lottery-ticket lab trains a demo model from its initial weights "
                         f"on the digits; {short(name)} {why}. Choose one of: "
                         f"{', '.join(usable)}.")
    return entry


def lottery(name: str, settings: LotterySettings, progress: Progress | None = None,
            cancelled: Cancelled | None = None) -> LotteryResult:
    """Run the lab on the demo model ``name`` (see the module docstring).

    ``progress(done, total, round)`` gets each finished :class:`LotteryRound` (``total`` is
    ``settings.rounds + 1``); ``cancelled()`` is checked between batches, and a cancelled
    run returns the rounds finished with ``cancelled=True``.
    """
    entry = lottery_entry(name)
    train, val = digits_train(), digits_validation()
    starts = initial_model(entry, SEED), initial_model(entry, CONTROL_SEED)
    bundle = bundle_from_module(initial_model(entry), name, entry.input_shape)
    check_inputs(bundle, train, val)
    rounds: list[LotteryRound] = []
    masks = Masks("weights", {}, {}, {})
    with torch_threads(THREADS):
        for r in range(settings.rounds + 1):
            if r:
                masks = _pruned(bundle, rounds[-1].ticket, masks, 1 - (1 - settings.rate) ** r)
            ticket = _trained(starts[0], masks, train, val, entry.lr, settings.epochs, cancelled)
            reinit = ticket and _trained(starts[1], masks, train, val, entry.lr,
                                         settings.epochs, cancelled)
            if reinit is None:
                break
            rounds.append(LotteryRound(r, _kept(masks), ticket[1], reinit[1],
                                       dict(masks.masks), ticket[0], reinit[0]))
            tick(progress, r + 1, settings.rounds + 1, rounds[-1])
    return LotteryResult(name, settings.rate, settings.epochs, SEED, CONTROL_SEED, len(train),
                         len(val), tuple(rounds), len(rounds) <= settings.rounds)


def _pruned(bundle: ModelBundle, trained: State, before: Masks, removed: float) -> Masks:
    """Masks removing the fraction ``removed`` of every prunable layer's weights, smallest by
    magnitude in ``trained`` (whose removed weights are zero, so they rank first), and
    everything ``before`` removed (nested even if a kept weight trained to exactly zero)."""
    model = copy.deepcopy(bundle.model)
    model.load_state_dict(trained)
    current = bundle_at(bundle, model)
    new = masks_for(current, Plan(sparsity=dict.fromkeys(bundle.layer_names, removed)),
                    ScoreCache(current))
    nested = {k: m & before.masks[k] if k in before.masks else m for k, m in new.masks.items()}
    return Masks("weights", nested, {k: ("lottery", removed, k) for k in nested},
                 {la.name: int((~nested[la.weight]).sum()) for la in bundle.layers})


def _trained(start: nn.Module, masks: Masks, train: ValidationSet, val: ValidationSet,
             lr: float, epochs: int, cancelled: Cancelled | None) -> tuple[State, float] | None:
    """``start``'s weights under ``masks``, trained with the masks fixed: (its values,
    validation accuracy); None if cancelled."""
    model = copy.deepcopy(start)
    apply_masks(model, masks)
    if train_masked(model, masks, train, val, epochs, lr, [], cancelled=cancelled):
        return None
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, accuracy(model, val)[0]


def _kept(masks: Masks) -> float:
    """The fraction of the masked weights that ``masks`` keep (1 with no masks: dense)."""
    if not masks.masks:
        return 1.0
    return (sum(int(m.sum()) for m in masks.masks.values())
            / sum(m.numel() for m in masks.masks.values()))
