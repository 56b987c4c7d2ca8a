"""One neuron up close: the validation images that excite it most, and why (captum).

* :func:`top_images` ranks the validation images by the neuron's activation (the output of
  ``Layer.activation_node``, after its ReLU when it has one; a convolution channel's map is
  averaged over its positions), so the user sees what the neuron responds to.
* :func:`attribution_map` explains one image with captum's ``NeuronConductance``
  (Dhamdhere, Sundararajan and Yan 2018, "How Important Is a Neuron?", arXiv:1805.12233):
  how much each input pixel contributes to the model's class score *through* the neuron,
  integrated along the straight path from a zero baseline to the image. Its sum over the
  pixels is the neuron's conductance for that class; summed over every neuron of a layer
  that all paths cross, the conductances add up to the class score at the image minus at
  the baseline (completeness). One call explains one neuron: for a drill-down, not ranking.

Nothing here writes into the shared model: captum's hooks go on a private copy.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explorer.activations import find_layer, per_image_means
from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError, ExplorerError
from explorer.look.stats import to_numpy

TOP_K = 8
N_STEPS = 64
# Gauss-Legendre nodes converge much faster than captum's default trapezoid rule, whose
# error shrinks only as 1 / n_steps. Measured on the demo models (an output neuron's
# conductance against its logit gain, 15 images): the MLP and the CNN are within 0.5% from
# 32 steps, the ResNet (more ReLU kinks along the path) needs 64 to be within 1% (the
# trapezoid rule: 4% at 64 steps). 64 steps of an 8x8 image take tens of milliseconds.
METHOD = "gausslegendre"


@dataclass(frozen=True)
class TopImages:
    """The images of a data set on which one neuron is most active, highest first.

    ``indices`` (k,) int64 index the data set; ``values`` (k,) float32 are the neuron's
    activations on them (a convolution channel's mean over its positions).
    """

    indices: np.ndarray
    values: np.ndarray


@dataclass(frozen=True)
class Attribution:
    """A ``NeuronConductance`` map of one image and the unit it explains.

    ``map`` has the image's shape (``bundle.input_shape``), detached from autograd. It
    attributes the logit of class ``target`` through output unit ``unit`` of the layer:
    ``(neuron,)`` for a linear layer on (N, features) inputs; for a convolution
    ``(neuron, h, w)``, the channel at the position where it is most active on this image
    (conductance is defined for a single unit, and a channel has one per position).
    """

    map: torch.Tensor
    target: int
    unit: tuple[int, ...]
    n_steps: int


def rank_images(activations: torch.Tensor | np.ndarray, neuron: int, k: int = TOP_K
                ) -> TopImages:
    """The ``k`` samples of ``activations`` where ``neuron`` is most active, averaged over
    positions; ties go to the lower index.

    ``activations`` is (N, neurons, positions), or (N, neurons) already averaged per image
    (:func:`explorer.activations.per_image_means`, which streams).
    """
    acts = to_numpy(activations)
    if acts.ndim not in (2, 3):
        raise ExplorerError(f"Activations must be shaped (N, neurons, positions) or "
                            f"(N, neurons); got {acts.shape}.")
    _check_index("neuron", neuron, acts.shape[1])
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ExplorerError(f"k must be a positive integer; got {k!r}.")
    per_image = acts[:, int(neuron)]
    if per_image.ndim == 2:
        per_image = per_image.mean(axis=1, dtype=np.float64)
    order = np.argsort(-per_image, kind="stable")[:k]
    return TopImages(order.astype(np.int64), per_image[order].astype(np.float32))


def top_images(bundle: ModelBundle, data: ValidationSet, layer: str, neuron: int,
               k: int = TOP_K, batch_size: int | None = None) -> TopImages:
    """The ``k`` images of ``data`` on which ``neuron`` of ``layer`` is most active.

    One streamed run of the program over ``data``
    (:func:`explorer.activations.per_image_means`: one number per image and neuron is held);
    a page that already holds the layer's per-image means calls :func:`rank_images` instead.
    """
    _check_index("neuron", neuron, find_layer(bundle, layer).neurons)
    return rank_images(per_image_means(bundle, data, [layer], batch_size)[layer], neuron, k)


def attribution_map(bundle: ModelBundle, layer: str, neuron: int, image: torch.Tensor,
                    target: int | None = None, n_steps: int = N_STEPS) -> Attribution:
    """Explain ``image`` (``bundle.input_shape``) for ``neuron`` of ``layer`` with captum.

    ``NeuronConductance`` on ``bundle.model`` and the layer's ``nn.Module`` (the unit is
    the module's output: before BatchNorm and ReLU, which pass conductance on unchanged),
    from a zero baseline, ``n_steps`` Gauss-Legendre steps. ``target`` is the class whose
    logit is explained, by default the class the model predicts for the image. Raises
    :class:`ExplorerError` for a model known only as an exported graph (no module to hook)
    or a layer module that does not run exactly once per forward pass.
    """
    from captum.attr import NeuronConductance

    spec = find_layer(bundle, layer)
    _check_index("neuron", neuron, spec.neurons)
    neuron = int(neuron)
    x = _one_image(bundle, image)
    logits, state = bundle.program.run(x, keep=True)
    output = state.values[bundle.program.index_of(spec.node)]
    activation = state.values[bundle.program.index_of(spec.activation_node)][0]
    del state
    if target is None:
        target = int(logits.argmax(dim=1))
    _check_index("target", target, logits.shape[1])
    unit = _most_active_unit(spec.kind, neuron, activation)
    model = _private_copy(bundle, layer)
    module = _layer_module(model, bundle, layer, x, tuple(output.shape))
    selector: int | tuple[int, ...] = unit[0] if len(unit) == 1 else unit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # captum's notes on requires_grad
        attributions = NeuronConductance(model, module).attribute(
            x, neuron_selector=selector, baselines=torch.zeros_like(x), target=target,
            n_steps=n_steps, method=METHOD)
    return Attribution(attributions.detach()[0].clone(), target, unit, n_steps)


def _one_image(bundle: ModelBundle, image: torch.Tensor) -> torch.Tensor:
    """``image`` as a batch of one, (1, *input_shape) float32."""
    x = torch.as_tensor(image).detach().float()
    expected = tuple(bundle.input_shape)
    if tuple(x.shape) == expected:
        x = x[None]
    if tuple(x.shape) != (1, *expected):
        raise DataError(f"The image has shape {tuple(x.shape)}; model '{bundle.name}' "
                        f"expects one sample shaped {expected}.")
    return x


def _most_active_unit(kind: str, neuron: int, activation: torch.Tensor) -> tuple[int, ...]:
    """The output unit of ``neuron`` to explain, from one sample's layer ``activation``:
    the neuron itself, or the position of its map where it is most active (first on ties).
    """
    if kind == "linear" and activation.dim() == 1:
        return (neuron,)
    where = activation[..., neuron] if kind == "linear" else activation[neuron]
    position = tuple(int(i) for i in np.unravel_index(int(where.argmax()), tuple(where.shape)))
    return (*position, neuron) if kind == "linear" else (neuron, *position)


def _private_copy(bundle: ModelBundle, layer: str) -> nn.Module:
    """A copy of ``bundle.model`` for captum to hook (in eval mode, as the shared one)."""
    module = dict(bundle.model.named_modules()).get(layer)
    if module is None or type(module) is nn.Module:  # an exported graph's bare container
        raise _no_module(bundle, layer)
    model = copy.deepcopy(bundle.model)
    for p in model.parameters():
        p.requires_grad_(False)  # gradients flow to the input only
    return model


def _layer_module(model: nn.Module, bundle: ModelBundle, layer: str, x: torch.Tensor,
                  shape: tuple[int, ...]) -> nn.Module:
    """The module of ``model`` named ``layer``, checked to run once on ``x`` and to
    return the layer's output (``shape``, as the exported program computes it)."""
    module = dict(model.named_modules()).get(layer)
    shapes: list[tuple[int, ...]] = []
    if module is not None:
        handle = module.register_forward_hook(
            lambda _m, _i, out: shapes.append(tuple(getattr(out, "shape", ()))))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
    if shapes != [shape]:
        raise _no_module(bundle, layer)
    return module


def _no_module(bundle: ModelBundle, layer: str) -> ExplorerError:
    return ExplorerError(
        f"Layer '{layer}' of model '{bundle.name}' has no module of its own that runs once "
        "per forward pass (the model was loaded as an exported graph or TorchScript, or the "
        "layer is a plain function call), so captum cannot explain its neurons. Load the "
        "model as a state_dict of a known architecture to explain them."
    )


def _check_index(what: str, value: object, size: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not (
            0 <= value < size):
        raise ExplorerError(f"The {what} must be an integer in 0..{size - 1}; got {value!r}.")
