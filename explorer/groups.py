"""Coupled neurons: which output channels must be removed together, found on the exported graph.

Channels joined by a residual addition cannot be removed from one layer alone: the model
would break or compute something else. Like Torch-Pruning's dependency graph (Fang et al.
2023, "DepGraph"), we follow each prunable layer's output channels through the ``torch.export``
graph (ATen ops) to every parameter slice that must follow them, and join the layers whose
channels meet in one group. Working on the graph, not on ``nn.Module`` objects, gives
uploads (.pt2 programs, converted TorchScript) the same groups as the demo architectures;
on those, the groups equal Torch-Pruning's (tests/engine/test_graph_groups.py).

Channels are followed in one pass in execution order. Each tensor carries a *label*: the
list of :class:`Segment` s along its channel axis, each naming the layer whose channels
it holds, how many, and how many features each channel has become (a flatten turns a channel
into a block of H*W features). The channel axis is dim 1 (a convolution's channels, a linear
layer's features on (N, features)) or the last one (a linear layer's features on (N, tokens,
features), as in a transformer's feed-forward block). What the pass understands:

* BatchNorm, activations, dropout, pooling, mean over spatial axes, a whole slice, a new
  axis after the channels: channels kept (a BatchNorm's weight and bias follow them);
* flatten / view / reshape from (N, C, ...) to (N, C * ...): a channel becomes a block;
* a view / reshape that keeps the last axis of a tensor whose features are there: kept;
* add, sub, mul, div of two tensors: their layers' channels are joined into one group
  (a squeeze-and-excitation gate joins the layer it scales); with a scalar: kept;
* concatenation along the channels: the segments follow each other (offsets);
* a depthwise convolution (one filter per channel): its filters follow its input's channels,
  and it joins their group;
* a linear or convolution that reads the tensor: its input columns follow.

Anything else that a layer's channels reach (a split, an unknown op, the model's output, a
tensor of unknown origin added to them) makes that layer's group unprunable with a reason:
never a wrong group.

Attention heads (:class:`HeadGroup`) are coupled slices too, and blocks (:class:`Block`:
a transformer layer, or a residual block whose shortcut is the identity) are units dropped
whole; both are found on the model's own modules instead. A block is dropped in the graph
by a gate traced into it (:class:`gated_blocks`), which the analysis above sees as joining
the block's input and output channels, as its residual addition already does.

A multi-head self-attention (Vaswani et al. 2017) splits its query, key and value
projections into H heads of d = all_head_size / H features: head h owns rows
``[h d, (h + 1) d)`` of the query, key and value weights and biases, and columns
``[h d, (h + 1) d)`` of the output projection. Zeroing those slices removes the head
exactly: its queries and keys are 0, so its attention is uniform over the tokens, but its
values are 0 too, so it passes nothing on, and the output projection no longer reads it.
The physically smaller model (fewer rows and columns, as ``transformers``' head pruning
cuts them with ``prune_linear_layer``; :mod:`explorer.export.shrink`) computes the same.

Heads are found on a model's Python definition, in the layout of BERT and its relatives in
``transformers`` (RoBERTa, MiniLM, ELECTRA, ...): a module with ``query``, ``key`` and
``value`` linear children and ``num_attention_heads`` / ``attention_head_size`` attributes,
whose parent has ``output.dense``, the output projection. A model known only as an exported
graph (an upload) gets no heads: its head split is a reshape that nothing here follows (its
query, key and value layers say so), though its feed-forward neurons are found as any
linear layer's on (N, tokens, features).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import fx, nn
from torch.utils.flop_counter import FlopCounterMode

from explorer.graph import (
    ACTIVATION_OPS,
    CHANNELWISE_OPS,
    FLATTEN_OPS,
    Dependent,
    Layer,
    conv_groups,
)

aten = torch.ops.aten
JOIN_OPS = {aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor,
            aten.add.Scalar, aten.sub.Scalar, aten.mul.Scalar, aten.div.Scalar}
OUTPUT_REASON = "its output is the model's output (its neurons are the classes)"
# Ops that keep features on the last axis where they are (besides the activations).
LAST_AXIS_COPIES = {aten.dropout.default, aten.clone.default, aten.contiguous.default,
                    aten.alias.default, aten.detach.default}


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


@dataclass(frozen=True)
class Segment:
    """``count`` channels of layer ``root`` (None: of no prunable layer), each spread over
    ``repeat`` consecutive entries of the channel axis."""

    root: str | None
    count: int
    repeat: int = 1

    @property
    def width(self) -> int:
        return self.count * self.repeat


Label = tuple[Segment, ...]


class _Trace:
    """The state of one pass: labels per node, and per layer (a union-find over layers)
    its dependents, its attached depthwise layers and why it cannot lose neurons."""

    def __init__(self, layers: dict[str, Layer], shapes: dict[str, tuple]) -> None:
        self.layers, self.shapes = layers, shapes
        self.labels: dict[str, Label] = {}
        self.last: set[str] = set()  # nodes of rank > 2 whose channels are the last axis
        self.parent = {name: name for name in layers}
        self.deps: dict[str, list[Dependent]] = {name: [] for name in layers}
        self.members: dict[str, list[str]] = {name: [name] for name in layers}
        self.blocked: dict[str, str] = {}
        self.consumed: set[str] = set()

    def find(self, name: str) -> str:
        while self.parent[name] != name:
            name = self.parent[name]
        return name

    def join(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        self.deps[a] += self.deps.pop(b)
        self.members[a] += self.members.pop(b)
        self.consumed |= {a} if b in self.consumed else set()
        if b in self.blocked:
            self.blocked.setdefault(a, self.blocked.pop(b))

    def label(self, node: str, label: Label, last: bool = False) -> None:
        """``node``'s output carries ``label`` along dim 1, or with ``last`` along its last
        axis (the same as dim 1 on a tensor of rank 2)."""
        self.labels[node] = label
        if last and len(self.shapes.get(node, ())) > 2:
            self.last.add(node)

    def block(self, label: Label | None, reason: str) -> None:
        for seg in label or ():
            if seg.root is not None:
                self.blocked.setdefault(self.find(seg.root), reason)

    def follow(self, label: Label, param: str | None, dim: int) -> None:
        """``param``'s entries along ``dim`` follow ``label``'s channels, segment by segment."""
        offset = 0
        for seg in label:
            if seg.root is not None and param is not None:
                self.deps[self.find(seg.root)].append(Dependent(param, dim, seg.repeat, offset))
            offset += seg.width


def graph_groups(
    nodes: list[fx.Node], layers: list[Layer], shapes: dict[str, tuple],
    params: set[str],
) -> tuple[dict[str, NeuronGroup], dict[str, str]]:
    """Groups of the graph's ``layers`` by layer name, and why each other layer cannot lose
    neurons. ``nodes`` in execution order; ``shapes`` by node name from a run on one sample;
    ``params`` the parameter names (a layer reads its weight as a parameter)."""
    by_node = {la.node: la for la in layers}
    trace = _Trace({la.name: la for la in layers}, shapes)
    for node in nodes:
        if node.op == "output":
            for arg in node.all_input_nodes:
                trace.block(trace.labels.get(arg.name), OUTPUT_REASON)
        elif node.op == "call_function":
            _step(trace, node, by_node.get(node.name), params)
    return _collect(trace, layers)


def _step(trace: _Trace, node: fx.Node, layer: Layer | None, params: set[str]) -> None:
    """Label ``node``'s output from its inputs' labels, recording what follows them."""
    inputs = {n.name: trace.labels[n.name] for n in node.all_input_nodes
              if trace.labels.get(n.name)}
    target = node.target
    first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    alone = first is not None and list(inputs) == [first.name]  # only the first arg labelled
    if layer is not None:
        _layer_step(trace, node, layer, inputs)
    elif not inputs:
        return
    elif alone and first.name in trace.last:
        _last_axis_step(trace, node, inputs[first.name])
    elif any(name in trace.last for name in inputs) and target not in JOIN_OPS:
        _unfollowed(trace, node, inputs)
    elif target in CHANNELWISE_OPS and alone:
        label = inputs[first.name]
        if target is aten.batch_norm.default:
            affine = [a.target for a in node.args[1:3] if _is_param(a, params)]
            if len(affine) < 2:
                trace.block(label, f"it feeds a BatchNorm without affine parameters ({node.name})")
            for name in affine:
                trace.follow(label, name, 0)
        trace.labels[node.name] = label
    elif target in FLATTEN_OPS and alone and channel_flatten(trace.shapes, node):
        spread = math.prod(trace.shapes[first.name][2:])
        trace.labels[node.name] = tuple(Segment(s.root, s.count, s.repeat * spread)
                                        for s in inputs[first.name])
    elif alone and _keeps_axis(trace.shapes, node, last=False):
        trace.labels[node.name] = inputs[first.name]
    elif target in JOIN_OPS:
        _join_step(trace, node, inputs)
    elif target is aten.where.self and _is_gate(node.args[0]):
        _join_step(trace, node, inputs, node.args[1:3])
    elif target is aten.cat.default:
        _cat_step(trace, node, inputs)
    else:
        _unfollowed(trace, node, inputs)


def _unfollowed(trace: _Trace, node: fx.Node, inputs: dict[str, Label]) -> None:
    """The channels reaching ``node`` go where the analysis cannot follow them."""
    target = node.target
    op = getattr(getattr(target, "overloadpacket", None), "__name__", None) or getattr(
        target, "__name__", str(target))
    if target is operator.getitem:
        why = f"its output is split by {node.name}"
    else:
        why = (f"its channels reach {op} ({node.name}), an operation the graph analysis "
               "does not follow")
    for label in inputs.values():
        trace.block(label, why)


def _last_axis_step(trace: _Trace, node: fx.Node, label: Label) -> None:
    """One op on a tensor whose features are its last axis (N, ..., features): an
    elementwise activation, dropout or copy, a view that keeps that axis, a mean over other
    axes, a whole slice, an add or product with a scalar keep them there."""
    target, args = node.target, node.args
    before, after = trace.shapes[args[0].name], trace.shapes.get(node.name, ())
    keeps = (target in ACTIVATION_OPS or target in LAST_AXIS_COPIES
             or (target in FLATTEN_OPS and after and after[-1] == before[-1]
                 and math.prod(after) == math.prod(before))
             or _keeps_axis(trace.shapes, node, last=True))
    if target in JOIN_OPS:
        _join_step(trace, node, {args[0].name: label})
    elif keeps:
        trace.label(node.name, label, last=True)
    elif (target in FLATTEN_OPS and len(after) == len(before) + 1
          and after[:-2] == before[:-1] and after[-2] * after[-1] == before[-1]):
        trace.block(label, f"its features are split into {after[-2]} attention heads of "
                    f"{after[-1]} ({node.name}): heads are found on a model's Python "
                    "definition only, not on an uploaded graph")
    else:
        _unfollowed(trace, node, {args[0].name: label})


def _is_gate(node: object) -> bool:
    """Whether ``node`` reads a block's gate (:class:`gated_blocks`): the whole tensor one
    of two, never split by channel."""
    return (isinstance(node, fx.Node) and node.op == "get_attr"
            and str(node.target).rpartition(".")[2] == BLOCK_GATE)


def _layer_step(trace: _Trace, node: fx.Node, layer: Layer, inputs: dict[str, Label]) -> None:
    source = node.args[0]
    label = inputs.get(source.name) if isinstance(source, fx.Node) else None
    rank = len(trace.shapes[source.name])
    if label and (source.name in trace.last) != (layer.kind == "linear" and rank > 2):
        trace.block(label, f"it feeds {layer.name} along another axis than its channels")
        label = None
    if set(inputs) - {source.name}:
        trace.block(tuple(s for n, lab in inputs.items() if n != source.name for s in lab),
                    f"its output becomes a weight of {layer.name}")
    groups = conv_groups(node)
    if layer.kind == "conv2d" and groups != 1:
        depthwise = groups == layer.weight_shape[0] == trace.shapes[source.name][1]
        if depthwise and label and len({s.root for s in label}) == 1 and label[0].root:
            trace.follow(label, layer.weight, 0)
            trace.follow(label, layer.bias, 0)
            trace.join(label[0].root, layer.name)
            trace.labels[node.name] = label
            return
        reason = (f"{layer.name} is a grouped convolution (groups={groups}), "
                  "not supported for neuron pruning")
        trace.block(label, f"its output feeds a grouped convolution ({layer.name}), "
                    "not supported")
        trace.blocked[layer.name] = (reason if not depthwise else
                                     f"{layer.name} is a depthwise convolution whose channels "
                                     "follow several layers, or none")
        return
    if label:
        trace.follow(label, layer.weight, 1)
        for seg in label:
            if seg.root is not None:
                trace.consumed.add(trace.find(seg.root))
    trace.follow(((Segment(layer.name, layer.neurons),)), layer.weight, 0)
    trace.follow(((Segment(layer.name, layer.neurons),)), layer.bias, 0)
    trace.label(node.name, (Segment(layer.name, layer.neurons),), last=layer.kind == "linear")


def _join_step(trace: _Trace, node: fx.Node, inputs: dict[str, Label],
               args: tuple | None = None) -> None:
    """add / sub / mul / div (or a block's gate choosing between ``args``): two labelled
    operands join their layers' channels; a factor without channels (a scalar, a
    per-sample value) keeps them."""
    out = trace.shapes[node.name]
    last = any(name in trace.last for name in inputs)  # the channels are the last axis
    operands = [a for a in (node.args[:2] if args is None else args) if isinstance(a, fx.Node)]
    wide = [a for a in operands
            if _channels(trace.shapes.get(a.name, ()), len(out), last) > 1]
    labels = [inputs.get(a.name) for a in wide]
    full = all(labels) and all(len(trace.shapes[a.name]) == len(out)
                               and (a.name in trace.last) == last for a in wide)
    if full and len(wide) == 1 and len(inputs) == 1:
        trace.label(node.name, labels[0], last)
    elif full and len(wide) == 2 and _aligned(labels[0], labels[1]):
        for a, b in zip(labels[0], labels[1], strict=True):
            if (a.root is None) != (b.root is None):
                trace.block(labels[0] + labels[1], f"its channels are joined by {node.name} "
                            "with channels no prunable layer produces")
            elif a.root is not None:
                trace.join(a.root, b.root)
        trace.label(node.name, labels[0], last)
    else:
        trace.block(tuple(s for lab in inputs.values() for s in lab),
                    f"its channels are joined by {node.name} with channels no prunable layer "
                    "produces, or laid out otherwise")


def _cat_step(trace: _Trace, node: fx.Node, inputs: dict[str, Label]) -> None:
    tensors, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
    rank = len(trace.shapes[node.name])
    if dim % rank != 1:
        trace.block(tuple(s for lab in inputs.values() for s in lab),
                    f"its output is concatenated along dimension {dim} ({node.name})")
        return
    label: list[Segment] = []
    for t in tensors:
        label.extend(inputs.get(t.name) or (Segment(None, trace.shapes[t.name][1]),))
    trace.labels[node.name] = tuple(label)


def _collect(
    trace: _Trace, layers: list[Layer]
) -> tuple[dict[str, NeuronGroup], dict[str, str]]:
    order = {la.name: i for i, la in enumerate(layers)}
    groups: dict[str, NeuronGroup] = {}
    reasons: dict[str, str] = {}
    for root, members in trace.members.items():
        members = sorted(members, key=order.__getitem__)
        reason = trace.blocked.get(root)
        if reason is None and root not in trace.consumed:
            reason = "no later layer consumes its output"
        if reason is not None:
            reasons.update(dict.fromkeys(members, reason))
            continue
        neurons = trace.layers[members[0]].neurons
        group = NeuronGroup(members[0], tuple(members), neurons,
                            tuple(dict.fromkeys(trace.deps[root])))
        groups.update(dict.fromkeys(members, group))
    return groups, reasons


def _aligned(a: Label, b: Label) -> bool:
    return [(s.count, s.repeat) for s in a] == [(s.count, s.repeat) for s in b]


def _is_param(arg: object, params: set[str]) -> bool:
    return isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target in params


def channel_flatten(shapes: Mapping[str, tuple[int, ...]], node: fx.Node) -> bool:
    """Whether ``node`` reshapes (N, C, ...) into (N, C * ...), each channel a block."""
    source = node.args[0] if node.args else None
    before = shapes.get(source.name) if isinstance(source, fx.Node) else None
    after = shapes.get(node.name)
    if before is None or after is None or len(after) != 2 or len(before) < 2:
        return False
    return after[0] == before[0] and after[1] == math.prod(before[1:])


def _channels(shape: tuple, rank: int, last: bool = False) -> int:
    """How many channels a tensor of ``shape`` has when broadcast to ``rank`` dimensions,
    along dim 1 or (``last``) along the last axis."""
    if last:
        return shape[-1] if shape else 1
    at = 1 - (rank - len(shape))
    return shape[at] if 0 <= at < len(shape) else 1


def _keeps_axis(shapes: Mapping[str, tuple[int, ...]], node: fx.Node, last: bool) -> bool:
    """Whether ``node`` keeps its first argument's features where they are, on axis 1
    (channels) or, ``last``, on the last axis (a linear layer's features on (N, tokens,
    features)): a mean over axes other than the batch and the features, a slice that takes
    everything, or (channels) a new axis after them."""
    before, after = shapes[node.args[0].name], shapes.get(node.name, ())
    features = len(before) - 1 if last else 1
    if node.target is aten.mean.dim:
        dims = [d % len(before) for d in _dims(node.args[1])]
        return bool(dims) and all(d not in (0, features) for d in dims)
    if node.target is aten.slice.Tensor:
        return after == before
    return (not last and node.target is aten.unsqueeze.default
            and node.args[1] % len(after) > 1)


def _dims(arg: object) -> list[int]:
    """The dimensions a reduction's ``dim`` argument names (an int or a list)."""
    return [arg] if isinstance(arg, int) else list(arg or [])


