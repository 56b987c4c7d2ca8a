"""The model as a graph of ATen operations: what can be pruned, and how to run it cheaply.

Every model is turned into a ``torch.export`` program (an fx graph of ATen ops whose
parameters are ``get_attr`` nodes named as in ``model.state_dict()``). On that graph we find

* the prunable layers (``aten.linear`` / ``aten.conv2d`` with a weight parameter), in
  execution order, with their dense FLOPs per sample;
* (in :mod:`explorer.groups`) which layers' neurons are coupled, and which parameter slices
  follow them (BatchNorm entries, the next layers' input columns);

and we run the graph node by node with parameters swapped in (never written into the
model; on a GPU, every tensor it reads is swapped for a copy there), optionally resuming
from a cached state so that only the part of the network after the first changed
parameter is recomputed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import fx
from torch.fx.node import map_arg

from explorer.errors import ModelError, short

aten = torch.ops.aten
LAYER_OPS = {aten.linear.default: "linear", aten.conv2d.default: "conv2d"}
ACTIVATION_OPS = {
    aten.relu.default, aten.gelu.default, aten.silu.default, aten.sigmoid.default,
    aten.tanh.default, aten.leaky_relu.default, aten.hardtanh.default, aten.elu.default,
    aten.hardswish.default, aten.hardsigmoid.default, aten.mish.default, aten.softplus.default,
}
# Ops that keep the channel axis (dim 1) and act on each channel separately.
CHANNELWISE_OPS = ACTIVATION_OPS | {
    aten.dropout.default, aten.max_pool2d.default, aten.avg_pool2d.default,
    aten.adaptive_avg_pool2d.default, aten.clone.default, aten.contiguous.default,
    aten.batch_norm.default,
}
FLATTEN_OPS = {aten.flatten.using_ints, aten.view.default, aten.reshape.default}


@dataclass(frozen=True)
class Dependent:
    """A parameter slice that follows a layer's output neurons.

    Neuron ``i`` of the layer owns entries ``[offset + i * repeat, offset + (i + 1) * repeat)``
    along ``dim`` of ``param`` (``repeat`` > 1 where a flatten turns each channel into H*W
    features; ``offset`` > 0 where a concatenation puts other channels first).
    """

    param: str
    dim: int
    repeat: int = 1
    offset: int = 0

    def spread(self, keep: torch.Tensor, size: int) -> torch.Tensor:
        """The keep-vector (``size``,) along :attr:`dim` for a group's ``keep`` (neurons,):
        each neuron's entries follow it, entries of other channels are kept."""
        full = torch.ones(size, dtype=torch.bool)
        block = keep.repeat_interleave(self.repeat)
        full[self.offset:self.offset + block.numel()] = block
        return full


@dataclass(frozen=True)
class Layer:
    """A prunable layer: a linear or 2-D convolution with a weight parameter."""

    name: str
    kind: str
    weight: str
    bias: str | None
    weight_shape: tuple[int, ...]
    flops: int  # dense FLOPs per input sample, 2 per multiply-add
    node: str  # name of the graph node that applies the layer
    activation_node: str  # node whose output is this layer's activation (after its nonlinearity)
    dependents: tuple[Dependent, ...] = ()  # what follows its neurons (empty if not prunable)
    neuron_reason: str | None = None  # why its neurons cannot be removed, if they cannot
    group: str | None = None  # the neuron group it belongs to (its first member's name)

    @property
    def neurons(self) -> int:
        return self.weight_shape[0]

    @property
    def neuron_prunable(self) -> bool:
        return self.neuron_reason is None


@dataclass
class RunState:
    """The value of every graph node from one run, and the parameter keys it was run with."""

    values: list
    keys: dict[str, object]
    nbytes: int
    starts: tuple[int, ...] | None = None  # a compact state: the nodes a run may resume at


