"""Physical shrinking: the smaller dense model a neuron (or heads) plan describes.

The masked model (whole rows and columns zeroed) and the shrunk model compute the same
outputs; the shrunk one really has fewer parameters and FLOPs, so it is faster on any
hardware. For a model with its Python definition, Torch-Pruning removes the channels, with
everything coupled to them, from a private copy of the model. A model known only as an
exported graph (an upload) is shrunk on a copy of its graph: every parameter slice the masks
cut (the groups' :class:`~explorer.graph.Dependent` slices) is removed, with the running
statistics of the BatchNorms that follow them; a depthwise convolution's ``groups`` becomes
its new channel count, and a flatten written as a fixed-size view becomes ``flatten(x, 1)``.
A heads plan's model loses the removed heads' slices of each attention (:func:`shrink_heads`),
a blocks plan's the dropped transformer blocks (:func:`shrink_blocks`).
The shared model is never touched.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from explorer.bundle import ModelBundle
from explorer.errors import ModelError
from explorer.graph import FLATTEN_OPS, conv_groups, node_shapes
from explorer.groups import channel_flatten
from explorer.masks import Masks

aten = torch.ops.aten


def shrink(bundle: ModelBundle, masks: Masks,
           buffers: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A new ``nn.Module`` without the neurons ``masks`` removes (a neuron plan's masks);
    ``buffers`` (e.g. recalibrated BatchNorm statistics) replace the model's first."""
    import torch_pruning as tp

    if masks.granularity == "heads":
        return shrink_heads(bundle, masks)
    if masks.granularity == "blocks":
        return shrink_blocks(bundle, masks, buffers)
    if masks.granularity != "neurons":
        raise ModelError("Only a neuron, heads or blocks plan makes the model smaller; a "
                         "weight plan keeps every tensor's shape (export the pruned weights "
                         "instead).")
    modules = dict(bundle.model.named_modules())
    if not all(isinstance(modules.get(la.name), (nn.Linear, nn.Conv2d)) for la in bundle.layers):
        return shrink_graph(bundle, masks, buffers)
    model = copy.deepcopy(bundle.model).eval()
    with torch.no_grad():  # merged neurons: their outgoing weights already moved to a twin
        for name, value in masks.updates.items():
            model.get_parameter(name).copy_(value)
        for name, value in (buffers or {}).items():
            model.get_buffer(name).copy_(value)
    modules = dict(model.named_modules())
    example = torch.zeros((1, *bundle.input_shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        for group in bundle.group_names:
            first = bundle.group(group)[0]
            removed = masks.removed_neurons.get(first.name)
            if removed is None or removed.numel() == 0:
                continue
            module = modules[first.name]
            prune_out = (tp.prune_conv_out_channels if isinstance(module, nn.Conv2d)
                         else tp.prune_linear_out_channels)
            graph.get_pruning_group(module, prune_out, removed.tolist()).prune()
    return model


def shrink_graph(bundle: ModelBundle, masks: Masks,
                 buffers: Mapping[str, torch.Tensor] | None = None) -> torch.fx.GraphModule:
    """:func:`shrink` on a copy of ``bundle``'s exported graph (any model, its Python
    definition not needed)."""
    with warnings.catch_warnings():  # copying an exported graph's pytree specs warns
        warnings.simplefilter("ignore", FutureWarning)
        module = copy.deepcopy(bundle.program.module)
    with torch.no_grad():
        for name, value in masks.updates.items():
            module.get_parameter(name).copy_(value)
        for name, value in (buffers or {}).items():
            module.get_buffer(name).copy_(value)
    kept = {name: {dim: keep.nonzero().flatten() for dim, keep in dims.items()}
            for name, dims in masks.kept_dims.items()}
    shapes = node_shapes(bundle.program, torch.zeros((1, *bundle.input_shape)))
    for node in module.graph.nodes:
        if node.op != "call_function":
            continue
        weight = node.args[1] if len(node.args) > 1 else None
        rows = kept.get(getattr(weight, "target", None), {}).get(0)
        if node.target is aten.batch_norm.default and rows is not None:
            for stat in node.args[3:5]:
                if isinstance(stat, torch.fx.Node) and stat.op == "get_attr":
                    kept[stat.target] = {0: rows}
        elif node.target is aten.conv2d.default and rows is not None and conv_groups(node) != 1:
            node.args = (*node.args[:6], rows.numel())  # depthwise: one group per channel
        elif node.target in FLATTEN_OPS and channel_flatten(shapes, node):
            node.target, node.args, node.kwargs = aten.flatten.using_ints, (node.args[0], 1), {}
    for name, dims in kept.items():
        _cut(module, name, dims)
    module.recompile()
    return module


def shrink_heads(bundle: ModelBundle, masks: Masks) -> nn.Module:
    """A copy of ``bundle.model`` without the attention heads ``masks`` removes: each
    attention's query, key and value lose the heads' rows and its output projection their
    columns, as ``transformers``' head pruning cuts them, and the attention's head count
    follows (:class:`~explorer.groups.HeadGroup`)."""
    model = copy.deepcopy(bundle.model).eval()
    for name, dims in masks.kept_dims.items():
        _cut(model, name, {dim: keep.nonzero().flatten() for dim, keep in dims.items()})
    for unit, removed in masks.removed_heads.items():
        group = bundle.head_group(unit)
        attention = model.get_submodule(group.module)
        attention.num_attention_heads = group.heads - removed.numel()
        attention.all_head_size = attention.num_attention_heads * group.head_dim
        for layer in group.layers:
            linear = model.get_submodule(layer)
            linear.out_features, linear.in_features = linear.weight.shape
    return model


def shrink_blocks(bundle: ModelBundle, masks: Masks,
                  buffers: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A copy of ``bundle.model`` without the blocks ``masks`` drops: each becomes a
    :class:`PassThrough`, so what follows reads the block's input, as in the masked graph;
    ``buffers`` of the modules that remain replace theirs."""
    model = copy.deepcopy(bundle.model).eval()
    for name in masks.dropped_blocks:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, leaf, PassThrough())
    kept = dict(model.named_buffers())
    with torch.no_grad():
        for name, value in (buffers or {}).items():
            if name in kept:
                kept[name].copy_(value)
    return model


class PassThrough(nn.Module):
    """A dropped block: returns its first input (other arguments, such as an attention
    mask, are ignored); no parameters, no FLOPs."""

    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return x


def _cut(module: nn.Module, name: str, dims: Mapping[int, torch.Tensor]) -> None:
    """Replace tensor ``name`` of ``module`` by its entries ``dims`` keeps (dim -> indices)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    value = getattr(owner, leaf).detach()
    for dim, index in dims.items():
        value = value.index_select(dim, index)
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(value.clone())
    else:
        owner._buffers[leaf] = value.clone()

