"""Criteria that look at data: activation statistics and first-order Taylor scores.

Each needs the validation set (``ScoreContext.data``) and raises :class:`PlanError` without
it. Activations are reduced batch by batch as :func:`explorer.activations.neuron_totals`
streams them (one run of the exported program; the activation is the output of
``Layer.activation_node``, after the layer's nonlinearity where it has one of its own): a
score holds per-neuron sums, never every image's activations. Gradients are taken on a private
deep copy of ``bundle.model`` whose parameters do not require grad (the weight form
re-enables one weight): the shared model is never put in train mode, never hooked and
never given a ``.grad``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import fx, nn

from explorer.activations import neuron_totals, neurons_first
from explorer.errors import PlanError
from explorer.graph import Layer, logits_of

if TYPE_CHECKING:
    from explorer.bundle import ModelBundle
    from explorer.criteria.base import ScoreContext
    from explorer.data import ValidationSet

BATCH_SIZE = 512


def needs_data(ctx: ScoreContext, name: str) -> ValidationSet:
    """``ctx.data``, or a :class:`PlanError` saying that criterion ``name`` needs it."""
    if ctx.data is None:
        raise PlanError(
            f"The '{name}' criterion needs validation data: it scores what the network does "
            "on inputs. Load a validation set, or choose a criterion computed from the "
            "weights alone (magnitude, l1, l2, redundancy, random)."
        )
    return ctx.data


def needs_labels(ctx: ScoreContext, name: str) -> ValidationSet:
    """:func:`needs_data`, with labels: a criterion that takes the loss's gradient."""
    data = needs_data(ctx, name)
    if not data.labelled:
        raise PlanError(
            f"The '{name}' criterion takes the gradient of the loss, which needs labels; "
            f"{data.name} has none (x alone). Choose a criterion that needs no labels "
            "(magnitude, l1, l2, activation, apoz, redundancy, random)."
        )
    return data


@dataclass(frozen=True)
class MeanActivation:
    """Mean |a| per neuron on the validation data; the least active neurons go first.

    The "mean activation" criterion of Molchanov et al. 2017 ("Pruning Convolutional
    Neural Networks for Resource Efficient Inference", ICLR, arXiv:1611.06440, Sec. 2.2).
    Activations (N, neurons, positions) are averaged over samples and positions (H * W for
    a convolution): score shape (neurons,). ``batch_size``: images per streamed batch
    (default: the evaluator's).
    """

    name: str = "activation"
    granularity: str = "neurons"
    batch_size: int | None = None

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        data = needs_data(ctx, self.name)
        totals = neuron_totals(ctx.bundle, data, [layer.name], self.batch_size)
        return totals[layer.name].mean_abs.float()


@dataclass(frozen=True)
class APoZ:
    """1 - APoZ: neurons whose output is almost always zero go first.

    APoZ, the Average Percentage of Zeros (Hu et al. 2016, "Network Trimming: A Data-Driven
    Neuron Pruning Approach towards Efficient Deep Architectures", arXiv:1607.03250), is
    the fraction of exactly-zero activations over samples and positions, shape (neurons,).
    It is meaningful after a ReLU; a layer without a nonlinearity of its own (a residual
    branch's last convolution, whose ReLU follows the addition) is measured at its output,
    where zeros are rare and every neuron scores about 1. ``batch_size`` as for
    :class:`MeanActivation`.
    """

    name: str = "apoz"
    granularity: str = "neurons"
    batch_size: int | None = None

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        data = needs_data(ctx, self.name)
        totals = neuron_totals(ctx.bundle, data, [layer.name], self.batch_size)
        return 1 - totals[layer.name].apoz.float()


@dataclass(frozen=True)
class Taylor:
    """First-order Taylor score |a * dL/da| of each neuron (Molchanov et al. 2017, ICLR).

    "Pruning Convolutional Neural Networks for Resource Efficient Inference",
    arXiv:1611.06440: removing neuron k changes the loss by about ``-sum_m a_m dL/da_m``
    over its activations a_m. Computed with captum's ``LayerGradientXActivation`` on the
    layer's module, or on the BatchNorm module that directly follows it: a neuron plan
    removes that BatchNorm's entries too, so what removal zeroes is the BatchNorm's output,
    not the convolution's (on digits-resnet this ranks better: 0.96 vs 0.91 accuracy with
    10% of neurons removed). A following ReLU changes nothing: ``relu(z) * dL/drelu(z) =
    z * dL/dz`` elementwise.

    ``forward_func`` returns the per-sample cross-entropy loss ``L_n`` (N,) against the
    true labels (passed as captum's ``additional_forward_args``): the criterion estimates
    the change of the *loss*, as the paper does; a true-class logit would ignore the other
    classes and keep scoring neurons on samples the model already classifies confidently.
    Reduction, for a product ``a * g`` of shape (N, neurons, positions): sum over positions,
    absolute value, mean over samples — score shape (neurons,). A model known only as an
    exported graph (an upload) is scored on the graph instead (:func:`graph_taylor`).
    """

    name: str = "taylor"
    granularity: str = "neurons"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        data = needs_labels(ctx, self.name)
        model = private_copy(ctx.bundle)
        name = _measured_module(ctx.bundle, layer)
        module = model.get_submodule(name) if _has_module(model, name) else None
        if not isinstance(module, (nn.Linear, nn.Conv2d, nn.modules.batchnorm._BatchNorm)):
            return graph_taylor(ctx.bundle, layer, data)
        return mean_gradient_x_activation(
            model, module, data, lambda product: neurons_first(layer, product).sum(2).abs())


