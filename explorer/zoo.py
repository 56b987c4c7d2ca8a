"""The bundled demo models, trained on the digits data, and their architectures.

Every model takes images shaped (N, 1, 8, 8) and returns logits (N, 10). Widths are
arguments so that tests can rebuild a physically smaller model to check neuron-plan
arithmetic against an independent count.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from explorer.errors import ModelError

ASSETS = Path(__file__).resolve().parent.parent / "assets"
DIGITS_INPUT_SHAPE = (1, 8, 8)


class DigitsMLP(nn.Module):
    """LeNet-300-100 on flattened 8x8 digits: 64-300-100-10 (Han et al. 2015's model)."""

    def __init__(self, hidden: tuple[int, int] = (300, 100), classes: int = 10) -> None:
        super().__init__()
        h1, h2 = hidden
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, h1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(h1, h2)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(h2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        return self.fc3(self.relu2(self.fc2(x)))


class DigitsCNN(nn.Module):
    """A small LeNet-5 style CNN: two 3x3 convolutions, a pool, three fully connected layers."""

    def __init__(
        self, channels: tuple[int, int] = (32, 64), hidden: tuple[int, int] = (256, 128),
        classes: int = 10,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        h1, h2 = hidden
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 4 * 4, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) skip connection."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, mid: int | None = None) -> None:
        super().__init__()
        mid = mid or c_out
        self.conv1 = nn.Conv2d(c_in, mid, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(mid, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + skip)


class DigitsResNet(nn.Module):
    """A small residual CNN with BatchNorm: stem, three basic blocks (16, 32, 64), linear head."""

    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(1, w1, 3, padding=1, bias=False), nn.BatchNorm2d(w1), nn.ReLU()
        )
        self.layer1 = BasicBlock(w1, w1)
        self.layer2 = BasicBlock(w1, w2, stride=2)
        self.layer3 = BasicBlock(w2, w3, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.flatten(self.pool(x)))


@dataclass(frozen=True)
class ZooEntry:
    """A named architecture: how to build it and what it was trained for."""

    name: str
    build: Callable[[], nn.Module]
    description: str
    epochs: int
    lr: float

    @property
    def weights_path(self) -> Path:
        return ASSETS / f"{self.name}.safetensors"

    @property
    def card_path(self) -> Path:
        return ASSETS / f"{self.name}.json"

    def card(self) -> dict:
        """The model card written by ``train-demos``: split, accuracy, torch version."""
        if not self.card_path.exists():
            return {}
        return json.loads(self.card_path.read_text())


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("digits-mlp", DigitsMLP, "LeNet-300-100 MLP (64-300-100-10)", 40, 1e-3),
        ZooEntry("digits-cnn", DigitsCNN, "LeNet-5 style CNN, 2 conv + 3 linear", 30, 1e-3),
        ZooEntry("digits-resnet", DigitsResNet, "Residual CNN with BatchNorm, 3 blocks", 30, 2e-3),
    )
}


def zoo_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; a clear error lists the names that exist."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelError(
            f"Unknown demo model '{name}'. Choose one of: {', '.join(ZOO)}."
        ) from None
