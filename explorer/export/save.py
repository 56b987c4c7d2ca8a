"""Saving a model the explorer made (a fine-tuned one) so that
:func:`explorer.load.model_file.load_model` and ``pruning-explorer evaluate --model FILE`` read
it back with the same outputs.

Two formats, chosen by the file's extension:

* ``.safetensors``: the ``state_dict`` of a demo architecture (what
  :func:`explorer.export.outputs.export_all` writes as ``pruned.safetensors``); the loader
  recognises the architecture from its keys and shapes. Only for models that *are* a demo
  architecture (its class, its parameter names and shapes).
* ``.pt2``: a ``torch.export`` program with a dynamic batch dimension, for any model.

Long runs check where they will write before they start (:func:`check_writable`,
:func:`check_output`): a fine-tune of many epochs must not end in "cannot write".
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from explorer.bundle import ModelBundle, export_program
from explorer.errors import ExplorerError, ModelError
from explorer.load.files import first_line, quiet_torch
from explorer.load.zoo import ZOO

FORMATS = (".safetensors", ".pt2")


def zoo_architecture(model: nn.Module) -> str | None:
    """The demo architecture ``model`` is an instance of (same class, same state_dict keys
    and shapes), or None."""
    state = model.state_dict()
    for name, entry in ZOO.items():
        with torch.device("meta"):
            reference = entry.build()
        if type(reference) is not type(model):
            continue
        ref = reference.state_dict()
        if set(ref) == set(state) and all(ref[k].shape == state[k].shape for k in ref):
            return name
    return None


def default_suffix(bundle: ModelBundle) -> str:
    """``.safetensors`` for a demo architecture, else ``.pt2``."""
    return ".safetensors" if zoo_architecture(bundle.model) else ".pt2"


def model_bytes(bundle: ModelBundle, suffix: str | None = None) -> bytes:
    """The file :func:`save_model` would write, as bytes (for a download button)."""
    suffix = suffix or default_suffix(bundle)
    check_suffix(bundle, suffix)
    if suffix == ".safetensors":
        return safetensors_bytes(_state(bundle.model), metadata=_metadata(bundle))
    buffer = io.BytesIO()
    torch.export.save(_program(bundle), buffer)
    return buffer.getvalue()


def save_model(bundle: ModelBundle, path: str | os.PathLike) -> Path:
    """Write ``bundle``'s model to ``path`` (format from the extension; see the module)."""
    path = Path(path)
    data = model_bytes(bundle, path.suffix.lower())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise ExplorerError(f"Cannot write {path}: {exc.strerror}.") from None
    return path


def check_writable(path: str | os.PathLike) -> Path:
    """Raise unless a file can be written at ``path`` (missing folders are created when
    it is written): not a folder, and the nearest existing folder above it takes a new file
    (tried for real, so read-only file systems and permissions are both caught)."""
    path = Path(path)
    if path.is_dir():
        raise ExplorerError(f"Cannot write {path}: it is a folder; give a file name.")
    if path.exists() and not os.access(path, os.W_OK):
        raise ExplorerError(f"Cannot write {path}: the file is read-only.")
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise ExplorerError(f"Cannot write {path}: {folder} is a file, not a folder.")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ExplorerError(f"Cannot write {path}: {exc.strerror} (in {folder}).") from None
    return path


def check_output(bundle: ModelBundle, path: str | os.PathLike) -> Path:
    """Raise unless :func:`save_model` can write ``bundle`` to ``path``: a known extension
    the model can be saved in, and a writable place (check before a long run)."""
    path = check_writable(path)
    check_suffix(bundle, path.suffix.lower())
    return path


def check_format(suffix: str) -> None:
    """Raise unless ``suffix`` is one of :data:`FORMATS` (no model needed)."""
    if suffix not in FORMATS:
        raise ExplorerError(
            f"Cannot save a model as '{suffix or '(no extension)'}': use .safetensors (a demo "
            "architecture's weights) or .pt2 (a torch.export program, any model)."
        )


def check_suffix(bundle: ModelBundle, suffix: str) -> None:
    """Raise unless ``bundle`` can be saved in the format of ``suffix`` (check before a
    long run, not after it)."""
    check_format(suffix)
    if suffix == ".safetensors" and zoo_architecture(bundle.model) is None:
        raise ModelError(
            f"'{bundle.name}' is not a demo architecture, so its weights alone cannot be "
            "loaded back; save it as a .pt2 torch.export program instead."
        )


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def _metadata(bundle: ModelBundle) -> dict[str, str]:
    origin = bundle.card.get("finetuned_from")
    return {"name": bundle.name, **({"finetuned_from": str(origin)} if origin else {})}


def _program(bundle: ModelBundle) -> torch.export.ExportedProgram:
    try:
        with quiet_torch():
            return export_program(bundle.model.eval(), torch.zeros((2, *bundle.input_shape)))
    except Exception as exc:  # export raises many internal types
        raise ModelError(
            f"'{bundle.name}' cannot be exported as a torch.export program: {first_line(exc)}."
        ) from None
