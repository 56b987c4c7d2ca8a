"""Physical shrinking: the smaller dense model a neuron plan describes.

The masked model (whole rows and columns zeroed) and the shrunk model compute the same
outputs; the shrunk one really has fewer parameters and FLOPs, so it is faster on any
hardware. Torch-Pruning removes the channels, with everything coupled to them, from a
private copy of the model; the shared model is never touched.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping

import torch
from torch import nn

from explorer.bundle import ModelBundle
from explorer.errors import ModelError
from explorer.masks import Masks


def shrink(bundle: ModelBundle, masks: Masks,
           buffers: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """A new ``nn.Module`` without the neurons ``masks`` removes (a neuron plan's masks);
    ``buffers`` (e.g. recalibrated BatchNorm statistics) replace the model's first."""
    import torch_pruning as tp

    if masks.granularity != "neurons":
        raise ModelError("Only a neuron plan makes the model smaller; a weight plan keeps "
                         "every tensor's shape (export the pruned weights instead).")
    modules = dict(bundle.model.named_modules())
    if not all(isinstance(modules.get(la.name), (nn.Linear, nn.Conv2d)) for la in bundle.layers):
        raise ModelError(
            f"'{bundle.name}' is known only as an exported graph; shrinking it needs the "
            "model's Python definition (load a demo architecture's weights instead)."
        )
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