@dataclass
class Program:
    """An exported model graph that runs with swapped-in parameters and can resume mid-way."""

    module: fx.GraphModule
    nodes: list[fx.Node] = field(init=False)
    first_use: dict[str, int] = field(init=False)
    resumable: bool = field(init=False)
    starts: tuple[int, ...] = field(init=False)  # where a compact state's run may resume
    read_until: list[int] = field(init=False)  # per node: the last start that reads it

    def __post_init__(self) -> None:
        self.nodes = list(self.module.graph.nodes)
        self._index = {n: i for i, n in enumerate(self.nodes)}
        self._by_name = {n.name: i for i, n in enumerate(self.nodes)}
        self.first_use = {}
        for n in self.nodes:
            if n.op == "get_attr":
                users = [self._index[u] for u in n.users]
                self.first_use[n.target] = min(users) if users else len(self.nodes)
        # A node that writes into its input would corrupt cached values: no resuming then.
        self.resumable = not any(
            getattr(getattr(n.target, "_schema", None), "is_mutable", False)
            for n in self.nodes
            if n.op == "call_function"
        )
        # Runs resume at a linear or convolution that reads a parameter, or at the output.
        self.starts = tuple(sorted(
            {i for i in self.first_use.values()
             if i < len(self.nodes) and self.nodes[i].target in LAYER_OPS}
            | {len(self.nodes) - 1}))
        self.read_until = self._read_until()
        # Factory ops (zeros, arange, ...) that torch.export pinned to the tracing device.
        self._pinned = {i for i, n in enumerate(self.nodes)
                        if isinstance(n.kwargs.get("device"), torch.device)}

    def _read_until(self) -> list[int]:
        """For each node, the last of :attr:`starts` that a run resuming there reads its
        value at (-1: none). A compact state with horizon h keeps the values whose entry is
        >= h. A conv's raw output, read only by its batch norm, is -1: a run that would
        start at the norm starts at the conv."""
        needed = []
        for i, node in enumerate(self.nodes):
            last = max((self._index[u] for u in node.users), default=-1)
            before = bisect.bisect_right(self.starts, last) - 1  # the last start <= last
            read = (node.op != "get_attr" and before >= 0 and self.starts[before] > i)
            needed.append(self.starts[before] if read else -1)
        return needed

    def resume_index(self, keys: Mapping[str, object], state: RunState) -> int:
        """First node to recompute when parameters have ``keys`` and ``state`` had its own."""
        changed = {p for p in set(keys) | set(state.keys) if keys.get(p) != state.keys.get(p)}
        first = min((self.first_use.get(p, 0) for p in changed), default=len(self.nodes))
        if state.starts is None:
            return first
        at = bisect.bisect_right(state.starts, first) - 1  # the last start <= first
        return state.starts[at] if at >= 0 else 0

    def params(self) -> dict[str, torch.Tensor]:
        return dict(self.module.named_parameters())

    def index_of(self, name: str) -> int:
        """The position of the node called ``name`` (a layer's ``node`` or
        ``activation_node``) in :attr:`nodes` and in a state's values."""
        return self._by_name[name]

    def tensors_on(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Every tensor the graph reads by name (parameters, buffers, constants) copied to
        ``device``: the ``overrides`` that run it there while ``module`` stays where it is.

        A module called as a whole would read its own tensors where they are: one that
        holds any is a ModelError (the guard module ``torch.export`` adds holds none).
        """
        read = {n.target: _fetch_attr(self.module, n.target) for n in self.nodes
                if n.op in ("get_attr", "call_module")}
        for target, found in read.items():
            if isinstance(found, torch.nn.Module) and _holds_tensors(found):
                raise ModelError(
                    f"The model's graph calls the module {short(target)} as a whole, so it "
                    f"cannot run on {device.type}: evaluate it on the CPU (--device cpu)."
                )
        return {target: found.to(device) for target, found in read.items()
                if isinstance(found, torch.Tensor)}

    def run(
        self,
        x: torch.Tensor,
        overrides: Mapping[str, torch.Tensor] | None = None,
        keys: Mapping[str, object] | None = None,
        resume: RunState | None = None,
        keep: bool = False,
        device: torch.device | None = None,
        horizon: int | None = None,
        norms: Mapping[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
        norm_momentum: float = 0.0,
    ) -> tuple[torch.Tensor, RunState | None]:
        """Run the graph on ``x`` (N, ...) with ``overrides`` replacing named parameters.

        ``keys`` name the version of each overridden parameter; with ``resume``, nodes
        before the first consumer of a parameter whose key changed are taken from
        ``resume`` instead of recomputed. ``device``: where ops that make new tensors
        (zeros, arange) make them, for a run whose ``x`` and :meth:`tensors_on` overrides
        are there (None: where the graph was traced). Returns the logits (N, classes) and,
        with ``keep``, the new state to resume from next time: every node's value, or with
        a ``horizon`` (a compact state) only those a run resuming at a start >= ``horizon``
        reads (see :meth:`_read_until`; a change before the horizon then runs whole).
        A state's ``nbytes`` leaves out the parameters: they are the model's, not its.
        ``norms`` maps the position of an ``aten.batch_norm`` node to a (mean, variance)
        pair that it uses as running statistics in training mode with ``norm_momentum``:
        it normalises with the batch's statistics and updates the pair in place
        (:mod:`explorer.batchnorm`); every other node runs as exported.
        """
        overrides = overrides or {}
        keys = dict(keys or {})
        start = self.resume_index(keys, resume) if resume is not None else 0
        values: list = [None] * len(self.nodes)
        if start:
            values[:start] = resume.values[:start]
        index = self._index
        output = None
        with torch.no_grad():
            for i, node in enumerate(self.nodes):
                if node.op == "get_attr":
                    values[i] = overrides.get(node.target)
                    if values[i] is None:
                        values[i] = _fetch_attr(self.module, node.target)
                    continue
                if i < start and node.op != "output":
                    continue
                args = map_arg(node.args, lambda n: values[index[n]])
                kwargs = map_arg(node.kwargs, lambda n: values[index[n]])
                if node.op == "placeholder":
                    values[i] = x
                elif node.op == "call_function":
                    if device is not None and i in self._pinned:
                        kwargs = {**kwargs, "device": device}
                    if norms is not None and i in norms:  # (input, w, b, mean, var, training,
                        args = (*args[:3], *norms[i], True, norm_momentum, *args[7:])  # ...)
                    values[i] = node.target(*args, **kwargs)
                elif node.op == "call_module":
                    values[i] = self.module.get_submodule(node.target)(*args, **kwargs)
                elif node.op == "call_method":
                    values[i] = getattr(args[0], node.target)(*args[1:], **kwargs)
                elif node.op == "output":
                    output = args[0]
        logits = logits_of(output)
        state = None
        if keep:
            starts = None
            if horizon is not None:
                values = [v if last >= horizon else None
                          for v, last in zip(values, self.read_until, strict=True)]
                starts = tuple(i for i in self.starts if i >= horizon)
            nbytes = sum(v.nbytes for v, n in zip(values, self.nodes, strict=True)
                         if isinstance(v, torch.Tensor) and n.op != "get_attr")
            state = RunState(values, keys, nbytes, starts)
        return logits, state


def _fetch_attr(module: torch.nn.Module, target: str) -> torch.Tensor:
    obj = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _holds_tensors(module: torch.nn.Module) -> bool:
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def logits_of(output: object) -> torch.Tensor:
    """A model's logits: its output, unwrapped from one-element tuples or lists (an exported
    graph returns its single output that way); a ModelError for anything else."""
    while isinstance(output, (tuple, list)) and len(output) == 1:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise ModelError(
            "The model must return a single tensor of logits (N, classes); "
            f"it returned {type(output).__name__}."
        )
    return output


def node_shapes(program: Program, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor node's value (by node name) in a run on ``example``."""
    _, state = program.run(example, keep=True)
    return {n.name: tuple(v.shape) for n, v in zip(program.nodes, state.values, strict=True)
            if isinstance(v, torch.Tensor)}