HEAD_PARTS = ("query", "key", "value")


@dataclass(frozen=True)
class HeadGroup:
    """One self-attention's heads: what a ``heads`` plan scores and cuts as one unit.

    ``name`` is its query layer's name (a unit is named after its first layer, as a neuron
    group is); ``module`` the self-attention module; ``layers`` the query, key, value and
    output-projection layers. ``flops_per_head`` are the FLOPs per sample of one head's own
    products (scores ``Q K^T`` and the weighted values), which no layer counts.
    """

    name: str
    module: str
    layers: tuple[str, str, str, str]
    heads: int
    head_dim: int
    flops_per_head: int
    dependents: tuple[Dependent, ...]

    @property
    def output(self) -> str:
        """The output projection's layer name (its input columns are the heads' outputs)."""
        return self.layers[3]

    def rows(self, head: int) -> slice:
        """Head ``head``'s rows of the query, key and value (its columns of the output)."""
        return slice(head * self.head_dim, (head + 1) * self.head_dim)


def find_heads(model: nn.Module, layers: tuple[Layer, ...],
               flops: Mapping[str, int]) -> tuple[HeadGroup, ...]:
    """The attention heads of ``model`` (see the module docstring), in execution order.

    ``layers`` are the model's prunable layers; ``flops`` each module's FLOPs per sample
    (:func:`module_flops`), from which each attention's own products are counted. A model
    without the layout gets ``()``.
    """
    by_name = {la.name: la for la in layers}
    order = {la.name: i for i, la in enumerate(layers)}
    groups = []
    for name, module in attention_modules(model):
        parts = tuple(f"{name}.{part}" for part in HEAD_PARTS)
        parent = name.rpartition(".")[0]
        output = f"{parent}.output.dense" if parent else "output.dense"
        heads, dim = module.num_attention_heads, module.attention_head_size
        if not (all(p in by_name for p in parts) and output in by_name) \
                or any(by_name[p].neurons != heads * dim for p in parts) \
                or by_name[output].weight_shape[1] != heads * dim:
            continue
        query, key, value, out = (by_name[m] for m in (*parts, output))
        own = flops.get(name, 0) - sum(flops.get(m, 0) for m in parts)
        deps = tuple(dep for la in (query, key, value) for dep in (
            Dependent(la.weight, dim=0, repeat=dim),
            *([Dependent(la.bias, dim=0, repeat=dim)] if la.bias else [])))
        groups.append(HeadGroup(
            name=query.name, module=name, layers=(*parts, output), heads=heads, head_dim=dim,
            flops_per_head=own // heads,
            dependents=(*deps, Dependent(out.weight, dim=1, repeat=dim))))
    return tuple(sorted(groups, key=lambda g: order[g.name]))


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of each self-attention in the layout of the module docstring."""
    return [(name, module) for name, module in model.named_modules()
            if all(isinstance(getattr(module, part, None), nn.Linear) for part in HEAD_PARTS)
            and isinstance(getattr(module, "num_attention_heads", None), int)
            and isinstance(getattr(module, "attention_head_size", None), int)]


def module_flops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """FLOPs per sample of every module of ``model`` by name (one run of ``example``, a
    batch of one, under ``FlopCounterMode``)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(example)
    root = type(model).__name__ + "."
    return {name.removeprefix(root): int(sum(ops.values()))
            for name, ops in counter.get_flop_counts().items() if name.startswith(root)}


