"""A loaded model, ready to explore: its exported graph, its prunable layers, its costs.

A :class:`ModelBundle` is read-only and shared (the app caches one per model for every
browser session). Nothing in the engine writes into ``bundle.model`` or its program.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from explorer.errors import ModelError
from explorer.graph import Layer, Program, analyse, node_shapes
from explorer.groups import (
    BLOCK_GATE,
    Block,
    HeadGroup,
    attention_modules,
    block_modules,
    find_blocks,
    find_heads,
    gated_blocks,
    graph_groups,
    module_flops,
)

HEADLESS = "it is not a query, key, value or output projection of an attention"
BLOCKLESS = "it is not inside a block that can be dropped (a transformer layer, or a " \
    "residual block whose shortcut is the identity)"


@dataclass(frozen=True)
class ModelBundle:
    """A model in eval mode with what the engine knows about it.

    ``input_shape`` is one sample's shape (without the batch dimension); ``layers`` are the
    prunable layers in execution order; ``flops`` is the dense FLOPs per sample of the
    whole model as ``FlopCounterMode`` counts them (2 per multiply-add). ``heads`` are its
    self-attentions' heads (:class:`~explorer.groups.HeadGroup`; empty without attention);
    ``blocks`` the transformer blocks a ``blocks`` plan may drop (:class:`~explorer.groups.Block`).
    """

    name: str
    model: nn.Module
    program: Program
    input_shape: tuple[int, ...]
    num_classes: int
    layers: tuple[Layer, ...]
    flops: int
    card: dict = field(default_factory=dict)
    source: str = "zoo"
    heads: tuple[HeadGroup, ...] = ()
    blocks: tuple[Block, ...] = ()

    def real_tokens(self, x: torch.Tensor) -> torch.Tensor | None:
        """Which positions of token-id inputs ``x`` (N, L) hold a token rather than padding,
        (N, L) bool; None where the model reads no token ids (no ``pad_id`` in its card or
        as its attribute, as :class:`~explorer.load.transformers.TopicEmbedder` has) or ``x``
        is not (N, L). Per-token statistics leave the padding out: its states are computed
        but enter nothing the model outputs."""
        pad_id = self.card.get("pad_id", getattr(self.model, "pad_id", None))
        if pad_id is None or x.dim() != 2 or tuple(x.shape[1:]) != tuple(self.input_shape):
            return None
        return x.long() != int(pad_id)

    def group(self, name: str) -> tuple[Layer, ...]:
        """The layers of neuron group ``name`` (a group is named after its first layer)."""
        return tuple(la for la in self.layers if la.group == name)

    @property
    def group_names(self) -> list[str]:
        """Neuron groups in execution order of their first layer."""
        return list(dict.fromkeys(la.group for la in self.layers if la.group is not None))

    @property
    def granularities(self) -> tuple[str, ...]:
        """What a per-layer plan may remove from this model: weights and neurons, and heads
        where it has attention heads (a ``blocks`` plan, global only, needs :attr:`blocks`)."""
        return ("weights", "neurons", "heads") if self.heads else ("weights", "neurons")

    @property
    def plan_granularities(self) -> tuple[str, ...]:
        """Every granularity a plan of this model may have: the per-layer ones
        (:attr:`granularities`) and ``blocks`` where it has blocks."""
        return (*self.granularities, "blocks") if self.blocks else self.granularities

    def block(self, name: str) -> Block:
        """The transformer block whose module is ``name``."""
        for block in self.blocks:
            if block.name == name:
                return block
        raise KeyError(name)

    def block_of(self, layer: str) -> Block | None:
        """The transformer block ``layer`` is inside, if any."""
        return next((b for b in self.blocks if layer in b.layers), None)

    def head_group(self, name: str) -> HeadGroup:
        """The attention whose heads unit is named ``name`` (its query layer's name)."""
        for group in self.heads:
            if group.name == name:
                return group
        raise KeyError(name)

    def head_group_of(self, layer: str) -> HeadGroup | None:
        """The attention ``layer`` is a query, key, value or output projection of, if any."""
        return next((g for g in self.heads if layer in g.layers), None)

    def units(self, granularity: str) -> dict[str, tuple[str, ...]]:
        """What a plan of ``granularity`` scores and cuts as one, each with its layers in
        execution order: every layer (weights), every coupled group of layers that can lose
        neurons, named after its first layer (neurons; a lone layer is a group of one), or
        every attention's query, key, value and output layers, named after its query
        (heads)."""
        if granularity == "weights":
            return {name: (name,) for name in self.layer_names}
        if granularity == "heads":
            return {g.name: g.layers for g in self.heads}
        if granularity == "blocks":
            return {b.name: b.layers for b in self.blocks}
        return {g: tuple(la.name for la in self.group(g)) for g in self.group_names}

    def unit_size(self, granularity: str, unit: str) -> int:
        """How many entries (weights), neurons or heads unit ``unit`` has."""
        if granularity == "weights":
            return math.prod(self.layer(unit).weight_shape)
        if granularity == "heads":
            return self.head_group(unit).heads
        if granularity == "blocks":
            return 1
        return self.layer(unit).neurons

    def unit_of(self, layer: str, granularity: str) -> str | None:
        """The unit ``layer`` is cut with (see :meth:`units`): itself (weights), its neuron
        group, attention or block; None where it has none."""
        if granularity == "weights":
            return layer
        if granularity == "heads":
            group = self.head_group_of(layer)
            return group and group.name
        if granularity == "blocks":
            block = self.block_of(layer)
            return block and block.name
        return self.layer(layer).group

    def linked(self, layer: str, granularity: str) -> tuple[str, ...]:
        """The layers that lose what ``layer`` loses: its unit (itself where it has none)."""
        unit = self.unit_of(layer, granularity)
        if unit is None or granularity == "weights":
            return (layer,)
        if granularity == "heads":
            return self.head_group(unit).layers
        if granularity == "blocks":
            return self.block(unit).layers
        return tuple(la.name for la in self.group(unit))

    def prunable_layers(self, granularity: str) -> list[str]:
        """The layers a plan of ``granularity`` may prune, in execution order."""
        if granularity == "heads":
            return [la.name for la in self.layers if self.head_group_of(la.name)]
        if granularity == "blocks":
            return [la.name for la in self.layers if self.block_of(la.name)]
        return [la.name for la in self.layers
                if granularity == "weights" or la.neuron_prunable]

    def unprunable(self, granularity: str) -> dict[str, str]:
        """Why each layer that a plan of ``granularity`` cannot prune is left out."""
        if granularity == "weights":
            return {}
        if granularity == "heads":
            return {la.name: f"heads cannot be removed: {HEADLESS}" for la in self.layers
                    if self.head_group_of(la.name) is None}
        if granularity == "blocks":
            return {la.name: f"blocks cannot be dropped: {BLOCKLESS}" for la in self.layers
                    if self.block_of(la.name) is None}
        return {la.name: f"neurons cannot be removed: {la.neuron_reason}"
                for la in self.layers if not la.neuron_prunable}

    def layer_units(self, name: str) -> dict[str, dict]:
        """What layer ``name`` can lose, by unit kind: for ``neurons``, how many it has,
        whether they are removable, the group they are removed with (named after its first
        layer) and, where they are not removable, why. Other kinds (attention heads) add
        their own entry of the same shape."""
        layer = self.layer(name)
        units = {"neurons": {"count": layer.neurons, "removable": layer.neuron_prunable,
                             "group": layer.group, "why_not": layer.neuron_reason}}
        group = self.head_group_of(name)
        if group is not None:
            units["heads"] = {"count": group.heads, "removable": True, "group": group.name,
                              "why_not": None}
        elif self.heads:
            units["heads"] = {"count": 0, "removable": False, "group": None,
                              "why_not": HEADLESS}
        block = self.block_of(name)
        if self.blocks:
            units["blocks"] = {"count": int(block is not None), "removable": block is not None,
                               "group": block and block.name,
                               "why_not": None if block else BLOCKLESS}
        return units

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def layer_names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def params(self) -> dict[str, torch.Tensor]:
        """Every parameter by its ``state_dict`` name (the shared tensors: do not write)."""
        return self.program.params()

    @property
    def param_count(self) -> int:
        return sum(p.numel() for p in self.params().values())


def bundle_from_module(
    model: nn.Module,
    name: str,
    input_shape: tuple[int, ...],
    card: dict | None = None,
    source: str = "zoo",
    program_module: torch.fx.GraphModule | None = None,
) -> ModelBundle:
    """Export ``model`` (or take its already exported ``program_module``) and analyse it."""
    model.eval()
    for pname, p in model.named_parameters():
        if not torch.isfinite(p).all():
            bad = int((~torch.isfinite(p)).sum())
            raise ModelError(
                f"Parameter '{pname}' has {bad} NaN or infinite value(s); "
                "the model cannot be evaluated. Check the training run that produced it."
            )
    example = torch.zeros((2, *input_shape))
    blocks = block_modules(model, example[:1])
    if program_module is None:
        with gated_blocks(model, blocks):
            program_module = export_module(model, example)
    program = Program(program_module)
    with FlopCounterMode(display=False) as counter:  # one run: the output check and FLOPs
        logits, _ = program.run(example[:1])
    if logits.dim() != 2:
        raise ModelError(
            f"The model returns a tensor of shape {tuple(logits.shape)}; "
            "expected logits shaped (batch, classes)."
        )
    shapes = node_shapes(program, example[:1])
    layers = tuple(_with_groups(program, analyse(program, shapes), shapes))
    flops = module_flops(model, example[:1]) if blocks or attention_modules(model) else {}
    return ModelBundle(
        name=name, model=model, program=program, input_shape=tuple(input_shape),
        num_classes=int(logits.shape[1]), layers=layers, flops=int(counter.get_total_flops()),
        card=dict(card or {}), source=source, heads=find_heads(model, layers, flops),
        blocks=find_blocks(blocks, layers, flops),
    )


def _with_groups(
    program: Program, layers: list[Layer], shapes: dict[str, tuple[int, ...]]
) -> list[Layer]:
    """Layers with their coupled neuron groups found on the exported graph (the same for a
    demo architecture and an upload), or why their neurons cannot be removed."""
    groups, reasons = graph_groups(program.nodes, layers, shapes, set(program.params()))
    out = []
    for la in layers:
        group = groups.get(la.name)
        if group is not None:
            out.append(replace(la, dependents=group.dependents, neuron_reason=None,
                               group=group.name))
        else:
            reason = reasons.get(la.name, "no dependency group found")
            out.append(replace(la, dependents=(), neuron_reason=reason, group=None))
    return out


def load_into_graph(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a model's ``state_dict`` into (a copy of) its exported graph, as strictly as
    ``load_state_dict``, except that the graph's own block gates (which the traced graph
    holds and the model does not, :class:`~explorer.groups.gated_blocks`) keep their values.

    Raises:
        RuntimeError: a key of ``state`` the graph lacks, or one it has that is missing.
    """
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k.rpartition(".")[2] != BLOCK_GATE]
    if result.unexpected_keys or missing:
        raise RuntimeError(f"Error(s) in loading state_dict: unexpected "
                           f"{result.unexpected_keys[:3]}, missing {missing[:3]}")


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``model`` exported by ``torch.export`` on ``example`` (a batch of two or more, so the
    batch size is not specialised) with a dynamic batch dimension: any batch from 1 runs.
    Exceptions are torch's own; callers say what they were exporting for."""
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def export_module(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """``torch.export`` the model with a dynamic batch dimension; clear error if it fails."""
    try:
        exported = export_program(model, example)
    except Exception as exc:  # export raises many internal types; the user needs the gist
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"The model cannot be traced for analysis with torch.export on input of shape "
            f"{tuple(example.shape[1:])}: {first}"
        ) from exc
    return exported.module()
