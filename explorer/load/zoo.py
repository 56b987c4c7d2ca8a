"""The bundled demo models, trained on the digits data, and their architectures.

The digits models take images shaped (N, 1, 8, 8) and return logits (N, 10). Widths are
arguments so that tests can rebuild a physically smaller model to check neuron-plan
arithmetic against an independent count.

ResNet-18 (ImageNet and CIFAR variants) is here too, as an *architecture-only* entry: random
weights from a fixed seed, no data, for exploring what pruning saves in FLOPs and size on a
real-sized network. Its accuracy is unavailable, never invented.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from explorer.errors import ModelError

ASSETS = Path(__file__).resolve().parents[2] / "assets"
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


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016, "Deep Residual Learning for Image Recognition").

    ImageNet topology (default): 7x7 stride-2 stem convolution, BatchNorm, ReLU, 3x3
    stride-2 max-pool; four stages of two :class:`BasicBlock` (64, 128, 256, 512 channels,
    stages 2-4 halve the resolution with a 1x1 conv-BN skip); global average pool; a
    linear head. Input (N, 3, 224, 224), logits (N, ``classes``): 1.814 G multiply-adds
    and 11.69 M parameters per sample. ``cifar=True``: a 3x3 stride-1 stem and no max-pool,
    for (N, 3, 32, 32) inputs. Module names follow torchvision's, so its ``state_dict``
    keys are the same.
    """

    def __init__(
        self, classes: int = 1000, cifar: bool = False,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        if cifar:
            self.conv1 = nn.Conv2d(3, w1, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, w1, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(BasicBlock(w1, w1), BasicBlock(w1, w1))
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, stride=2), BasicBlock(w2, w2))
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, stride=2), BasicBlock(w3, w3))
        self.layer4 = nn.Sequential(BasicBlock(w3, w4, stride=2), BasicBlock(w4, w4))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


@dataclass(frozen=True)
class ZooEntry:
    """A named architecture: how to build it, what it takes, what it was trained for.

    An ``architecture_only`` entry has no trained weights and no data: it is built with
    random weights from ``seed``, and its accuracy and loss are unavailable.
    """

    name: str
    build: Callable[[], nn.Module]
    description: str
    epochs: int = 0
    lr: float = 0.0
    input_shape: tuple[int, ...] = DIGITS_INPUT_SHAPE
    architecture_only: bool = False
    seed: int = 0

    @property
    def weights_path(self) -> Path:
        return ASSETS / f"{self.name}.safetensors"

    @property
    def card_path(self) -> Path:
        return ASSETS / f"{self.name}.json"

    def card(self) -> dict:
        """The model card written by ``train-demos``: split, accuracy, torch version.

        An architecture-only entry's card says so and counts its parameters (built on the
        meta device: no memory, no time).
        """
        if self.architecture_only:
            with torch.device("meta"):
                params = sum(p.numel() for p in self.build().parameters())
            return {"architecture_only": True, "weights": f"random (seed {self.seed})",
                    "params": params, "input_shape": list(self.input_shape)}
        if not self.card_path.exists():
            return {}
        return json.loads(self.card_path.read_text())

    def random_model(self) -> nn.Module:
        """The architecture with random weights from ``seed``; the global RNG is left as it was."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.build().eval()


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in (
        ZooEntry("digits-mlp", DigitsMLP, "LeNet-300-100 MLP (64-300-100-10)", 40, 1e-3),
        ZooEntry("digits-cnn", DigitsCNN, "LeNet-5 style CNN, 2 conv + 3 linear", 30, 1e-3),
        ZooEntry("digits-resnet", DigitsResNet, "Residual CNN with BatchNorm, 3 blocks", 30, 2e-3),
        ZooEntry("resnet18", ResNet18, "ResNet-18, ImageNet 3x224x224, 1000 classes",
                 input_shape=(3, 224, 224), architecture_only=True),
        ZooEntry("resnet18-cifar", partial(ResNet18, classes=10, cifar=True),
                 "ResNet-18, CIFAR 3x32x32, 10 classes", input_shape=(3, 32, 32),
                 architecture_only=True),
    )
}


# Pretrained models behind an optional extra (see :mod:`explorer.load.transformers`): real
# weights from an installed package, not from assets/, each with its own labelled evaluation
# set. Not in :data:`ZOO`, whose entries are digits architectures or architecture-only.
PRETRAINED: dict[str, str] = {
    "minilm": "all-MiniLM-L6-v2 embeddings, 10-topic centroids",
}


def zoo_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name``; a clear error lists the names that exist."""
    try:
        return ZOO[name]
    except KeyError:
        raise ModelError(
            f"Unknown demo model '{name}'. Choose one of: {', '.join([*ZOO, *PRETRAINED])}."
        ) from None