BLOCK_GATE = "block_kept"  # the boolean buffer each transformer block gets (True: it runs)


@dataclass(frozen=True)
class Block:
    """A block that a ``blocks`` plan may drop whole: a transformer layer, or a residual
    block whose shortcut is the identity (:func:`block_modules`).

    ``name`` is its module; ``layers`` the prunable layers inside it; ``gate`` the boolean
    buffer that decides, in the exported graph, whether the block's output is its own
    (True) or its input passed on unchanged (False); ``flops`` its FLOPs per sample.
    """

    name: str
    layers: tuple[str, ...]
    gate: str
    flops: int


def block_modules(model: nn.Module, example: torch.Tensor) -> list[str]:
    """The blocks of ``model`` that a ``blocks`` plan may drop, in module order: each entry
    of a ``ModuleList`` that holds a self-attention of the module docstring's layout (BERT's
    ``encoder.layer.i``), and each residual block in torchvision's layout (a ``downsample``
    attribute) whose shortcut is the identity (``downsample`` None), so that dropping it
    passes its input on. A candidate whose output is not shaped as its input (checked on
    ``example``) is not one."""
    attentions = [name for name, _ in attention_modules(model)]
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList):
            for i, _ in enumerate(module):
                block = f"{name}.{i}" if name else str(i)
                if any(a.startswith(block + ".") for a in attentions):
                    found.append(block)
        elif name and hasattr(module, "downsample") and module.downsample is None:
            found.append(name)
    if not found:
        return []
    shapes: dict[str, bool] = {}

    def same(block: str):
        def hook(_, args, output):
            shapes[block] = (isinstance(output, torch.Tensor) and bool(args)
                             and isinstance(args[0], torch.Tensor)
                             and output.shape == args[0].shape)
        return hook

    hooks = [model.get_submodule(b).register_forward_hook(same(b)) for b in found]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return [b for b in found if shapes.get(b)]


