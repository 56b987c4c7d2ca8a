"""Deterministic training of the demo zoo on the digits training split.

``pruning-explorer train-demos`` calls :func:`train_demo` for each zoo entry and writes
``assets/<name>.safetensors`` with a JSON card beside it. One thread, fixed seeds and a
fixed batch order make a rerun reproduce the same weights on the same torch build.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import torch
from safetensors.torch import save_file
from torch import nn

from explorer.data import (
    DIGITS_SPLIT_SEED,
    DIGITS_VALIDATION_SIZE,
    digits_train,
    digits_validation,
)
from explorer.load.zoo import ZooEntry

SEED = 0
BATCH = 64


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def initial_model(entry: ZooEntry, seed: int = SEED) -> nn.Module:
    """``entry``'s architecture with the weights its training starts from, drawn from
    ``seed`` (:data:`SEED`: the demo's own theta_0, to which the lottery-ticket lab,
    :mod:`explorer.finetune.lottery`, rewinds); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.build()


def train_demo(entry: ZooEntry, log: Callable[[str], None] = print) -> dict:
    """Train ``entry`` from a fixed seed; write its weights and card; return the card."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = initial_model(entry)
        train, val = digits_train(), digits_validation()
        opt = torch.optim.Adam(model.parameters(), lr=entry.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=entry.epochs)
        order = torch.Generator().manual_seed(SEED)
        for epoch in range(entry.epochs):
            model.train()
            for idx in torch.randperm(len(train), generator=order).split(BATCH):
                opt.zero_grad()
                nn.functional.cross_entropy(model(train.x[idx]), train.y[idx]).backward()
                opt.step()
            sched.step()
            model.eval()
            if (epoch + 1) % 10 == 0 or epoch + 1 == entry.epochs:
                log(f"{entry.name} epoch {epoch + 1}: val acc {_accuracy(model, val.x, val.y):.4f}")
        model.eval()
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        card = {
            "name": entry.name,
            "architecture": entry.description,
            "class": type(model).__name__,
            "input_shape": [1, 8, 8],
            "num_classes": 10,
            "params": sum(p.numel() for p in model.parameters()),
            "data": "sklearn.datasets.load_digits, pixels / 16",
            "split": {
                "validation_size": DIGITS_VALIDATION_SIZE,
                "stratified": True,
                "random_state": DIGITS_SPLIT_SEED,
            },
            "training": {"optimizer": "Adam", "lr": entry.lr, "epochs": entry.epochs,
                         "batch": BATCH, "seed": SEED, "schedule": "cosine"},
            "validation_accuracy": round(_accuracy(model, val.x, val.y), 6),
            "torch_version": torch.__version__,
        }
        entry.weights_path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(entry.weights_path), metadata={"name": entry.name})
        entry.card_path.write_text(json.dumps(card, indent=2) + "\n")
        return card
    finally:
        torch.set_num_threads(threads)
