"""Coupled neurons: which output channels must be removed together, found by Torch-Pruning.

Channels joined by a residual addition (or a concatenation, a BatchNorm, a flatten) cannot be
removed from one layer alone: the model would break or compute something else. Torch-Pruning's
dependency graph (Fang et al. 2023, "DepGraph") traces the model and returns, for each group of
coupled layers, every parameter slice that follows a channel. We translate each group into
:class:`~explorer.graph.Dependent` slices, so masks, costs and shrinking treat a group as one
unit with one sparsity.

This needs the model's ``nn.Module`` (its Linear / Conv2d modules). For a model that exists
only as an exported graph, :mod:`explorer.graph`'s own analysis is used: single layers whose
output feeds the next layer directly are prunable, coupled ones are not.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from explorer.graph import Dependent, Layer

PARAM_DIMS = {"out": 0, "in": 1}


@dataclass(frozen=True)
class NeuronGroup:
    """Prunable layers whose output neurons are removed together (same indices in each).

    ``name`` is the first member in execution order; ``dependents`` lists every parameter
    slice that follows a neuron of the group, the members' own weights and biases included.
    """

    name: str
    layers: tuple[str, ...]
    neurons: int
    dependents: tuple[Dependent, ...]


def find_groups(
    model: nn.Module, example: torch.Tensor, layers: Sequence[Layer]
) -> tuple[dict[str, NeuronGroup], dict[str, str]]:
    """Groups of ``model`` by layer name, and a reason for each layer that cannot be pruned.

    Layers whose output is the model's output are never pruned (their neurons are classes).
    """
    import torch_pruning as tp

    modules = dict(model.named_modules())
    by_module = {m: n for n, m in modules.items()}
    order = {layer.name: i for i, layer in enumerate(layers)}
    output_layers = [modules[la.name] for la in layers
                     if la.neuron_reason and "model's output" in la.neuron_reason]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        found = list(graph.get_all_groups(
            root_module_types=(nn.Conv2d, nn.Linear), ignored_layers=output_layers))
    groups: dict[str, NeuronGroup] = {}
    reasons: dict[str, str] = {}
    for tp_group in found:
        root = tp_group[0].dep.target.module
        neurons = _out_channels(root)
        full = graph.get_pruning_group(root, tp_group[0].dep.handler, list(range(neurons)))
        members, deps, problem = [], [], None
        for dep, idxs in full:
            module = dep.target.module
            name = by_module.get(module)
            if name is None or not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d,
                                                       nn.BatchNorm1d)):
                continue  # a functional op (add, reshape, relu): no parameters of its own
            side = "out" if "out_channels" in dep.handler.__name__ else "in"
            repeat, ok = _block_repeat(list(idxs), neurons)
            if not ok:
                problem = f"channels of {name} map to its inputs in a way not supported"
                break
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                if side == "out" and name in order:
                    members.append(name)
                if isinstance(module, nn.Conv2d) and module.groups != 1:
                    problem = (f"{name} is a grouped convolution (groups={module.groups}), "
                               "not supported for neuron pruning")
                    break
            if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)) or side == "out":
                for pname in ("weight", "bias"):
                    if getattr(module, pname, None) is not None:
                        deps.append(Dependent(f"{name}.{pname}", 0, repeat))
            else:
                deps.append(Dependent(f"{name}.weight", 1, repeat))
        members.sort(key=order.__getitem__)
        if problem:
            for member in members:
                reasons[member] = problem
            continue
        group = NeuronGroup(members[0], tuple(members), neurons, tuple(dict.fromkeys(deps)))
        for member in members:
            groups[member] = group
    return groups, reasons


def _out_channels(module: nn.Module) -> int:
    return module.out_channels if isinstance(module, nn.Conv2d) else module.out_features


def _block_repeat(idxs: list[int], neurons: int) -> tuple[int, bool]:
    """How many consecutive entries each neuron owns, if ``idxs`` is that block pattern."""
    if not idxs or len(idxs) % neurons:
        return 1, False
    repeat = len(idxs) // neurons
    return repeat, idxs == list(range(neurons * repeat))
