"""Loading the user's validation data, safely, and checking that it fits a model.

Validation data: ``.npz`` with arrays ``x`` and ``y``, or ``torch.save({"x": x, "y": y})``.

Nothing is unpickled beyond tensors (``torch.load(weights_only=True)``,
``np.load(allow_pickle=False)``). Every failure is a :class:`DataError` that says what is
wrong and what to do.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError
from explorer.files import corrupt, sniff, temp_file, torch_load

DATA_FORMATS = (
    "an .npz file with arrays x and y (np.savez(path, x=x, y=y)) or a .pt file holding "
    'a dict of tensors (torch.save({"x": x, "y": y}, path))'
)


def load_data(path: str | os.PathLike, num_classes: int | None = None) -> ValidationSet:
    """Load validation data: ``x`` (N, *sample_shape) and integer labels ``y`` (N,).

    Integer (or boolean) ``x`` becomes float32; float labels that are whole numbers become
    int64. ``num_classes`` defaults to the largest label + 1; pass the model's
    ``bundle.num_classes`` when a class may be absent from the data.
    """
    path = Path(path)
    return _load_data(path, path.name, num_classes)


def load_data_bytes(data: bytes, filename: str, num_classes: int | None = None) -> ValidationSet:
    """:func:`load_data` for uploaded bytes; ``filename`` names the set and messages."""
    with temp_file(data, filename) as path:
        return _load_data(path, path.name, num_classes)


def require_digits_input(bundle: ModelBundle, what: str = "validation data") -> None:
    """Raise unless ``bundle`` takes 8x8 digits, so the bundled digits ``what`` (validation
    or training data) can stand in."""
    if tuple(bundle.input_shape) != (1, 8, 8) or bundle.num_classes != 10:
        raise DataError(
            f"'{bundle.name}' does not take 8x8 digits (it expects {tuple(bundle.input_shape)} "
            f"per sample and predicts {bundle.num_classes} classes): give its {what} "
            "too (.npz with arrays x, y; or .pt with tensors x, y)."
        )


def check_compatible(bundle: ModelBundle, data: ValidationSet) -> None:
    """Raise a :class:`DataError` unless ``data`` fits ``bundle``: sample shape and classes.

    Labels must be below the model's output width; a validation set in which some classes
    are absent is fine.
    """
    sample = tuple(data.x.shape[1:])
    if sample != tuple(bundle.input_shape):
        hint = ""
        if math.prod(sample) == math.prod(bundle.input_shape):
            hint = f" Reshape x to (N, {', '.join(map(str, bundle.input_shape))})."
        raise DataError(
            f"{data.name} does not fit {bundle.name}: the model expects {bundle.input_shape} "
            f"per sample, the data has {sample}.{hint}"
        )
    top = int(data.y.max())
    if top >= bundle.num_classes:
        raise DataError(
            f"{data.name} has labels the model cannot predict: model output width "
            f"{bundle.num_classes} vs labels up to {top}."
        )


def _load_data(path: Path, name: str, num_classes: int | None) -> ValidationSet:
    kind = sniff(path, name, DataError)
    if kind == "npz":
        x, y = _read_npz(path, name)
    elif kind in ("torch", "pickle"):
        obj = torch_load(path, name, DataError)
        if not isinstance(obj, Mapping):
            raise DataError(
                f"{name}: expected a dict with tensors 'x' and 'y' but the file holds "
                f"{type(obj).__name__}. Save it as {DATA_FORMATS}."
            )
        x, y = _pick_xy(obj, name)
    else:
        raise DataError(
            f"{name}: not a data file Pruning Explorer can read. Expected {DATA_FORMATS}."
        )
    return _validation_set(_as_tensor(x, "x", name), _as_tensor(y, "y", name), num_classes, name)


def _read_npz(path: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return _pick_xy(npz, name)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(
                f"{name}: x or y is stored as Python objects, which are not loaded (unpickling "
                "can run code). Save numeric arrays: np.savez(path, x=x.astype('float32'), "
                "y=y.astype('int64'))."
            ) from None
        raise DataError(f"{name}: {corrupt(exc)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{name}: {corrupt(exc)}") from None


def _pick_xy(found: Mapping, name: str) -> tuple:
    """``found['x'], found['y']``; a clear error names the keys that are there instead."""
    missing = [key for key in ("x", "y") if key not in found]
    if missing:
        keys = ", ".join(repr(str(k)) for k in found) or "none"
        raise DataError(
            f"{name}: missing {' and '.join(repr(k) for k in missing)}; the file has keys "
            f"{keys}. Save inputs as 'x' and labels as 'y': {DATA_FORMATS}."
        )
    return found["x"], found["y"]


def _as_tensor(value: object, key: str, name: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise DataError(f"{name}: {key} has dtype {value.dtype}; expected numbers.")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    raise DataError(f"{name}: {key} is a {type(value).__name__}; expected a tensor or array.")


def _validation_set(
    x: torch.Tensor, y: torch.Tensor, num_classes: int | None, name: str
) -> ValidationSet:
    if x.dim() < 2:
        raise DataError(
            f"{name}: x has shape {tuple(x.shape)}; expected (N, *sample_shape), one row "
            "per sample, e.g. (N, 1, 8, 8)."
        )
    if y.dim() != 1:
        raise DataError(
            f"{name}: y has shape {tuple(y.shape)}; expected (N,) integer class labels "
            "(for one-hot labels use y.argmax(1))."
        )
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{name}: x has {x.shape[0]} samples but y has {y.shape[0]} labels; "
            "they must have the same length."
        )
    if x.is_complex():
        raise DataError(f"{name}: x has dtype {x.dtype}; expected real numbers.")
    x = x.to(torch.float32)
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise DataError(
            f"{name}: x has {bad} NaN or infinite value(s); replace or drop those samples."
        )
    y = _as_labels(y, name)
    if y.numel() and int(y.min()) < 0:
        raise DataError(
            f"{name}: y has negative labels (down to {int(y.min())}); "
            "labels must be class indices 0, 1, ..., classes - 1."
        )
    top = int(y.max()) if y.numel() else -1
    if num_classes is None:
        num_classes = top + 1
    elif top >= num_classes:
        raise DataError(
            f"{name}: labels go up to {top} but num_classes is {num_classes}; labels must be "
            f"in 0..{num_classes - 1}."
        )
    return ValidationSet(x.contiguous(), y.contiguous(), int(num_classes), name)


def _as_labels(y: torch.Tensor, name: str) -> torch.Tensor:
    if y.is_floating_point():
        whole = torch.isfinite(y) & (y == y.round())
        if not bool(whole.all()):
            example = y[~whole][0].item()
            raise DataError(
                f"{name}: y must hold integer class labels but has values like {example}."
            )
    elif y.is_complex():
        raise DataError(f"{name}: y has dtype {y.dtype}; expected integer class labels.")
    return y.to(torch.int64)