def analyse(program: Program, shapes: Mapping[str, tuple[int, ...]]) -> list[Layer]:
    """The prunable layers of ``program`` in execution order, with ``shapes`` from a run on
    one sample (:func:`node_shapes`). Which neurons they may lose is found afterwards, on
    the whole graph (:func:`explorer.groups.graph_groups`)."""
    params = program.params()
    layers = []
    for node in program.nodes:
        kind = LAYER_OPS.get(node.target) if node.op == "call_function" else None
        if kind is None:
            continue
        weight = _param_name(node.args[1], params)
        if weight is None:
            continue
        bias_name = _param_name(node.args[2], params) if len(node.args) > 2 else None
        w_shape = tuple(params[weight].shape)
        layers.append(Layer(
            name=weight.removesuffix(".weight"), kind=kind, weight=weight, bias=bias_name,
            weight_shape=w_shape, node=node.name, activation_node=_activation_node(node).name,
            flops=_layer_flops(kind, w_shape, shapes[node.args[0].name], shapes[node.name]),
        ))
    if not layers:
        found = "; ".join(f"{op} ({', '.join(owners)})"
                          for op, owners in _unsupported_ops(program, params).items())
        raise ModelError(
            "The model has no prunable layer: Pruning Explorer prunes nn.Linear and nn.Conv2d "
            "weights, and found none in the exported graph."
            + (f" Its parameters are used by operations it does not support: {found}."
               if found else "")
        )
    return layers