def mean_gradient_x_activation(model: nn.Module, module: nn.Module, data: ValidationSet,
                               per_sample: Callable[[torch.Tensor], torch.Tensor],
                               at_input: bool = False) -> torch.Tensor:
    """The mean over ``data`` of ``per_sample(a * dL/da)`` (one row per sample), ``a`` being
    ``module``'s output (``at_input``: its input) in ``model`` (a private copy) and ``L``
    each sample's cross-entropy against its label; captum's ``LayerGradientXActivation``,
    by batches. What the Taylor criteria of neurons and of heads share."""
    from captum.attr import LayerGradientXActivation

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits_of(model(x)), y, reduction="none")

    method = LayerGradientXActivation(loss, module)
    total = None
    with torch.enable_grad():
        for start in range(0, len(data), BATCH_SIZE):
            x, y = data.x[start : start + BATCH_SIZE], data.y[start : start + BATCH_SIZE]
            product = method.attribute(x, additional_forward_args=(y,),
                                       attribute_to_layer_input=at_input).detach()
            batch = per_sample(product).sum(0).double()
            total = batch if total is None else total + batch
    return (total / len(data)).float()


@dataclass(frozen=True)
class WeightTaylor:
    """First-order Taylor score |w * dL/dw| of each weight entry, shape of the weight.

    The weight form of Molchanov et al.'s first-order expansion (2016/2017,
    arXiv:1611.06440; used per weight in Molchanov et al. 2019, "Importance Estimation for
    Neural Network Pruning", CVPR): setting w to 0 changes the loss by about ``-w dL/dw``.
    ``L`` is the cross-entropy *summed* over the validation set, so ``dL/dw`` is one
    backward pass (by batches) of the whole set; the absolute value is taken after summing.
    """

    name: str = "taylor"
    granularity: str = "weights"

    def score(self, layer: Layer, ctx: ScoreContext) -> torch.Tensor:
        data = needs_labels(ctx, self.name)
        model = private_copy(ctx.bundle)
        weight = dict(model.named_parameters()).get(layer.weight)
        if weight is None:
            raise PlanError(
                f"The '{self.name}' criterion cannot find parameter '{layer.weight}' in the "
                "model; it needs the model's own parameters to take gradients."
            )
        weight.requires_grad_(True)
        grad = torch.zeros_like(weight)
        with torch.enable_grad():
            for start in range(0, len(data), BATCH_SIZE):
                x, y = data.x[start : start + BATCH_SIZE], data.y[start : start + BATCH_SIZE]
                loss = F.cross_entropy(logits_of(model(x)), y, reduction="sum")
                (batch_grad,) = torch.autograd.grad(loss, weight)
                grad = grad + batch_grad
        return (weight.detach() * grad).abs()


def graph_taylor(bundle: ModelBundle, layer: Layer, data: ValidationSet) -> torch.Tensor:
    """:class:`Taylor`'s score taken on the exported graph, for a model known only as one
    (an upload): the measured node's value (the layer's output, or the BatchNorm's right
    after it) becomes a leaf that requires grad in a run of a private copy of the graph,
    and ``a * dL/da`` is reduced as :class:`Taylor` reduces captum's product. In eval mode
    no sample's loss reaches another's activations, so one backward of the summed
    per-sample losses gives each sample's own gradient."""
    with warnings.catch_warnings():  # copying an exported graph's pytree specs warns
        warnings.simplefilter("ignore", FutureWarning)
        graph = copy.deepcopy(bundle.program.module).requires_grad_(False)
    node = _measured_node(bundle, layer)
    total = torch.zeros(layer.neurons, dtype=torch.float64)
    with torch.enable_grad():
        for start in range(0, len(data), BATCH_SIZE):
            x, y = data.x[start:start + BATCH_SIZE], data.y[start:start + BATCH_SIZE]
            probe = _Probe(graph, node)
            loss = F.cross_entropy(logits_of(probe.run(x)), y, reduction="sum")
            loss.backward()
            product = (probe.value * probe.value.grad).detach()
            total += neurons_first(layer, product).sum(2).abs().sum(0).double()
    return (total / len(data)).float()


class _Probe(fx.Interpreter):
    """Runs a graph, making the value of node ``target`` a leaf that requires grad."""

    def __init__(self, module: fx.GraphModule, target: str) -> None:
        super().__init__(module)
        self.target = target
        self.value: torch.Tensor | None = None

    def run_node(self, n: fx.Node) -> object:
        out = super().run_node(n)
        if n.name == self.target:
            self.value = out.detach().requires_grad_(True)
            return self.value
        return out


def _measured_node(bundle: ModelBundle, layer: Layer) -> str:
    """The graph node whose value the Taylor score takes (see :func:`_measured_module`)."""
    node = next(n for n in bundle.program.nodes if n.name == layer.node)
    users = list(node.users)
    if len(users) == 1 and users[0].target is torch.ops.aten.batch_norm.default:
        return users[0].name
    return node.name


def private_copy(bundle: ModelBundle) -> nn.Module:
    """A deep copy of ``bundle.model`` (same mode) with no parameter requiring grad."""
    model = copy.deepcopy(bundle.model)
    model.requires_grad_(False)
    return model


def _measured_module(bundle: ModelBundle, layer: Layer) -> str:
    """The module whose output the Taylor score takes: the layer, or its BatchNorm."""
    node = next(n for n in bundle.program.nodes if n.name == layer.node)
    users = list(node.users)
    if len(users) == 1 and users[0].target is torch.ops.aten.batch_norm.default:
        weight = users[0].args[1]
        if isinstance(weight, fx.Node) and weight.op == "get_attr":
            return weight.target.rpartition(".")[0]
    return layer.name


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
