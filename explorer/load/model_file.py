"""Loading the user's own model, safely, with one clear error per failure.

Model files, recognised by their content (the extension only names the file):

* **TorchScript** (``torch.jit.save``): converted to a ``torch.export`` program. TorchScript
  does not record its input shape, so ``input_shape`` (one sample's shape) is required.
* **torch.export programs** (``torch.export.save``, ``.pt2``): used as they are; the input
  shape comes from the program's input placeholder.
* **state_dicts** (safetensors, or ``torch.save(model.state_dict())``): loaded into the zoo
  architecture ``arch``, or the one whose keys and shapes match exactly.

Validation data is loaded by :mod:`explorer.load.data_file`.

Every file is untrusted. Nothing is unpickled beyond tensors (``torch.load(weights_only=True)``,
safetensors). TorchScript and ``.pt2`` archives are vetted member by member
(:mod:`explorer.load.vetting`) before any torch loader sees them, and their first load and run
happen in a confined child process with time and memory limits (:mod:`explorer.load.guard`); what
comes back is a plain ``torch.export`` program, vetted again. Every failure is a
:class:`ModelError` that says what is wrong and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from explorer.bundle import ModelBundle, bundle_from_module
from explorer.errors import ModelError
from explorer.limits import MAX_MODEL_FILE_BYTES
from explorer.load.convert import DYNAMIC_BATCH_HINT, check_finite, plain
from explorer.load.files import (
    SAVE_HINT,
    corrupt,
    first_line,
    quiet_torch,
    sniff,
    temp_file,
    torch_load,
)
from explorer.load.guard import run_guarded
from explorer.load.vetting import check_pt2, vet_pt2, vet_torchscript
from explorer.load.zoo import ZOO, zoo_entry

MODEL_FORMATS = (
    "TorchScript (torch.jit.save), a torch.export program (torch.export.save, .pt2), "
    "safetensors, or a state_dict saved with torch.save (.pt/.pth)"
)



def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> ModelBundle:
    """Load the model file at ``path`` into a :class:`ModelBundle` (source ``"file"``).

    ``arch`` names the zoo architecture of a state_dict (auto-detected when omitted);
    ``input_shape`` is one sample's shape without the batch dimension, e.g. ``(1, 8, 8)``:
    required for TorchScript, used for the dynamic non-batch dimensions of a torch.export
    program, ignored for state_dicts (the zoo architectures take ``(1, 8, 8)``).
    """
    path = Path(path)
    return _load_model(path, path.name, arch, input_shape)


def load_model_bytes(
    data: bytes,
    filename: str,
    arch: str | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> ModelBundle:
    """:func:`load_model` for uploaded bytes; ``filename`` names the bundle and messages."""
    with temp_file(data, filename) as path:
        return _load_model(path, path.name, arch, input_shape)


def match_architecture(state_dict: Mapping[str, torch.Tensor], name: str = "the file") -> str:
    """The zoo architecture whose ``state_dict`` keys and shapes equal ``state_dict``'s.

    Raises a :class:`ModelError` naming the closest architecture and what differs from it.
    """
    diffs = {
        arch: _state_dict_diff(entry.build().state_dict(), state_dict)
        for arch, entry in ZOO.items()
    }
    for arch, diff in diffs.items():
        if not any(diff):
            return arch
    closest = min(diffs, key=lambda arch: sum(len(part) for part in diffs[arch]))
    raise ModelError(
        f"{name}: the weights do not match any known architecture ({', '.join(ZOO)}). "
        f"Closest is '{closest}': {_describe_diff(diffs[closest])}. Pruning Explorer can "
        "only rebuild these architectures from weights; for another model, "
        "save it as TorchScript or a torch.export program instead."
    )


def _load_model(
    path: Path, name: str, arch: str | None, input_shape: tuple[int, ...] | None
) -> ModelBundle:
    kind = sniff(path, name, ModelError)
    if kind in ("torchscript", "export"):
        return _load_guarded(path, name, kind, input_shape)
    if kind == "safetensors":
        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{name}: {corrupt(exc)}") from None
        return _load_state_dict(state_dict, name, arch, "safetensors")
    if kind in ("torch", "pickle"):
        return _load_state_dict(torch_load(path, name, ModelError), name, arch, "state_dict")
    raise ModelError(
        f"{name}: not a model file Pruning Explorer can read. Expected {MODEL_FORMATS}."
    )


def _load_state_dict(obj: object, name: str, arch: str | None, fmt: str) -> ModelBundle:
    """Build the zoo architecture ``arch`` (or the matching one) and load ``obj`` into it."""
    state_dict = _as_state_dict(obj, name)
    if arch is None:
        arch = match_architecture(state_dict, name)
    entry = zoo_entry(arch)
    model = entry.build()
    diff = _state_dict_diff(model.state_dict(), state_dict)
    if any(diff):
        raise ModelError(
            f"{name}: the weights do not fit the '{arch}' architecture: {_describe_diff(diff)}."
        )
    check_finite(state_dict, name)  # after the shapes: no claimed-huge tensor is scanned
    model.load_state_dict(state_dict)
    model.eval()
    card = {"file": name, "format": fmt, "architecture": arch}
    return _checked(bundle_from_module(model, name, entry.input_shape, card, source="file"))


def _as_state_dict(obj: object, name: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        # Training checkpoints often wrap the weights: {"state_dict": ..., "epoch": ...}.
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        got = "an empty dict" if isinstance(obj, Mapping) else type(obj).__name__
        raise ModelError(
            f"{name}: expected a state_dict (a dict of parameter name -> tensor) but the "
            f"file holds {got}. Instead, {SAVE_HINT}."
        )
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(
            f"{name}: a state_dict must map names to tensors, but {_some(bad)} "
            "are not tensors. Save model.state_dict() itself."
        )
    return {str(k): v for k, v in obj.items()}


def _state_dict_diff(
    expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Missing keys, unexpected keys, and keys whose shapes differ (described)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    misshaped = [
        f"{k} (file {tuple(got[k].shape)}, model {tuple(v.shape)})"
        for k, v in expected.items()
        if k in got and tuple(got[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, misshaped


def _describe_diff(diff: tuple[list[str], list[str], list[str]]) -> str:
    labels = ("missing keys", "unexpected keys", "mis-shaped")
    return "; ".join(
        f"{label}: {_some(items)}" for label, items in zip(labels, diff, strict=True) if items
    )


def _load_guarded(
    path: Path, name: str, kind: str, input_shape: tuple[int, ...] | None
) -> ModelBundle:
    """A TorchScript file or ``torch.export`` program, untrusted: its archive vetted here,
    its first load and run in the guarded child (:mod:`explorer.load.guard`), and the plain
    program the child returns vetted again before it is built here."""
    if kind == "torchscript" and input_shape is None:
        raise ModelError(
            f"{name} is a TorchScript model, which does not record the shape of its input. "
            "Give the shape of one sample without the batch dimension (input_shape, e.g. "
            "(1, 8, 8) for 8x8 greyscale images); the app and CLI take it from the "
            "validation data, so load the data first."
        )
    data = read_model_file(path, name)
    if kind == "torchscript":
        vet_torchscript(data, name)
    else:
        check_pt2(data, name)
    archive, shape = run_guarded(kind, data, name, input_shape)
    with quiet_torch():
        module = plain(vet_pt2(archive, name).module(check_guards=False))
    card = {"file": name, "format": "torchscript" if kind == "torchscript" else "torch.export"}
    return _checked(bundle_from_module(module, name, shape, card, "file", module))


def read_model_file(path: Path, name: str) -> bytes:
    """The file's bytes, refused unread when it is over the model file limit."""
    size = path.stat().st_size
    if size > MAX_MODEL_FILE_BYTES:
        raise ModelError(
            f"{name}: {size:,} bytes is over the limit of {MAX_MODEL_FILE_BYTES:,} bytes "
            "for a model file."
        )
    return path.read_bytes()


def _checked(bundle: ModelBundle) -> ModelBundle:
    """Refuse models whose output rows do not follow their input rows (one logit row each)."""
    probe = torch.zeros((3, *bundle.input_shape))
    try:
        logits, _ = bundle.program.run(probe)
    except Exception as exc:  # the user's graph may raise anything
        raise ModelError(
            f"{bundle.name}: the model fails on a batch of 3 samples: {first_line(exc)}. "
            f"It must accept any batch size; {DYNAMIC_BATCH_HINT}."
        ) from None
    if logits.shape[0] != 3:
        raise ModelError(
            f"{bundle.name}: on a batch of 3 samples the model returns {logits.shape[0]} rows "
            "of logits; it must return one row per sample."
        )
    return bundle


def _some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
