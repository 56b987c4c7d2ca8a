"""One check shared by the unit tests of structured plans (heads, blocks): a plan judged by
the evaluator computes what an independently built smaller model computes, at its FLOPs."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from explorer.evaluator import Evaluator
from explorer.export.shrink import shrink
from explorer.masks import Masks
from explorer.metrics import Metrics
from explorer.plan import Plan


def assert_matches_smaller_model(evaluator: Evaluator, plan: Plan, masks: Masks,
                                 reference: nn.Module, x: torch.Tensor) -> Metrics:
    """The evaluator's logits and :func:`shrink`'s model equal ``reference`` on ``x`` (to
    1e-5), and the plan's effective FLOPs equal ``FlopCounterMode`` on ``reference``;
    returns the plan's metrics for further checks."""
    with torch.no_grad():
        expected = reference(x)
        ours = shrink(evaluator.bundle, masks)(x)
    torch.testing.assert_close(evaluator.logits(masks), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(x[:1])
    metrics = evaluator.evaluate(plan)
    assert metrics.flops["effective"] == counter.get_total_flops()
    return metrics
