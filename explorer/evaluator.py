"""The evaluator behind a slider: a plan in, its metrics out, recomputing as little as it can.

* Importance scores and their sort order are cached per layer (:class:`ScoreCache`):
  a new fraction is a lookup.
* Sizes and FLOPs are arithmetic on per-layer figures (:class:`CostModel`).
* The validation set streams through the graph in batches of ``batch_size`` images (sized
  so one batch's node values take about :data:`~explorer.activations.BATCH_BYTES`): the
  memory a run holds does not grow with the number of images, only the logits do.
* For as many batches as ``memory_budget`` holds, the value of every graph node from the
  dense run and from the last run is kept; a new plan recomputes those batches only from
  the first node that reads a parameter whose mask changed, the others from the input.
  Where no batch fits the budget, or the graph mutates tensors in place, every evaluation
  is a full forward pass.

One evaluator belongs to one user session (it remembers that session's last plan); the
bundle and the score cache can be shared between sessions.

Progressive evaluation: with a large validation set, the first batches are a fixed
stratified subset of :attr:`Evaluator.estimate_samples` images (as many as a full forward
answers in about :data:`ESTIMATE_SECONDS`, see :func:`estimate_size`;
:func:`~explorer.data.stratified_subset` picks
them, so the estimate is what ``evaluate --samples`` reports), and ``progress`` hears its
metrics, marked by ``samples``, before the rest of the set refines them. The final metrics
are the full evaluation's: the order of the images changes no count.

Fidelity (:func:`~explorer.metrics.fidelity`: top-1 agreement, KL and cosine similarity to
the dense model's outputs on the same images, no labels needed): the dense model's logits of
each batch are kept once, when a run first computes them (:attr:`Evaluator.reference_bytes`:
N x classes floats), so a plan's fidelity is a reduction over batches it runs anyway. With
BatchNorm recalibration the plan's outputs are the recalibrated model's and the reference
stays the dense model's. Data without labels (``data.labelled`` False) gets fidelity alone:
accuracy and loss are None.

Without data (``data=None``, an architecture-only model) an evaluation is the arithmetic
alone: sizes and FLOPs, with accuracy and loss None (see :class:`~explorer.metrics.Metrics`).

Device: the graph runs on CUDA where this machine's torch has a CUDA device (``device``:
see :func:`resolve_device`) and never needs one. The shared bundle stays on the CPU: the
evaluator runs its graph with a copy of every tensor it reads on the device
(:meth:`~explorer.graph.Program.tensors_on`), moves each batch there and brings the logits
back to score them on the CPU. On the CPU nothing is copied or moved.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from explorer.activations import default_batch, horizon_bytes
from explorer.batchnorm import (
    CALIBRATION_IMAGES,
    MIN_CALIBRATION_IMAGES,
    batches,
    calibration_images,
    norms_of,
    recalibrated,
)
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet, stratified_subset
from explorer.errors import DataError, DeviceError, short
from explorer.graph import RunState, logits_of
from explorer.masks import Masks, ScoreCache, masks_for
from explorer.metrics import (
    CostModel,
    Metrics,
    fidelity_of,
    fidelity_sums,
    metrics_from,
    score_logits,
)
from explorer.plan import Plan
from explorer.progress import Cancelled, Progress, stop_now, tick

DEFAULT_MEMORY_BUDGET = 512 * 2**20  # the most a default budget is: 4 fit in a session
MIN_MEMORY_BUDGET = 64 * 2**20
MASKED_PARAMS_KEPT = 64
NORM_STATS_KEPT = 64  # plans whose re-estimated BatchNorm statistics are remembered
METRICS_KEPT = 256
ESTIMATE_SECONDS = 0.3  # how long the first answer on a large validation set may take
MIN_ESTIMATE = 20  # fewer images than this say too little to show
# FLOPs per second of a dense forward on 2 laptop-class cores: a CIFAR ResNet-18 (1.11
# GFLOPs per image) runs 3,000 images in about 24 s here, so its estimate takes 40 images.
NOMINAL_FLOP_RATE = 150e9


class Evaluator:
    """Evaluates plans for one model on one validation set (or on none: costs only).

    ``batch_size``: images per batch (default:
    :func:`~explorer.activations.default_batch`, from a probe run); ``memory_budget``:
    bytes of node values kept for resuming (default: :func:`default_memory_budget`; 0 keeps
    none: every evaluation a full pass); ``estimate_samples``: the size of the stratified
    subset evaluated first (default: :func:`estimate_size`; 0 or at least half the set: no
    estimate, the images in file order); ``device``: where the graph runs (default: CUDA
    where available, see :func:`resolve_device`). The kept node values live on that
    device: on a GPU the memory budget counts GPU memory. ``bn_calibration``: images (never
    the validation set) to re-estimate BatchNorm statistics on for every pruned plan
    (:mod:`explorer.batchnorm`); None, or a model without BatchNorm: raw statistics.
    ``recalibrates`` says which, and every :class:`~explorer.metrics.Metrics` carries it;
    ``judging`` names it (with the calibration images' digest) for keys of cached results.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        data: ValidationSet | None,
        scores: ScoreCache | None = None,
        memory_budget: int | None = None,
        batch_size: int | None = None,
        estimate_samples: int | None = None,
        device: str | torch.device | None = None,
        bn_calibration: ValidationSet | None = None,
    ) -> None:
        self.bundle = bundle
        self.data = data
        self.device = resolve_device(device)
        on_cpu = self.device.type == "cpu"
        # Elsewhere, every tensor the graph reads, copied there once (none without data).
        self._on_device = ({} if on_cpu or data is None
                           else bundle.program.tensors_on(self.device))
        self._made_on = None if on_cpu else self.device  # where new tensors are made
        self.scores = scores or ScoreCache(bundle, data)
        self.costs = CostModel(bundle)
        self.memory_budget = default_memory_budget() if memory_budget is None else memory_budget
        self.batch_size = batch_size or default_batch(bundle)
        self.params = bundle.params()
        self.incremental = bundle.program.resumable
        self._states: dict[int, dict[str, RunState]] = {}  # batch -> "dense" / "last" state
        self._dense_logits: dict[int, torch.Tensor] = {}  # batch -> the dense model's, on CPU
        self.horizon = 0 if data is None or not self.incremental else choose_horizon(
            bundle, len(data), self.memory_budget)
        self._masked_params: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._metrics: OrderedDict[str | tuple, Metrics] = OrderedDict()
        self.last_start = 0  # index of the first recomputed node in the last run's 1st batch
        self.estimate_samples, self._order, self._bounds = self._layout(estimate_samples)
        self.bn_calibration = bn_calibration  # what a copy elsewhere is built with
        # BatchNorm recalibration: the norms of the graph when there are images to do it on
        self.norms = norms_of(bundle.program) if bn_calibration is not None else ()
        self.recalibrates = bool(self.norms)
        self._bn_inputs = ([x.to(self.device) for x in batches(calibration_images(
            bn_calibration, calibration_size(bundle)))] if self.recalibrates else [])
        self._norm_stats: OrderedDict[tuple, tuple[dict, dict]] = OrderedDict()
        self._bn_states: list[RunState | None] | None = None  # made at the first pass
        self.judging = _judging(self._bn_inputs)

    def _layout(self, estimate_samples: int | None
                ) -> tuple[int, torch.Tensor | None, list[tuple[int, int]]]:
        """(images in the estimate, the image order or None for file order, each batch's
        (start, end) in that order): the estimate's batches first, none straddling its end."""
        if self.data is None:
            return 0, None, []
        n = len(self.data)
        if estimate_samples is None:
            estimate_samples = estimate_size(self.bundle, n)
        if not 0 < estimate_samples <= n // 2:
            return n, None, _chunks(0, n, self.batch_size)
        first = stratified_subset(self.data, estimate_samples).indices
        rest = torch.ones(n, dtype=torch.bool)
        rest[first] = False
        order = torch.cat([first, torch.nonzero(rest).flatten()])
        bounds = _chunks(0, estimate_samples, self.batch_size)
        return estimate_samples, order, bounds + _chunks(estimate_samples, n, self.batch_size)

    @property
    def refines(self) -> bool:
        """Whether evaluations answer in two steps: the stratified estimate, then the rest
        (False without data or where the estimate would be most of the set)."""
        return self.data is not None and self.estimate_samples < len(self.data)

    def _rows(self, start: int, end: int) -> slice | torch.Tensor:
        """Which images of the data batch ``[start, end)`` of the evaluation order holds."""
        return slice(start, end) if self._order is None else self._order[start:end]

    def masks(self, plan: Plan) -> Masks:
        return masks_for(self.bundle, plan, self.scores)

    def logits(self, masks: Masks) -> torch.Tensor:
        """Logits (N, classes) of the masked model on the validation inputs (in file order),
        batch by batch."""
        logits = torch.cat([logits for logits in self._batches(masks)])
        if self._order is None:
            return logits
        return torch.empty_like(logits).index_copy_(0, self._order, logits)

    def _batches(self, masks: Masks) -> Iterator[torch.Tensor]:
        """Each batch's logits in turn; a caller that stops early leaves every batch's kept
        states consistent (each state carries the parameter keys it was run with)."""
        if self.data is None:
            raise DataError(f"'{self.bundle.name}' has no validation data to run on.")
        overrides, keys = self._swapped_in(masks)
        for batch, (start, end) in enumerate(self._bounds):
            x = self.data.x[self._rows(start, end)].to(self.device)
            logits, begun = self._run_batch(batch, x, overrides, keys)
            if not keys:  # the dense model: these are the reference logits
                self._dense_logits.setdefault(batch, logits.cpu())
            if batch == 0:
                self.last_start = begun
            if not self._states:
                self.incremental = False
            yield logits.cpu()

    def _run_batch(self, batch: int, x: torch.Tensor, overrides: dict[str, torch.Tensor],
                   keys: dict[str, object]) -> tuple[torch.Tensor, int]:
        """One batch's logits, resumed from the best of its kept states where it has them,
        and the index of the first node recomputed."""
        program = self.bundle.program
        kept = self._states.get(batch, {})
        resume = max(kept.values(), key=lambda s: program.resume_index(keys, s),
                     default=None)
        logits, state = program.run(x, overrides, keys, resume=resume,
                                    keep=self.incremental, device=self._made_on,
                                    horizon=self.horizon)
        if state is not None:
            self._keep(batch, x, state, keys)
        return logits, 0 if resume is None else program.resume_index(keys, resume)

    def _keep(self, batch: int, x: torch.Tensor, state: RunState,
              keys: dict[str, object]) -> None:
        """Keep ``state`` as the batch's last run; a batch kept for the first time also keeps
        its dense run, if the budget holds both."""
        entry = self._states.get(batch)
        if entry is None:
            if self.kept_bytes + 2 * state.nbytes > self.memory_budget:
                return
            dense = state
            if keys:
                logits, dense = self.bundle.program.run(
                    x, self._on_device, keep=True, device=self._made_on, horizon=self.horizon)
                self._dense_logits.setdefault(batch, logits.cpu())
            entry = self._states[batch] = {"dense": dense}
        entry["last"] = state

    @property
    def kept_batches(self) -> int:
        """How many batches resume from kept states (the others run from the input)."""
        return len(self._states)

    def _reference(self, batch: int) -> torch.Tensor:
        """The dense model's logits on batch ``batch`` (CPU), from a dense forward the first
        time no run has made them yet."""
        if batch not in self._dense_logits:
            x = self.data.x[self._rows(*self._bounds[batch])].to(self.device)
            logits, _ = self.bundle.program.run(x, self._on_device, device=self._made_on)
            self._dense_logits[batch] = logits.cpu()
        return self._dense_logits[batch]

    @property
    def reference_bytes(self) -> int:
        """Bytes of the dense model's logits kept for fidelity (N x classes floats at most)."""
        return sum(t.nbytes for t in self._dense_logits.values())

    @property
    def kept_calibration_batches(self) -> int:
        """How many BatchNorm calibration batches resume from a kept dense state."""
        return sum(s is not None for s in self._bn_states or ())

    @property
    def kept_bytes(self) -> int:
        """Bytes of node values kept for resuming (a state kept twice counted once)."""
        states = {id(s): s for entry in self._states.values() for s in entry.values()}
        states.update((id(s), s) for s in self._bn_states or () if s is not None)
        return sum(s.nbytes for s in states.values())

    def _swapped_in(self, masks: Masks) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        """(tensors a run swaps in, their keys): the masked parameters on the device and,
        when recalibrating, the re-estimated BatchNorm statistics (remembered per plan)."""
        overrides = {**self._on_device, **self._masked(masks)}
        stats, stat_keys = self._recalibrated(masks, overrides)
        return {**overrides, **stats}, {**masks.keys, **stat_keys}

    def _recalibrated(self, masks: Masks, overrides: dict[str, torch.Tensor]
                      ) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
        """The plan's re-estimated BatchNorm statistics and their keys (empty when not
        recalibrating or nothing changed), remembered per plan."""
        if not self.recalibrates or not masks.keys:
            return {}, {}
        key = tuple(sorted(masks.keys.items(), key=lambda item: item[0]))
        if key not in self._norm_stats:
            self._norm_stats[key] = recalibrated(self.bundle.program, self.norms, overrides,
                                                 masks.keys, self._bn_inputs, self._made_on,
                                                 self._bn_resume())
            while len(self._norm_stats) > NORM_STATS_KEPT:
                self._norm_stats.popitem(last=False)
        self._norm_stats.move_to_end(key)
        return self._norm_stats[key]

    def _bn_resume(self) -> list[RunState | None]:
        """Per calibration batch, the dense model's kept state on it (made once, under the
        memory budget like the validation batches' states; None where it does not fit):
        a recalibration pass then runs only from the first change on."""
        if self._bn_states is None:
            self._bn_states = []
            for x in self._bn_inputs:
                state = None
                if self.incremental:
                    _, state = self.bundle.program.run(x, self._on_device, keep=True,
                                                       device=self._made_on,
                                                       horizon=self.horizon)
                    if self.kept_bytes + state.nbytes > self.memory_budget:
                        state = None
                self._bn_states.append(state)
        return self._bn_states

    def bn_statistics(self, plan: Plan) -> dict[str, torch.Tensor]:
        """``plan``'s re-estimated BatchNorm running statistics by buffer name, on the CPU:
        what its exports and its fine-tuning start from (empty when not recalibrating or
        nothing is pruned)."""
        masks = self.masks(plan)
        if not self.recalibrates or not masks.keys:
            return {}
        stats, _ = self._recalibrated(masks, {**self._on_device, **self._masked(masks)})
        return {name: value.cpu() for name, value in stats.items()}

    def _masked(self, masks: Masks) -> dict[str, torch.Tensor]:
        """Masked (and, for merge plans, updated) parameter tensors on the device (made on
        the CPU), reused while a parameter's key stays the same."""
        out = {}
        for name in {**masks.masks, **masks.updates}:
            key = (name, masks.keys[name])
            if key not in self._masked_params:
                self._masked_params[key] = masks.value(name, self.params).to(self.device)
            self._masked_params.move_to_end(key)
            out[name] = self._masked_params[key]
        while len(self._masked_params) > MASKED_PARAMS_KEPT:
            self._masked_params.popitem(last=False)
        return out

    def evaluate(self, plan: Plan, progress: Progress | None = None,
                 cancelled: Cancelled | None = None) -> Metrics:
        """Accuracy, loss, sizes and FLOPs of ``plan`` (see :mod:`explorer.metrics`).

        Plans seen recently (undo, the dense baseline) are answered from memory, without
        disturbing the state the next slider move resumes from. ``progress(done, total,
        so_far)`` follows the batches, ``so_far`` the metrics on the images evaluated so
        far (the first report with ``samples == estimate_samples`` is the stratified
        estimate); ``cancelled()`` is checked between batches, and a cancelled evaluation
        returns those metrics (``samples`` fewer than the data's; never remembered).
        """
        key = plan.key
        if key in self._metrics:
            self._metrics.move_to_end(key)
            return self._metrics[key]
        masks = self.masks(plan)
        costs = self.costs.costs(masks)
        if self.data is None:
            metrics = metrics_from(costs, bn_recalibrated=self.recalibrates)
        else:
            metrics = self._measured(masks, costs, progress, cancelled)
            if metrics.samples < len(self.data):
                return metrics
        return self._remember(key, metrics)

    def estimate(self, plan: Plan) -> Metrics:
        """``plan``'s metrics on the stratified subset alone (``samples`` says how many
        images): what a sweep screens with. Without an estimate phase (a small set, no data)
        it is :meth:`evaluate`'s exact answer. The subset's batches come first in the
        layout, so their kept states resume a sweep's unchanged prefix."""
        if not self.refines:
            return self.evaluate(plan)
        key = ("estimate", plan.key)
        if key in self._metrics:
            self._metrics.move_to_end(key)
            return self._metrics[key]
        first = sum(1 for start, _ in self._bounds if start < self.estimate_samples)
        masks = self.masks(plan)
        return self._remember(key, self._measured(masks, self.costs.costs(masks), None,
                                                  _after(first)))

    def _remember(self, key: str | tuple, metrics: Metrics) -> Metrics:
        """Keep ``metrics`` under ``key`` among the :data:`METRICS_KEPT` most recent."""
        self._metrics[key] = metrics
        while len(self._metrics) > METRICS_KEPT:
            self._metrics.popitem(last=False)
        return metrics

    def _measured(self, masks: Masks, costs, progress: Progress | None,
                  cancelled: Cancelled | None) -> Metrics:
        """Metrics over the batches run before ``cancelled()``: all of them, as one."""
        parts: list[torch.Tensor] = []
        correct, loss_sum, seen = 0, 0.0, 0
        faithful = torch.zeros(3, dtype=torch.float64)  # fidelity_sums over the batches
        total, labelled = len(self._bounds), self.data.labelled  # batches; y or none

        def so_far() -> Metrics:
            return metrics_from(costs, correct, loss_sum / seen, seen, self.recalibrates,
                                fidelity_of(faithful, seen), labelled)

        for logits in self._batches(masks):
            rows = self._rows(seen, seen + len(logits))
            seen += len(logits)
            faithful += fidelity_sums(self._reference(len(parts)), logits)
            parts.append(logits)
            if labelled:
                correct += int((logits.argmax(1) == self.data.y[rows]).sum())
                loss_sum += float(F.cross_entropy(logits, self.data.y[rows], reduction="sum"))
            if progress is not None and seen < len(self.data):
                tick(progress, len(parts), total, so_far())
            if seen < len(self.data) and stop_now(cancelled):
                return so_far()
        loss = None
        if labelled:
            y = self.data.y if self._order is None else self.data.y[self._order]
            correct, loss = score_logits(torch.cat(parts), y)  # the one-batch figures
        metrics = metrics_from(costs, correct, loss, len(self.data), self.recalibrates,
                               fidelity_of(faithful, len(self.data)), labelled)
        tick(progress, total, total, metrics)
        return metrics