def _unsupported_ops(
    program: Program, params: Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Operations that read parameters but are not prunable layers (conv1d, lstm, ...), each
    with the modules owning those parameters. BatchNorm and the like are supported: left out."""
    found: dict[str, dict[str, None]] = {}
    for node in program.nodes:
        if node.op != "call_function" or node.target in {*LAYER_OPS, *CHANNELWISE_OPS}:
            continue
        owners = [n.target.rsplit(".", 1)[0] for n in node.all_input_nodes
                  if _param_name(n, params) is not None]
        if owners:
            op = getattr(getattr(node.target, "overloadpacket", None), "__name__", node.name)
            found.setdefault(op, {}).update(dict.fromkeys(owners))
    return {op: list(owners) for op, owners in found.items()}


def _param_name(arg: object, params: Mapping[str, torch.Tensor]) -> str | None:
    """The parameter name ``arg`` reads, if it is a ``get_attr`` node of a parameter."""
    if isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target in params:
        return arg.target
    return None


def conv_groups(node: fx.Node) -> int:
    """The ``groups`` argument of an ``aten.conv2d`` node."""
    return int(node.args[6]) if len(node.args) > 6 else int(node.kwargs.get("groups", 1))


def _layer_flops(kind: str, w_shape: tuple, in_shape: tuple, out_shape: tuple) -> int:
    """Dense FLOPs per sample, 2 per multiply-add, as ``FlopCounterMode`` counts them."""
    if kind == "linear":
        rows = math.prod(in_shape[1:-1])
        return 2 * rows * w_shape[0] * w_shape[1]
    c_out, c_in_per_group, kh, kw = w_shape
    return 2 * c_out * math.prod(out_shape[2:]) * c_in_per_group * kh * kw


def _activation_node(node: fx.Node) -> fx.Node:
    """The node after ``node``'s nonlinearity (through BatchNorm), or ``node`` itself."""
    current = node
    while len(current.users) == 1:
        (user,) = current.users
        if user.op != "call_function" or user.target not in CHANNELWISE_OPS:
            break
        if user.target in ACTIVATION_OPS:
            return user
        if user.target is not aten.batch_norm.default:
            break
        current = user
    return node
