"""A transformer uploaded as a .pt2 program: its feed-forward neurons, found on the graph.

The tiny BERT of ``tiny_bert`` is exported with ``torch.export`` and loaded as an upload
(no Python definition). Its feed-forward neurons are linear features on (N, tokens,
features): the graph analysis must find each block's ``intermediate.dense`` group as
Torch-Pruning finds it on the Python definition, refuse the other layers with a reason, and
a neuron plan must shrink the graph to a model whose outputs equal the masked model's, at
the FLOPs ``FlopCounterMode`` counts on it.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

pytest.importorskip("transformers")
tp = pytest.importorskip("torch_pruning")

from tiny_bert import tiny_bert  # noqa: E402

from explorer.evaluator import Evaluator, full_forward_logits  # noqa: E402
from explorer.export.shrink import shrink  # noqa: E402
from explorer.graph import Dependent  # noqa: E402
from explorer.load.model_file import load_model_bytes  # noqa: E402
from explorer.masks import ScoreCache, masks_for  # noqa: E402
from explorer.plan import Plan  # noqa: E402

FFN = [f"bert.encoder.layer.{i}.intermediate.dense" for i in range(2)]


@pytest.fixture(scope="module")
def upload():
    python, data = tiny_bert(sentences=40)
    program = torch.export.export(python.model, (data.x[:2],),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return python, load_model_bytes(buffer.getvalue(), "bert.pt2"), data


def torch_pruning_group(model: torch.nn.Module, layer: str, example: torch.Tensor
                        ) -> frozenset[Dependent]:
    """The parameter slices Torch-Pruning removes with ``layer``'s first output feature."""
    modules = dict(model.named_modules())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        group = graph.get_pruning_group(modules[layer], tp.prune_linear_out_channels, [0])
    names = {module: name for name, module in modules.items()}
    deps = set()
    for dep, _ in group:
        name = names.get(dep.target.module)  # None: a functional op (GELU)
        if name is None:
            continue
        module, out = modules[name], "out_channels" in dep.handler.__name__
        for p in ("weight", "bias") if out else ("weight",):
            if getattr(module, p, None) is not None:
                deps.add(Dependent(f"{name}.{p}", 0 if out else 1))
    return frozenset(deps)


def test_the_uploads_feed_forward_groups_are_torch_prunings(upload):
    python, bundle, data = upload
    assert bundle.source == "file" and not bundle.heads
    for name in FFN:
        layer = bundle.layer(name)
        assert layer.neuron_prunable and bundle.group(layer.group) == (layer,)
        assert frozenset(layer.dependents) == torch_pruning_group(python.model, name, data.x[:2])
    reasons = {la.name: la.neuron_reason for la in bundle.layers if la.name not in FFN}
    assert all(reasons.values()), reasons
    assert "attention heads" in reasons["bert.encoder.layer.0.attention.self.query"]


def test_an_uploads_feed_forward_plan_shrinks_to_the_masked_models_outputs(upload):
    _python, bundle, data = upload
    evaluator = Evaluator(bundle, data)
    plans = (Plan(granularity="neurons", criterion="l1", sparsity=dict.fromkeys(FFN, 0.5)),
             Plan(granularity="neurons", criterion="taylor", scope="global", amount=0.6))
    for plan in plans:
        masks = masks_for(bundle, plan, ScoreCache(bundle, data))
        assert sum(int(r.numel()) for r in masks.removed_neurons.values()) > 0
        small = shrink(bundle, masks)
        with torch.no_grad():
            out = small(data.x)
        torch.testing.assert_close(out, full_forward_logits(bundle, masks, data.x),
                                   rtol=1e-5, atol=1e-5)
        assert small.get_parameter(f"{FFN[0]}.weight").shape[0] < 40
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            small(data.x[:1])
        metrics = evaluator.evaluate(plan)
        assert metrics.flops["effective"] == counter.get_total_flops() < bundle.flops