class gated_blocks:
    """Within ``with``: each block's output is ``where(gate, output, input)``, so that the
    graph ``torch.export`` traces then can drop a block by overriding its gate with False
    (the input passes on exactly; with True the output is exactly the block's). The gate,
    :data:`BLOCK_GATE`, is a boolean buffer (True) of the block; on exit the hooks and the
    buffers leave the model, which is as it was (the traced graph keeps its own gates)."""

    def __init__(self, model: nn.Module, blocks: list[str]) -> None:
        self.modules = [model.get_submodule(b) for b in blocks]
        self.hooks: list = []

    def __enter__(self) -> None:
        for module in self.modules:
            module.register_buffer(BLOCK_GATE, torch.tensor(True))
            self.hooks.append(module.register_forward_hook(_gate))

    def __exit__(self, *exc: object) -> None:
        for hook in self.hooks:
            hook.remove()
        for module in self.modules:
            module._buffers.pop(BLOCK_GATE, None)


def _gate(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return torch.where(getattr(module, BLOCK_GATE), output, args[0])


def find_blocks(blocks: list[str], layers: tuple[Layer, ...],
                flops: Mapping[str, int]) -> tuple[Block, ...]:
    """The :class:`Block` s named ``blocks`` with their layers and FLOPs."""
    return tuple(Block(name=b, layers=tuple(la.name for la in layers
                                            if la.name.startswith(b + ".")),
                       gate=f"{b}.{BLOCK_GATE}", flops=flops.get(b, 0)) for b in blocks)
