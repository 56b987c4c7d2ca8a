"""ResNet-18, architecture only: costs against published figures and Torch-Pruning's counter.

The two zoo entries have random weights and no data, so these tests check what such a model
is for: FLOPs, parameters, coupled groups and the shrunk model's size, each compared with an
independent reference (the published ResNet-18 figures, ``FlopCounterMode`` on the eager
model, ``torch_pruning.utils.count_ops_and_params`` on the physically smaller model).
ResNet-18 at 224x224 runs at batch 1 on CPU to stay fast.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from explorer.bundle import bundle_from_module
from explorer.cli import main
from explorer.data import ValidationSet
from explorer.errors import DataError, ModelError, PlanError
from explorer.evaluator import Evaluator
from explorer.export.shrink import shrink
from explorer.load.demos import load_demo
from explorer.load.zoo import ZOO
from explorer.plan import Plan

PUBLISHED_MACS = 1.814e9  # He et al. 2016, Table 1: 1.8 x 10^9; 1.814 G counting conv + fc
TORCHVISION_PARAMS = 11_689_512  # torchvision.models.resnet18().parameters()


@pytest.fixture(scope="module")
def resnet18():
    return load_demo("resnet18")


@pytest.fixture(scope="module")
def cifar():
    return load_demo("resnet18-cifar")


def eager_flops(model: nn.Module, shape: tuple[int, ...]) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros((1, *shape)))
    return counter.get_total_flops()


def half_the_channels(bundle) -> Plan:
    """Every prunable group at 0.5, l1 criterion."""
    return Plan(granularity="neurons", criterion="l1", sparsity={
        la.name: 0.5 for g in bundle.group_names for la in bundle.group(g)})


def test_dense_cost_is_the_published_figure(resnet18):
    assert resnet18.input_shape == (3, 224, 224) and resnet18.num_classes == 1000
    macs = resnet18.flops / 2
    assert resnet18.flops == 2 * macs
    assert abs(macs - PUBLISHED_MACS) / PUBLISHED_MACS < 0.01
    assert resnet18.flops == eager_flops(resnet18.model, resnet18.input_shape)
    assert resnet18.param_count == TORCHVISION_PARAMS
    # torchvision's module names, so its state_dict keys fit this model
    keys = resnet18.model.state_dict().keys()
    assert len(keys) == 122
    assert {"conv1.weight", "bn1.running_var", "layer1.0.conv1.weight",
            "layer2.0.downsample.0.weight", "layer4.1.bn2.bias", "fc.bias"} <= set(keys)


def test_groups_follow_the_residual_stages(resnet18):
    groups = {g: [la.name for la in resnet18.group(g)] for g in resnet18.group_names}
    assert groups["conv1"] == ["conv1", "layer1.0.conv2", "layer1.1.conv2"]
    for stage in (2, 3, 4):
        assert groups[f"layer{stage}.0.downsample.0"] == [
            f"layer{stage}.0.downsample.0", f"layer{stage}.0.conv2", f"layer{stage}.1.conv2"]
    for stage in (1, 2, 3, 4):
        for block in (0, 1):
            assert groups[f"layer{stage}.{block}.conv1"] == [f"layer{stage}.{block}.conv1"]
    assert len(groups) == 12
    assert [la.name for la in resnet18.layers if not la.neuron_prunable] == ["fc"]


def test_half_the_channels_agrees_with_torch_pruning(resnet18):
    plan = half_the_channels(resnet18)
    evaluator = Evaluator(resnet18, None)
    metrics = evaluator.evaluate(plan)
    assert metrics.accuracy is None and metrics.accuracy_ci is None and metrics.loss is None
    small = shrink(resnet18, evaluator.masks(plan))
    assert small.layer1[0].conv1.out_channels == 32 and small.fc.in_features == 256
    example = torch.zeros((1, *resnet18.input_shape))
    macs, params, layer_macs, _ = tp.utils.count_ops_and_params(small, example,
                                                                layer_wise=True)
    assert metrics.size_bytes["structured"] == 4 * params
    # Torch-Pruning also counts BatchNorm, ReLU, pooling and the fc bias as MACs, which
    # FlopCounterMode (our convention) does not: its conv + linear multiply-adds must match.
    products = sum(layer_macs[m] for m in small.modules() if isinstance(m, nn.Conv2d | nn.Linear))
    products -= small.fc.out_features
    assert metrics.flops["effective"] == 2 * products
    assert abs(metrics.flops["effective"] - 2 * macs) / (2 * macs) < 0.01
    assert metrics.flops["effective"] == eager_flops(small, resnet18.input_shape)
    assert metrics.flops["dense"] == resnet18.flops


def test_cifar_variant(cifar):
    assert cifar.input_shape == (3, 32, 32) and cifar.num_classes == 10
    assert cifar.flops == eager_flops(cifar.model, cifar.input_shape)
    assert cifar.model.conv1.kernel_size == (3, 3) and cifar.model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.model.modules())
    assert cifar.param_count == TORCHVISION_PARAMS - 512 * 990 - 990 - 64 * 3 * (49 - 9)


def test_without_data_only_costs_are_reported(cifar):
    plan = half_the_channels(cifar)
    costs_only = Evaluator(cifar, None).evaluate(plan)
    gen = torch.Generator().manual_seed(0)
    data = ValidationSet(torch.randn(2, 3, 32, 32, generator=gen),
                         torch.randint(0, 10, (2,), generator=gen), 10)
    measured = Evaluator(cifar, data).evaluate(plan)
    assert measured.accuracy is not None and measured.loss is not None
    assert costs_only.samples == 0 and costs_only.accuracy is None
    for field in ("params", "nonzero_params", "size_bytes", "flops", "layers", "speedup"):
        assert getattr(costs_only, field) == getattr(measured, field), field
    out = json.loads(json.dumps(costs_only.to_dict()))
    assert out["accuracy"] is None and out["accuracy_ci"] is None and out["loss"] is None
    with pytest.raises(DataError, match="no validation data"):
        Evaluator(cifar, None).logits(Evaluator(cifar, None).masks(plan))


def test_random_weights_are_fixed_and_leave_the_global_rng_alone():
    entry = ZOO["resnet18-cifar"]
    before = torch.random.get_rng_state()
    a, b = entry.random_model().state_dict(), entry.random_model().state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert entry.card() == {"architecture_only": True, "weights": "random (seed 0)",
                            "params": 11_173_962, "input_shape": [3, 32, 32]}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_evaluates_without_accuracy(cifar, tmp_path, capsys):
    plan = half_the_channels(cifar)
    path = tmp_path / "plan.json"
    path.write_text(plan.to_json())
    out = run_cli("evaluate", "--model", "resnet18-cifar", "--plan", str(path), "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["accuracy"] is None and got["accuracy_ci"] is None and got["loss"] is None
    assert got["samples"] == 0
    small = shrink(cifar, Evaluator(cifar, None).masks(plan))
    assert got["flops"] == {"dense": cifar.flops,
                            "effective": eager_flops(small, cifar.input_shape)}
    assert main(["evaluate", "--model", "resnet18-cifar", "--plan", str(path)]) == 0
    text = capsys.readouterr().out
    assert "accuracy: unavailable (architecture-only model)" in text
    assert f"FLOPs/sample {got['flops']['effective']:,} of {cifar.flops:,}" in text


def test_cli_lists_the_architecture_only_models():
    out = run_cli("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["resnet18"]["architecture_only"] is True
    assert rows["resnet18-cifar"]["architecture_only"] is True
    assert rows["resnet18"]["validation_accuracy"] is None
    assert rows["resnet18"]["params"] == TORCHVISION_PARAMS
    assert rows["resnet18"]["input_shape"] == [3, 224, 224]
    assert rows["digits-cnn"]["architecture_only"] is False


def test_cli_refuses_to_train_an_architecture_only_model(capsys):
    assert main(["train-demos", "resnet18"]) == 2
    assert "architecture-only" in capsys.readouterr().err


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 8, 3)
        self.head = nn.Conv1d(8, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x))).mean(-1)


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 10, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lstm(x)[0][:, -1]


class DepthwiseHead(nn.Module):
    """A grouped convolution whose output is the model's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(self.conv(x)))


@pytest.mark.parametrize(("model", "shape", "named"), [
    (Conv1dNet(), (4, 8), "conv1d (conv, head)"),
    (LSTMNet(), (5, 4), "lstm (lstm)"),
])
def test_unsupported_layers_are_named(model, shape, named):
    with pytest.raises(ModelError, match="no prunable layer") as info:
        bundle_from_module(model, "odd", shape)
    assert f"operations it does not support: {named}" in str(info.value)


def test_grouped_convolution_is_weight_prunable_only():
    bundle = bundle_from_module(DepthwiseHead(), "depthwise", (4, 6, 6))
    assert bundle.flops == eager_flops(bundle.model, (4, 6, 6))
    Evaluator(bundle, None).evaluate(Plan(sparsity={"conv": 0.5}))
    with pytest.raises(PlanError, match=r"'conv' cannot be removed: conv is a grouped "
                                        r"convolution \(groups=4\), not supported"):
        Plan(granularity="neurons", criterion="l1", sparsity={"conv": 0.5}).check(bundle)
