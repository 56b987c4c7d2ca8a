"""Coupled channels found on the exported graph (issue 12, item 1).

The reference is Torch-Pruning's DepGraph on the same model's ``nn.Module``: its groups,
translated into the same members and :class:`~explorer.graph.Dependent` slices, must equal
the graph's. Uploads (a TorchScript file, a .pt2 program) get groups too, and their neuron
plans shrink physically to a model whose outputs equal the masked model's.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch_pruning as tp
from exported_models import exported
from torch import nn

from explorer.bundle import bundle_from_module
from explorer.cli import main
from explorer.evaluator import full_forward_logits
from explorer.export.shrink import shrink
from explorer.graph import Dependent
from explorer.load.demos import load_demo
from explorer.load.model_file import load_model_bytes
from explorer.masks import ScoreCache, masks_for
from explorer.plan import Plan


def torch_pruning_groups(bundle) -> dict[str, tuple[tuple[str, ...], frozenset]]:
    """Torch-Pruning's groups of ``bundle.model`` by first member: (members, dependents).

    Each pruning group's parameter slices become Dependents: the index list a slice gets
    for all of the root's channels gives its offset and how many entries each channel owns.
    """
    model = bundle.model
    by_module = {m: n for n, m in model.named_modules()}
    order = {la.name: i for i, la in enumerate(bundle.layers)}
    output_layers = [model.get_submodule(la.name) for la in bundle.layers
                     if la.neuron_reason and "model's output" in la.neuron_reason]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=torch.zeros((1, *bundle.input_shape)))
        found = list(graph.get_all_groups(root_module_types=(nn.Conv2d, nn.Linear),
                                          ignored_layers=output_layers))
    groups = {}
    for tp_group in found:
        root = tp_group[0].dep.target.module
        neurons = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        full = graph.get_pruning_group(root, tp_group[0].dep.handler, list(range(neurons)))
        members, deps = [], set()
        for dep, idxs in full:
            module, name = dep.target.module, by_module.get(dep.target.module)
            if not isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d)):
                continue  # a functional op: no parameters of its own
            idxs = sorted(idxs)  # through a depthwise conv, Torch-Pruning permutes them
            repeat, offset = len(idxs) // neurons, idxs[0]
            assert idxs == list(range(offset, offset + neurons * repeat))
            out = "out_channels" in dep.handler.__name__ or isinstance(
                module, (nn.BatchNorm2d, nn.BatchNorm1d))
            if isinstance(module, (nn.Conv2d, nn.Linear)) and out:
                members.append(name)
            params = ("weight", "bias") if out else ("weight",)
            deps |= {Dependent(f"{name}.{p}", 0 if out else 1, repeat, offset)
                     for p in params if getattr(module, p, None) is not None}
        members.sort(key=order.__getitem__)
        groups[members[0]] = (tuple(members), frozenset(deps))
    return groups


def half_of_each_group(bundle) -> Plan:
    return Plan(granularity="neurons", criterion="l1", sparsity={
        la.name: 0.5 for la in bundle.layers if la.neuron_prunable})


def shrunk_and_masked(bundle, plan: Plan, x: torch.Tensor):
    """(the shrunk model, its outputs on ``x``, the masked model's outputs) for ``plan``."""
    masks = masks_for(bundle, plan, ScoreCache(bundle))
    small = shrink(bundle, masks)
    with torch.no_grad():
        out = small(x)
    return small, out, full_forward_logits(bundle, masks, x), masks


def graph_groups(bundle) -> dict[str, tuple[tuple[str, ...], frozenset]]:
    return {g: (tuple(la.name for la in bundle.group(g)),
                frozenset(bundle.group(g)[0].dependents)) for g in bundle.group_names}


@pytest.mark.parametrize("name", ["digits-resnet", "resnet18-cifar", "digits-cnn"])
def test_graph_groups_equal_torch_pruning(name):
    bundle = load_demo(name)
    ours, reference = graph_groups(bundle), torch_pruning_groups(bundle)
    assert set(ours) == set(reference)
    for group, (members, deps) in reference.items():
        assert ours[group][0] == members, group
        assert ours[group][1] == deps, group
    coupled = any(len(members) > 1 for members, _ in ours.values())
    assert coupled == ("resnet" in name)  # the residual additions couple layers


class Residual(nn.Module):
    """For (1, 8, 8) inputs: a stem with BatchNorm, a residual block added back to it, a
    depthwise convolution, a classifier."""

    def __init__(self, features: int = 8 * 16) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc = nn.Linear(features, 10)

    def body(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(x)))
        return self.depthwise(torch.relu(h + self.conv2(torch.relu(self.conv1(h)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.max_pool2d(self.body(x), 2)
        return self.fc(h.view(h.shape[0], -1))


class Concat(Residual):
    """:class:`Residual` with a side convolution's 4 channels concatenated to the body's."""

    def __init__(self) -> None:
        super().__init__(12 * 16)
        self.side = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        h = nn.functional.max_pool2d(torch.cat([h, self.side(h)], 1), 2)
        return self.fc(h.view(h.shape[0], -1))


def seeded(model: Residual) -> Residual:
    """``model`` in eval mode with BatchNorm statistics that are not the identity."""
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 1.5)
    return model.eval()


def torchscript(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(model), buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def uploads():
    """Uploads by kind: (the Python definition they were saved from, the loaded bundle)."""
    torch.manual_seed(0)
    residual, concat = seeded(Residual()), seeded(Concat())
    return {
        "torchscript": (residual, load_model_bytes(torchscript(residual), "residual.pt",
                                                   input_shape=(1, 8, 8))),
        "pt2": (residual, load_model_bytes(exported(residual), "residual.pt2")),
        "pt2-concat": (concat, load_model_bytes(exported(concat), "concat.pt2")),
    }


@pytest.mark.parametrize("kind", ["torchscript", "pt2"])
def test_uploads_get_the_groups_torch_pruning_finds_on_their_definition(uploads, kind):
    model, bundle = uploads[kind]
    assert bundle.source == "file" and not isinstance(bundle.model, Residual)
    assert graph_groups(bundle) == torch_pruning_groups(replace(bundle, model=model))
    assert [la.name for la in bundle.group("stem")] == ["stem", "conv2", "depthwise"]
    assert "model's output" in bundle.layer("fc").neuron_reason


def test_a_concatenation_offsets_the_channels_that_follow(uploads):
    """Torch-Pruning 1.6 maps the second input of a concatenation onto the first's channels
    here, so the reference is the layout itself: fc's inputs are the depthwise's 8 channels,
    then side's 4, each a block of 4x4 pooled features."""
    bundle = uploads["pt2-concat"][1]
    assert [la.name for la in bundle.group("stem")] == ["stem", "conv2", "depthwise"]
    assert Dependent("fc.weight", 1, 16, 0) in bundle.layer("stem").dependents
    assert Dependent("fc.weight", 1, 16, 8 * 16) in bundle.layer("side").dependents


@pytest.mark.parametrize("kind", ["torchscript", "pt2", "pt2-concat"])
def test_an_uploads_neuron_plan_shrinks_to_the_masked_models_outputs(uploads, kind):
    bundle = uploads[kind][1]
    x = torch.randn((64, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    for plan in (half_of_each_group(bundle),
                 Plan(granularity="neurons", criterion="random", scope="global", amount=0.7)):
        small, out, masked, masks = shrunk_and_masked(bundle, plan, x)
        torch.testing.assert_close(out, masked, rtol=1e-5, atol=1e-5)
        kept = sum(p.numel() for p in small.parameters())
        assert kept == sum(int(masks.masks[n].sum()) if n in masks.masks else p.numel()
                           for n, p in bundle.params().items())
        assert small.get_buffer("bn.running_mean").numel() == int(
            masks.kept_dims["bn.weight"][0].sum())


class Gated(nn.Module):
    """A squeeze-and-excitation gate (Hu et al. 2018) scaling a convolution's channels."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 6, 3, padding=1)
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.gate = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.hardswish(self.stem(x)) * 0.5
        g = torch.sigmoid(self.gate(h.mean((2, 3))))
        h = self.conv(h) * g[:, :, None, None]
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))


def test_a_gate_joins_the_layer_it_scales_as_torch_pruning_finds():
    torch.manual_seed(0)
    model = Gated().eval()
    bundle = load_model_bytes(exported(model), "gated.pt2")
    assert graph_groups(bundle) == torch_pruning_groups(replace(bundle, model=model))
    assert [la.name for la in bundle.group("gate")] == ["gate", "conv"]  # gate runs first
    x = torch.randn((32, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    _, out, masked, _ = shrunk_and_masked(bundle, half_of_each_group(bundle), x)
    torch.testing.assert_close(out, masked, rtol=1e-5, atol=1e-5)


class Splits(nn.Module):
    """A layer whose output is chunked, and one whose output is added to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.split = nn.Conv2d(1, 4, 3, padding=1)
        self.lift = nn.Conv2d(2, 1, 3, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, _ = self.split(x).chunk(2, dim=1)
        return self.fc((x + self.lift(a)).flatten(1))


def test_what_the_analysis_does_not_follow_is_refused_with_a_reason():
    bundle = bundle_from_module(Splits(), "splits", (1, 8, 8))
    assert bundle.group_names == []
    assert bundle.layer("split").neuron_reason == (
        "its channels reach chunk (chunk), an operation the graph analysis does not follow")
    assert "no prunable layer produces" in bundle.layer("lift").neuron_reason


def test_layers_json_lists_each_layers_units_as_the_bundle_has_them(uploads, tmp_path, capsys):
    """Issue 12's user story: a residual TorchScript upload's stem and last block convolution
    lose neurons together, and `layers --json` says so per layer (item 6)."""
    model, bundle = uploads["torchscript"]
    path = tmp_path / "residual.pt"
    path.write_bytes(torchscript(model))
    data = tmp_path / "x.npz"
    np.savez(data, x=np.zeros((4, 1, 8, 8), dtype=np.float32))
    assert main(["layers", "--model", str(path), "--data", str(data), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    assert list(rows) == bundle.layer_names
    for layer in bundle.layers:
        neurons = rows[layer.name]["units"]["neurons"]
        assert neurons == {"count": layer.neurons, "removable": layer.neuron_prunable,
                           "group": layer.group, "why_not": layer.neuron_reason}
        assert rows[layer.name]["group"] == layer.group
    assert rows["conv2"]["units"]["neurons"]["group"] == "stem"
    assert rows["fc"]["units"]["neurons"] == {
        "count": 10, "removable": False, "group": None,
        "why_not": "its output is the model's output (its neurons are the classes)"}


def test_a_demo_uploaded_as_pt2_gets_the_demos_groups_and_shrinks(resnet, digits):
    """The same network, loaded from a .pt2 file without its definition: the same groups,
    and its neuron plan's shrunk graph computes what the masked model does on the digits."""
    upload = load_model_bytes(exported(resnet.model), "digits-resnet.pt2")
    assert graph_groups(upload) == graph_groups(resnet)
    small, out, masked, _ = shrunk_and_masked(upload, half_of_each_group(upload), digits.x)
    torch.testing.assert_close(out, masked, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in small.parameters()) < upload.param_count / 2
