"""BatchNorm recalibration: running statistics re-estimated for a pruned model.

Removing channels (or many weights) shifts the inputs of every BatchNorm after the change,
while its stored running mean and variance still describe the dense model's. Judged with
them, a pruned model looks far worse than it is after a trivial correction: Li et al. 2020
("EagleEye", arXiv:2007.02491) showed that this *adaptive BatchNorm* evaluation ranks pruned
candidates close to their accuracy after fine-tuning. :func:`recalibrated` re-estimates the
statistics exactly as ``torch.nn.BatchNorm2d`` does in training mode with ``momentum=None``
(a cumulative average of each batch's mean and unbiased variance) over a fixed calibration
set, with the plan's parameters swapped in:

* only the norms at or after the first changed parameter are re-estimated, and they run in
  training mode during the pass (normalising with the batch's statistics, as a model in
  ``train()`` does); a norm whose input did not change keeps its statistics, so the dense
  model is exactly the shipped one;
* nothing is written into the model: the statistics come back as tensors that override its
  buffers, each keyed by the changed parameters before its norm, so a later plan that
  changes only what comes after resumes from kept states as usual.

Calibration images are never the validation images an accuracy is measured on: the demos
use their training split; an upload, a calibration file its user gives (without one, its
numbers stay raw and the app and CLI say so).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import fx

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet, digits_train, stratified_subset
from explorer.graph import Program, RunState

aten = torch.ops.aten
# Measured on digits-resnet (bench/bn_recalibration.py): with 256 training images the
# recalibrated accuracy of neuron plans is within ~0.3 points of recalibrating on all 1,437,
# with 32 within ~3 points. A model too slow for 256 in a slider's first answer gets fewer
# (explorer.evaluator.calibration_size), never fewer than 32.
CALIBRATION_IMAGES = 256
MIN_CALIBRATION_IMAGES = 32
CALIBRATION_BATCH = 64


@dataclass(frozen=True)
class Norm:
    """A BatchNorm in the graph: its node's position and its running-statistics buffers."""

    node: int
    mean: str
    var: str


def norms_of(program: Program) -> tuple[Norm, ...]:
    """Every ``aten.batch_norm`` whose running statistics are buffers of the model."""
    found = []
    for i, node in enumerate(program.nodes):
        if node.op != "call_function" or node.target is not aten.batch_norm.default:
            continue
        mean, var = node.args[3], node.args[4]
        if all(isinstance(a, fx.Node) and a.op == "get_attr" for a in (mean, var)):
            found.append(Norm(i, mean.target, var.target))
    return tuple(found)


def calibration_for(
    bundle: ModelBundle,
    given: ValidationSet | None,
    validation_is_digits: bool,
    enabled: bool = True,
) -> tuple[ValidationSet | None, str | None]:
    """The images to recalibrate ``bundle``'s BatchNorms on, and a note when a BatchNorm
    model gets none: ``given`` (a calibration file), else the digits training split when the
    validation images are the digits validation split, else none (raw statistics; never the
    validation images themselves). None without BatchNorm or when not ``enabled``."""
    if not enabled or not norms_of(bundle.program):
        return None, None
    if given is not None:
        return given, None
    if validation_is_digits:
        return digits_train(), None
    return None, (f"{bundle.name} has BatchNorm layers but no calibration images, so its "
                  "accuracy uses the dense model's BatchNorm statistics, which understate "
                  "pruned plans. Give a few hundred images that are not the validation set "
                  "(a calibration file) to recalibrate them.")


def calibration_images(data: ValidationSet, images: int | None = None) -> torch.Tensor:
    """The fixed calibration inputs: a stratified subset of ``images`` (default
    :data:`CALIBRATION_IMAGES`; all of them if there are fewer)."""
    images = CALIBRATION_IMAGES if images is None else images
    if len(data) <= images:
        return data.x
    return data.x[stratified_subset(data, images).indices]


def batches(x: torch.Tensor, size: int = CALIBRATION_BATCH) -> list[torch.Tensor]:
    """``x`` in batches of ``size``; a last batch of one image joins the one before (a norm
    in training mode needs two values per channel)."""
    parts = list(x.split(size))
    if len(parts) > 1 and len(parts[-1]) < 2:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def recalibrated(
    program: Program,
    norms: tuple[Norm, ...],
    overrides: Mapping[str, torch.Tensor],
    keys: Mapping[str, object],
    inputs: Iterable[torch.Tensor],
    device: torch.device | None = None,
    resume: Sequence[RunState | None] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """(buffer overrides, their keys): the running statistics of every norm at or after the
    first parameter ``keys`` names, re-estimated over ``inputs`` with ``overrides`` swapped
    in (see the module docstring). Empty when nothing changed or no norm follows it.
    ``resume``: per input batch, a kept state of the dense model on it (or None): the part
    before the first change runs as evaluated, so the pass resumes there."""
    if not keys or not norms:
        return {}, {}
    first = min(program.first_use.get(p, len(program.nodes)) for p in keys)
    chosen = [n for n in norms if n.node >= first]
    if not chosen:
        return {}, {}
    stats = {n.node: (torch.zeros_like(_buffer(program, overrides, n.mean)),
                      torch.ones_like(_buffer(program, overrides, n.var))) for n in chosen}
    for k, x in enumerate(inputs, start=1):  # momentum 1/k: the cumulative average
        state = resume[k - 1] if resume is not None else None
        program.run(x, overrides, keys, resume=state, device=device, norms=stats,
                    norm_momentum=1.0 / k)
    out, out_keys = {}, {}
    for n in chosen:
        before = tuple(sorted(((p, key) for p, key in keys.items()
                               if program.first_use.get(p, len(program.nodes)) < n.node),
                              key=lambda item: item[0]))
        out[n.mean], out[n.var] = stats[n.node]
        out_keys[n.mean] = out_keys[n.var] = ("recalibrated", before)
    return out, out_keys


def _buffer(program: Program, overrides: Mapping[str, torch.Tensor], name: str) -> torch.Tensor:
    found = overrides.get(name)
    return found if found is not None else program.module.get_buffer(name)
