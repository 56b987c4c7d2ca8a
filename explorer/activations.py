"""Collecting activations: every requested layer's output on the validation data, per neuron.

One run of the model's program per batch serves every layer asked for. The data-driven
criteria (:mod:`explorer.criteria`) score neurons by these activations and the Look-inside
views (:mod:`explorer.look.stats`, :mod:`explorer.look.similarity`,
:mod:`explorer.look.drilldown`) draw them, so they live in the core, beside the graph they run.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError, ExplorerError
from explorer.graph import Layer


def collect_activations(
    bundle: ModelBundle,
    data: ValidationSet | torch.Tensor,
    layers: Iterable[str] | None = None,
    batch_size: int = 512,
) -> dict[str, torch.Tensor]:
    """Every requested layer's activation on ``data``, shaped (N, neurons, positions).

    The activation is the output of ``Layer.activation_node`` (after the layer's ReLU when
    it has one). The program runs once per batch of ``batch_size`` inputs for all layers
    together; between batches only these layer outputs are kept, not the whole graph state.
    Linear outputs (N, ..., features) become (N, features, prod(...)); convolution outputs
    (N, C, H, W) become (N, C, H * W). Memory: the layers' activations on the whole set.
    """
    x = data.x if isinstance(data, ValidationSet) else data
    expected = tuple(bundle.input_shape)
    if x.dim() < 1 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
        raise DataError(
            f"The data has shape {tuple(x.shape)}; model '{bundle.name}' expects "
            f"(N, {', '.join(map(str, expected))}) with N >= 1."
        )
    if batch_size < 1:
        raise ExplorerError(f"batch_size must be a positive integer; got {batch_size}.")
    names = bundle.layer_names if layers is None else list(layers)
    wanted = [find_layer(bundle, name) for name in names]
    index = {node.name: i for i, node in enumerate(bundle.program.nodes)}
    chunks: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in wanted}
    for start in range(0, x.shape[0], batch_size):
        _, state = bundle.program.run(x[start : start + batch_size], keep=True)
        for layer in wanted:
            value = state.values[index[layer.activation_node]]
            chunks[layer.name].append(neurons_first(layer, value.detach().float()))
        del state
    return {name: torch.cat(parts) for name, parts in chunks.items()}


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
