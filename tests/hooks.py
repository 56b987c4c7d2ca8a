"""Independent references for tests: what a module outputs, caught with a forward hook."""

from __future__ import annotations

import copy

import torch


def relu_outputs(bundle, relu: str, x: torch.Tensor) -> torch.Tensor:
    """The output of module ``relu`` of ``bundle.model`` on ``x`` (hooked on a private copy)."""
    model = copy.deepcopy(bundle.model)
    caught = {}
    handle = dict(model.named_modules())[relu].register_forward_hook(
        lambda _m, _i, out: caught.setdefault("out", out.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return caught["out"]
