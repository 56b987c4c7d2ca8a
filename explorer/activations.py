"""Streaming activations: every requested layer's output on the validation data, per neuron.

One run of the model's program per batch serves every layer asked for. The data-driven
criteria (:mod:`explorer.criteria`) score neurons by these activations and the Look-inside
views (:mod:`explorer.look.stats`, :mod:`explorer.look.similarity`,
:mod:`explorer.look.drilldown`) draw them, so they live in the core, beside the graph they run.

Consumers reduce batch by batch (:func:`stream_activations`): what they hold is one batch
plus their result (a histogram, per-neuron sums, per-image means), never every image's
activations at once. A CIFAR-size 64-channel 32x32 layer is 256 KB per image, 2.6 GB for
10,000 images. A reduction that needs two passes (a histogram's range, then its counts)
iterates :class:`Replay`, which keeps the first pass's batches only while they are small.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError, ExplorerError
from explorer.graph import Layer

BATCH_BYTES = 64 * 2**20  # node values one batch of a run may hold (the evaluator's too)

REPLAY_BYTES = 64 * 2**20  # activations a two-pass reduction keeps from its first pass

Batch = dict[str, torch.Tensor]  # layer name -> activations (B, neurons, positions) float32
# A position that is padding (token-id inputs, ModelBundle.real_tokens) holds NaN: no value.


def stream_activations(
    bundle: ModelBundle,
    data: ValidationSet | torch.Tensor,
    layers: Iterable[str] | None = None,
    batch_size: int | None = None,
) -> Iterator[Batch]:
    """Every requested layer's activation on ``data``, one batch at a time, in data order.

    Args:
        bundle: the model; its program runs once per batch for all layers together.
        data: a validation set or inputs (N, *bundle.input_shape).
        layers: prunable layer names (default: every prunable layer).
        batch_size: images per batch (default: as many as about 64 MiB of graph node
            values hold, the evaluator's batch).

    Yields ``{layer: (B, neurons, positions) float32}``, the output of
    ``Layer.activation_node`` (after the layer's ReLU when it has one). Linear outputs
    (B, ..., features) become (B, features, prod(...)); convolution outputs (B, C, H, W)
    become (B, C, H * W). Where the model reads token ids with padding
    (:meth:`ModelBundle.real_tokens`), a padding position of a per-token layer is NaN, so
    every statistic over positions counts the sentence's tokens only: a padded sentence's
    states are computed but enter nothing the model outputs. The arguments are checked
    here, before the first batch runs.
    """
    x = _inputs(bundle, data)
    if batch_size is None:
        batch_size = default_batch(bundle)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ExplorerError(f"batch_size must be a positive integer; got {batch_size!r}.")
    names = bundle.layer_names if layers is None else list(layers)
    wanted = [find_layer(bundle, name) for name in names]
    return _batches(bundle, x, wanted, batch_size)


def _batches(bundle: ModelBundle, x: torch.Tensor, wanted: list[Layer],
             batch_size: int) -> Iterator[Batch]:
    program = bundle.program
    for start in range(0, x.shape[0], batch_size):
        inputs = x[start : start + batch_size]
        _, state = program.run(inputs, keep=True)
        values, tokens = state.values, bundle.real_tokens(inputs)
        batch = {layer.name: without_padding(neurons_first(
                     layer, values[program.index_of(layer.activation_node)].float()), tokens)
                 for layer in wanted}
        del values, state  # the other node values go now, this batch before the next runs
        yield batch
        del batch


def collect_activations(
    bundle: ModelBundle,
    data: ValidationSet | torch.Tensor,
    layers: Iterable[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Every requested layer's activation on the whole of ``data``, (N, neurons, positions).

    Memory: the layers' activations on every image. For tests and small inputs only (a
    single image's drill-down); the app and the criteria reduce :func:`stream_activations`.
    """
    chunks: dict[str, list[torch.Tensor]] = {}
    for_each(stream_activations(bundle, data, layers, batch_size),
             lambda name, acts: chunks.setdefault(name, []).append(acts))
    return {name: torch.cat(parts) for name, parts in chunks.items()}


@dataclass
class Replay:
    """The batches of :func:`stream_activations`, iterable more than once.

    The first iteration runs the model and keeps its batches while the whole set's
    activations, projected from the batches seen so far, take at most ``keep_bytes``; when
    the whole set was kept, later iterations replay it from memory, otherwise every
    iteration runs the model again. So a small set costs one forward pass and a large one
    holds one batch at a time.
    """

    bundle: ModelBundle
    data: ValidationSet | torch.Tensor
    layers: list[str] | None = None
    batch_size: int | None = None
    keep_bytes: int = REPLAY_BYTES
    kept: list[Batch] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._stream()  # checks the arguments now, not at the first batch

    def __iter__(self) -> Iterator[Batch]:
        if self.kept is not None:
            yield from self.kept
            return
        images = _inputs(self.bundle, self.data).shape[0]
        kept: list[Batch] | None = []
        held = seen = 0
        for batch in self._stream():
            if kept is not None:
                held += sum(acts.nbytes for acts in batch.values())
                seen += next(iter(batch.values())).shape[0]
                kept = None if held * images > self.keep_bytes * seen else [*kept, batch]
            yield batch
            batch = None  # not alive while the next batch runs
        self.kept = kept

    def _stream(self) -> Iterator[Batch]:
        return stream_activations(self.bundle, self.data, self.layers, self.batch_size)


@dataclass
class NeuronTotals:
    """Per-neuron running sums of one layer's activations over the batches seen so far.

    ``abs_sum`` (neurons,) float64 sums |a|, ``zeros`` (neurons,) int64 counts exact zeros,
    ``values`` is the number of values per neuron (samples x ``positions``, less padding),
    ``lo`` / ``hi`` the smallest and largest value of the whole layer.
    """

    abs_sum: torch.Tensor
    zeros: torch.Tensor
    values: int = 0
    samples: int = 0
    positions: int = 0
    lo: float = float("inf")
    hi: float = float("-inf")

    @classmethod
    def empty(cls, neurons: int) -> NeuronTotals:
        return cls(torch.zeros(neurons, dtype=torch.float64),
                   torch.zeros(neurons, dtype=torch.int64))

    def add(self, acts: torch.Tensor) -> None:
        """Add one batch ``acts`` (B, neurons, positions); NaN (padding) is no value."""
        total = torch.nansum if padded(acts) else torch.sum
        self.abs_sum += total(acts.abs(), (0, 2), dtype=torch.float64)
        self.zeros += (acts == 0).sum((0, 2))
        self.values += present(acts)
        self.samples += acts.shape[0]
        self.positions = acts.shape[2]
        lo, hi = value_range(acts)
        self.lo, self.hi = min(self.lo, float(lo.min())), max(self.hi, float(hi.max()))

    @property
    def mean_abs(self) -> torch.Tensor:
        """Mean |a| per neuron over samples and positions, (neurons,) float64."""
        return self.abs_sum / self.values

    @property
    def apoz(self) -> torch.Tensor:
        """The fraction of exactly-zero values per neuron, (neurons,) float64."""
        return self.zeros.double() / self.values


def neuron_totals(
    bundle: ModelBundle,
    data: ValidationSet | torch.Tensor,
    layers: Iterable[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, NeuronTotals]:
    """:class:`NeuronTotals` of every requested layer on ``data``, from one streamed pass."""
    return reduce_batches(stream_activations(bundle, data, layers, batch_size))


def reduce_batches(batches: Iterable[Batch]) -> dict[str, NeuronTotals]:
    """:class:`NeuronTotals` per layer of ``batches``, each ``{layer: (B, neurons, positions)}``."""
    totals: dict[str, NeuronTotals] = {}
    for_each(batches, lambda name, acts: totals.setdefault(
        name, NeuronTotals.empty(acts.shape[1])).add(acts))
    return totals


def per_image_means(
    bundle: ModelBundle,
    data: ValidationSet | torch.Tensor,
    layers: Iterable[str] | None = None,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Each requested layer's activation averaged over positions per image, (N, neurons)
    float64, streamed: a convolution channel's map becomes one number per image."""
    parts: dict[str, list[np.ndarray]] = {}
    for_each(stream_activations(bundle, data, layers, batch_size),
             lambda name, acts: parts.setdefault(name, []).append(image_means(acts)))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def image_means(acts: torch.Tensor) -> np.ndarray:
    """One batch's activations (B, neurons, positions) averaged over positions per image,
    (B, neurons) float64: the one rule every per-image mean follows (a sentence's mean is
    over its tokens: padding, NaN, is left out; every sentence has at least one token)."""
    if not padded(acts):
        return acts.numpy().mean(axis=2, dtype=np.float64)
    return np.nanmean(acts.numpy().astype(np.float64), axis=2)


def without_padding(acts: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    """``acts`` (B, neurons, positions) with NaN where ``tokens`` (B, positions) is False: a
    per-token layer's padding. Left alone without tokens, or where the positions are not the
    input's tokens (a layer after pooling)."""
    if tokens is None or tokens.all() or acts.shape[2] != tokens.shape[1]:
        return acts
    return acts.masked_fill(~tokens[:, None, :], float("nan"))


def present(acts: torch.Tensor) -> int:
    """How many values each neuron has in ``acts`` (B, neurons, positions): its positions
    that are not padding (NaN), the same for every neuron."""
    return int((~torch.isnan(acts[:, :1, :])).sum())


def padded(acts: torch.Tensor) -> bool:
    """Whether ``acts`` (B, neurons, positions) has padding (NaN), read off one neuron (the
    padding is the same for every neuron): no pass over the whole batch for image models."""
    return present(acts) < acts.shape[0] * acts.shape[2]


def value_range(acts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each neuron's smallest and largest value in ``acts`` (B, neurons, positions), padding
    (NaN) left out: two (neurons,) tensors."""
    if not padded(acts):
        return acts.amin((0, 2)), acts.amax((0, 2))
    missing = torch.isnan(acts)
    return (acts.masked_fill(missing, float("inf")).amin((0, 2)),
            acts.masked_fill(missing, float("-inf")).amax((0, 2)))


def real_values(acts: torch.Tensor) -> torch.Tensor:
    """(neurons, values) of ``acts`` (B, neurons, positions) without the padding (NaN)."""
    values = acts.transpose(0, 1).reshape(acts.shape[1], -1)
    keep = ~torch.isnan(values[0])
    return values if keep.all() else values[:, keep]


def for_each(batches: Iterable[Batch], step: Callable[[str, torch.Tensor], object]) -> None:
    """Call ``step(layer, activations)`` for every layer of every batch, holding one batch at
    a time (a plain loop's variables would keep the last batch alive while the next runs)."""
    for batch in batches:
        for name, acts in batch.items():
            step(name, acts)
        batch = acts = None


def default_batch(bundle: ModelBundle) -> int:
    """The evaluator's batch: as many images as about ``BATCH_BYTES`` of node values hold."""
    return batch_for(bundle, BATCH_BYTES)


def batch_for(bundle: ModelBundle, nbytes: int) -> int:
    """How many images one batch may hold so its node values take about ``nbytes``."""
    return images_in(nbytes, node_bytes(bundle)[0])


def images_in(nbytes: int, per_image: int) -> int:
    """How many images of ``per_image`` bytes of node values ``nbytes`` hold (at least one)."""
    return max(1, nbytes // max(per_image, 1))


def node_bytes(bundle: ModelBundle) -> tuple[int, int]:
    """(bytes per image, fixed bytes) of the node values one run of ``bundle`` holds.

    Measured once per model by running the graph on one and on two zero images of
    ``bundle.input_shape`` (views that share memory counted once; the input and the
    parameters left out).
    """
    known = _NODE_BYTES.get(bundle.program.module)
    if known is None:
        one, two = (_run_bytes(bundle, n) for n in (1, 2))
        per_image = max(two - one, 0)
        known = _NODE_BYTES[bundle.program.module] = (per_image, max(one - per_image, 0))
    return known


_NODE_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph -> node_bytes


def horizon_bytes(bundle: ModelBundle) -> dict[int, int]:
    """Bytes per image of a compact state (:meth:`~explorer.graph.Program.run`) for each
    horizon a run may resume from: measured once per model on two zero images."""
    known = _HORIZON_BYTES.get(bundle.program.module)
    if known is None:
        program = bundle.program
        _, state = program.run(torch.zeros((2, *bundle.input_shape)), keep=True)
        sizes = [(last, v.nbytes // 2) for v, last, n in
                 zip(state.values, program.read_until, program.nodes, strict=True)
                 if isinstance(v, torch.Tensor) and n.op != "get_attr"]
        known = {h: sum(b for last, b in sizes if last >= h) for h in program.starts}
        _HORIZON_BYTES[program.module] = known
    return known


_HORIZON_BYTES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # graph -> bytes


def _run_bytes(bundle: ModelBundle, batch: int) -> int:
    """Bytes of the distinct tensors a run on ``batch`` images holds (input and parameters
    excluded: they belong to the data and the model)."""
    x = torch.zeros((batch, *bundle.input_shape))
    _, state = bundle.program.run(x, keep=True)
    params = {p.untyped_storage().data_ptr() for p in bundle.params().values()}
    seen = {x.untyped_storage().data_ptr(), *params}
    total = 0
    for value in state.values:
        if isinstance(value, torch.Tensor):
            ptr = value.untyped_storage().data_ptr()
            if ptr not in seen:
                seen.add(ptr)
                total += value.untyped_storage().nbytes()
    return total


def find_layer(bundle: ModelBundle, name: str) -> Layer:
    """The prunable layer ``name`` of ``bundle``; the error lists the names that exist."""
    try:
        return bundle.layer(name)
    except KeyError:
        raise ExplorerError(
            f"Model '{bundle.name}' has no prunable layer '{name}'. "
            f"Its layers are: {', '.join(bundle.layer_names)}."
        ) from None


def neurons_first(layer: Layer, value: torch.Tensor) -> torch.Tensor:
    """(N, neurons, positions) from a linear (N, ..., F) or convolution (N, C, H, W) output."""
    if layer.kind == "linear":
        value = value.movedim(-1, 1)
    return value.reshape(value.shape[0], value.shape[1], -1)


def _inputs(bundle: ModelBundle, data: ValidationSet | torch.Tensor) -> torch.Tensor:
    """The inputs of ``data``, checked against the model's input shape."""
    x = data.x if isinstance(data, ValidationSet) else data
    expected = tuple(bundle.input_shape)
    if x.dim() < 1 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
        raise DataError(
            f"The data has shape {tuple(x.shape)}; model '{bundle.name}' expects "
            f"(N, {', '.join(map(str, expected))}) with N >= 1."
        )
    return x
