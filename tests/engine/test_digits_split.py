"""The digits demo data, read without importing scikit-learn, equal scikit-learn's own
``load_digits`` split by ``train_test_split`` as the demos were trained on it: every pixel,
label and position, for the validation and the training split."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from explorer.data import DIGITS_SPLIT_SEED, DIGITS_VALIDATION_SIZE, digits_train, digits_validation


def test_the_split_equals_scikit_learns():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    x_train, x_val, y_train, y_val = train_test_split(
        x, digits.target.astype(np.int64), test_size=DIGITS_VALIDATION_SIZE,
        stratify=digits.target, random_state=DIGITS_SPLIT_SEED)
    for ours, x_want, y_want in ((digits_validation(), x_val, y_val),
                                 (digits_train(), x_train, y_train)):
        assert str(ours.x.dtype) == "torch.float32" and str(ours.y.dtype) == "torch.int64"
        np.testing.assert_array_equal(ours.x.numpy(), x_want)
        np.testing.assert_array_equal(ours.y.numpy(), y_want)
    assert len(digits_validation()) == 360 and len(digits_train()) == 1437


def test_loading_the_digits_imports_no_scikit_learn():
    code = ("import sys; from explorer.data import digits_validation; digits_validation(); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == "False"
