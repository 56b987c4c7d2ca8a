"""Validation (and training) data: scikit-learn's bundled digits, one fixed split.

The digits images (1,797 8x8 greyscale images of 10 classes) ship inside scikit-learn, so
the demo works offline. Pixel values 0..16 are scaled to [0, 1] and shaped (N, 1, 8, 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from explorer.errors import DataError

DIGITS_VALIDATION_SIZE = 360
DIGITS_SPLIT_SEED = 0


@dataclass(frozen=True)
class ValidationSet:
    """Inputs ``x`` (N, *input_shape) float32 and integer labels ``y`` (N,) in [0, classes)."""

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str = "validation"

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise DataError(
                f"{self.name}: x has {self.x.shape[0]} samples but y has {self.y.shape[0]}; "
                "they must have the same length."
            )
        if self.x.shape[0] == 0:
            raise DataError(f"{self.name}: the data set is empty; it needs at least one sample.")

    def __len__(self) -> int:
        return int(self.y.shape[0])


@lru_cache(maxsize=1)
def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=DIGITS_VALIDATION_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    return x_train, y_train, x_val, y_val


def digits_validation() -> ValidationSet:
    """The fixed, stratified 360-image validation split of the digits data."""
    _, _, x, y = _digits_split()
    return ValidationSet(torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 10, "digits-val")


def digits_train() -> ValidationSet:
    """The 1,437 training images that are not in the validation split."""
    x, y, _, _ = _digits_split()
    return ValidationSet(
        torch.from_numpy(x.copy()), torch.from_numpy(y.copy()), 10, "digits-train"
    )
