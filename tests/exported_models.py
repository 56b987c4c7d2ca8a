"""Models a user would upload, built for real: a torch.export program of a CNN wider than the
demos, for the browser tests that need a model slow enough to watch (a scan's progress bar,
an estimate refining to the exact value). The digits input (1, 8, 8) keeps it small on disk.
"""

from __future__ import annotations

import io

import torch
from torch import nn


def wide_cnn(width: int) -> nn.Sequential:
    """Three 3x3 convolutions (width // 2, width, width channels) and a linear classifier
    for (1, 8, 8) digits, random weights drawn with seed 0, in eval mode."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, width // 2, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width // 2, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * 64, 10)).eval()


def exported(model: nn.Module) -> bytes:
    """``model`` as the bytes of a ``.pt2`` torch.export program with a dynamic batch."""
    program = torch.export.export(model, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()