def _after(batches: int) -> Cancelled:
    """A ``cancelled`` that stops an evaluation after its first ``batches`` batches."""
    asked = iter(range(batches - 1))
    return lambda: next(asked, None) is None


def choose_horizon(bundle: ModelBundle, images: int, budget: int) -> int:
    """The earliest node a kept state lets a run resume at: the cost model behind what the
    budget holds. A state for resuming anywhere holds a lot per image (2.3 MiB for a CIFAR
    ResNet-18); one for resuming only late in the network little (66 KiB from its last
    block). For each horizon h, the budget holds the dense and last states of ``n(h)``
    images, and a move of layer L at or after h saves the FLOPs before L on each of them;
    with every layer equally likely to move, the horizon saving the most forward time
    wins (the earliest among equals)."""
    layers = sorted((bundle.program.index_of(la.node), la.flops) for la in bundle.layers)
    before, done = [], 0
    for at, flops in layers:
        before.append((at, done))
        done += flops
    best, best_saved = 0, -1.0
    for h, per_image in sorted(horizon_bytes(bundle).items()):
        kept = images if per_image == 0 else min(images, budget // (2 * per_image))
        saved = kept * sum(flops for at, flops in before if at >= h)
        if saved > best_saved:
            best, best_saved = h, saved
    return best


def _chunks(start: int, end: int, size: int) -> list[tuple[int, int]]:
    return [(i, min(i + size, end)) for i in range(start, end, size)]


def estimate_size(bundle: ModelBundle, images: int) -> int:
    """How many images the first answer takes: as many as a dense forward runs in about
    :data:`ESTIMATE_SECONDS` at :data:`NOMINAL_FLOP_RATE`, at least :data:`MIN_ESTIMATE`,
    at most ``images``. Counted from the model's FLOPs, not timed: the same model always
    gets the same subset (a timed size would change with the machine's load)."""
    if bundle.flops <= 0:
        return images
    return min(max(int(ESTIMATE_SECONDS * NOMINAL_FLOP_RATE / bundle.flops), MIN_ESTIMATE),
               images)


def _judging(bn_inputs: list[torch.Tensor]) -> str:
    """How this evaluator judges a pruned plan, as a key part: "raw" BatchNorm statistics,
    or recalibrated on calibration images of this digest (results cached beside the model's
    content must also name this: the same plan measures differently either way)."""
    if not bn_inputs:
        return "raw"
    digest = hashlib.sha256()
    for x in bn_inputs:
        digest.update(x.detach().cpu().contiguous().numpy().tobytes())
    return "bn:" + digest.hexdigest()[:16]


def calibration_size(bundle: ModelBundle) -> int:
    """How many calibration images a BatchNorm recalibration runs on: as many as the first
    answer (:func:`estimate_size`), at least :data:`~explorer.batchnorm.MIN_CALIBRATION_IMAGES`
    and at most :data:`~explorer.batchnorm.CALIBRATION_IMAGES`, so the pass before a slider's
    first estimate costs about what the estimate does (256 images for the digits demos, 40
    for a CIFAR ResNet-18, whose 32x32 maps give each channel 1,024 values per image)."""
    return min(max(estimate_size(bundle, CALIBRATION_IMAGES), MIN_CALIBRATION_IMAGES),
               CALIBRATION_IMAGES)


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for a block (None: left as it is), then
    restored. (OpenMP keeps it per thread: a run in a background thread leaves the others'
    setting alone.) For runs that say how many threads they use: fine-tuning, timing."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(name: str | torch.device | None) -> torch.device:
    """Where evaluations run: ``None`` or ``"auto"`` is CUDA where this machine's torch has
    a CUDA device, else the CPU; ``"cpu"``; ``"cuda"`` (or ``"cuda:1"``) only where it has
    that device (a DeviceError otherwise)."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"The device must be auto, cpu or cuda; got {short(name)}.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("CUDA was asked for but this machine's torch has no CUDA device; "
                          "use --device cpu or auto.")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceError(f"{device} was asked for but this machine has "
                          f"{torch.cuda.device_count()} CUDA device(s); use --device cuda.")
    return device


def default_memory_budget() -> int:
    """Bytes of node values an evaluator keeps by default: a sixteenth of the memory this
    machine has available now, between :data:`MIN_MEMORY_BUDGET` and
    :data:`DEFAULT_MEMORY_BUDGET` (a laptop with 4 GiB free keeps 256 MiB)."""
    return min(max(available_memory() // 16, MIN_MEMORY_BUDGET), DEFAULT_MEMORY_BUDGET)


def available_memory() -> int:
    """Bytes of memory available to new work (Linux: MemAvailable; elsewhere: free pages)."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_MEMORY_BUDGET * 16


def full_forward_logits(bundle: ModelBundle, masks: Masks, x: torch.Tensor) -> torch.Tensor:
    """Reference path: one plain forward of the model with the plan's parameters swapped in.

    Uses ``torch.func.functional_call`` on the original module: nothing is cached and the
    model's own parameters are not written.
    """
    params = dict(bundle.model.named_parameters())
    params.update(masks.apply(params))
    with torch.no_grad():
        out = torch.func.functional_call(bundle.model, params, (x,))
    return logits_of(out)
