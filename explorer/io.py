"""Loading the user's own model and validation data, safely, with one clear error per failure.

Model files, recognised by their content (the extension only names the file):

* **TorchScript** (``torch.jit.save``): converted to a ``torch.export`` program. TorchScript
  does not record its input shape, so ``input_shape`` (one sample's shape) is required.
* **torch.export programs** (``torch.export.save``, ``.pt2``): used as they are; the input
  shape comes from the program's input placeholder.
* **state_dicts** (safetensors, or ``torch.save(model.state_dict())``): loaded into the zoo
  architecture ``arch``, or the one whose keys and shapes match exactly.

Validation data: ``.npz`` with arrays ``x`` and ``y``, or ``torch.save({"x": x, "y": y})``.

Nothing is unpickled beyond tensors (``torch.load(weights_only=True)``,
``np.load(allow_pickle=False)``). Every failure is a :class:`ModelError` or
:class:`DataError` that says what is wrong and what to do.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch._export.converter import TS2EPConverter

from explorer.bundle import ModelBundle, bundle_from_module, export_module
from explorer.data import ValidationSet
from explorer.errors import DataError, ModelError
from explorer.zoo import DIGITS_INPUT_SHAPE, ZOO, zoo_entry

MODEL_FORMATS = (
    "TorchScript (torch.jit.save), a torch.export program (torch.export.save, .pt2), "
    "safetensors, or a state_dict saved with torch.save (.pt/.pth)"
)
DATA_FORMATS = (
    "an .npz file with arrays x and y (np.savez(path, x=x, y=y)) or a .pt file holding "
    'a dict of tensors (torch.save({"x": x, "y": y}, path))'
)
SAVE_HINT = (
    "save the weights with torch.save(model.state_dict(), path) or "
    "safetensors.torch.save_file(model.state_dict(), path), or the whole model as "
    "TorchScript (torch.jit.script(model).save(path)) or a torch.export program "
    "(torch.export.save(torch.export.export(model, (x,)), path))"
)
EXPORT_HINT = (
    "export the model with torch.export and a dynamic batch dimension: "
    "torch.export.save(torch.export.export(model, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), 'model.pt2')"
)
DYNAMIC_BATCH_HINT = (
    "export it again with a dynamic batch dimension: torch.export.export(model, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), and avoid hard-coded batch sizes "
    "such as x.view(32, -1) (use x.flatten(1))"
)


# --------------------------------------------------------------------------- models


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
    with _temp_file(data, filename) as path:
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
    kind = _sniff(path, name, ModelError)
    if kind == "torchscript":
        return _load_torchscript(path, name, input_shape)
    if kind == "export":
        return _load_exported(path, name, input_shape)
    if kind == "safetensors":
        try:
            state_dict = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{name}: {_corrupt(exc)}") from None
        return _load_state_dict(state_dict, name, arch, "safetensors")
    if kind in ("torch", "pickle"):
        return _load_state_dict(_torch_load(path, name, ModelError), name, arch, "state_dict")
    raise ModelError(
        f"{name}: not a model file Pruning Explorer can read. Expected {MODEL_FORMATS}."
    )


def _load_state_dict(obj: object, name: str, arch: str | None, fmt: str) -> ModelBundle:
    """Build the zoo architecture ``arch`` (or the matching one) and load ``obj`` into it."""
    state_dict = _as_state_dict(obj, name)
    _check_finite(state_dict, name)
    if arch is None:
        arch = match_architecture(state_dict, name)
    entry = zoo_entry(arch)
    model = entry.build()
    diff = _state_dict_diff(model.state_dict(), state_dict)
    if any(diff):
        raise ModelError(
            f"{name}: the weights do not fit the '{arch}' architecture: {_describe_diff(diff)}."
        )
    model.load_state_dict(state_dict)
    model.eval()
    card = {"file": name, "format": fmt, "architecture": arch}
    return _checked(bundle_from_module(model, name, DIGITS_INPUT_SHAPE, card, source="file"))


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


def _load_torchscript(path: Path, name: str, input_shape: tuple[int, ...] | None) -> ModelBundle:
    """Convert TorchScript into an analysable program.

    ``TS2EPConverter`` (torch 2.13) runs the TorchScript graph and retraces it with
    ``torch.export``, but it lifts every weight as a *buffer* and emits the generic
    ``aten.convolution``; the engine finds prunable layers by ``aten.conv2d`` / ``aten.linear``
    ops on *parameters*. So we turn the TorchScript parameters back into ``nn.Parameter``s
    under their ``state_dict`` names, rewrite 2-D non-transposed convolutions as
    ``aten.conv2d`` (the same computation), and export the result once more with a dynamic
    batch dimension. Wrapping the ScriptModule and exporting it directly does not work: the
    TorchScript interpreter sees concrete sizes, so the batch dimension gets specialised.
    The converted program is checked against the TorchScript model on random inputs.
    """
    if input_shape is None:
        raise ModelError(
            f"{name} is a TorchScript model, which does not record the shape of its input. "
            "Give the shape of one sample without the batch dimension (input_shape, e.g. "
            "(1, 8, 8) for 8x8 greyscale images); the app and CLI take it from the "
            "validation data, so load the data first."
        )
    input_shape = tuple(int(d) for d in input_shape)
    try:
        with _quiet_torch():  # torch.jit.load warns that TorchScript is deprecated
            script = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # the TorchScript reader raises RuntimeError for most damage
        raise ModelError(f"{name}: {_corrupt(exc)}") from None
    _check_finite(script.state_dict(), name)
    example = torch.zeros((2, *input_shape))
    try:
        with torch.no_grad():
            script(example)
    except Exception as exc:  # whatever the user's TorchScript code raises
        raise ModelError(
            f"{name}: the TorchScript model cannot run on inputs of shape {input_shape} per "
            f"sample: {_first_line(exc)}. Check that input_shape is one sample's shape "
            "(without the batch dimension) and matches the data."
        ) from None
    try:
        with _quiet_torch():
            program = TS2EPConverter(script, (example,)).convert()
            module = program.module(check_guards=False)
    except Exception as exc:  # the converter raises many internal types
        raise ModelError(
            f"{name}: this TorchScript model cannot be converted for analysis "
            f"({_first_line(exc)}). Instead, {EXPORT_HINT}."
        ) from None
    _restore_parameters(module, dict(script.named_parameters()))
    _use_conv2d(module)
    module = _plain(_reexport(module, example, name))
    probe = torch.randn((3, *input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = script(probe), module(probe)
    if not (
        isinstance(expected, torch.Tensor)
        and isinstance(got, torch.Tensor)
        and expected.shape == got.shape
        and torch.allclose(expected, got, atol=1e-5)
    ):
        raise ModelError(
            f"{name}: the converted TorchScript model does not reproduce the original's "
            f"outputs, so it cannot be analysed safely. Instead, {EXPORT_HINT}."
        )
    card = {"file": name, "format": "torchscript"}
    return _checked(bundle_from_module(module, name, input_shape, card, "file", module))


def _restore_parameters(module: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Turn the buffers the converter made of ``params`` back into parameters, same names."""
    for pname in params:
        owner_name, _, leaf = pname.rpartition(".")
        owner = module.get_submodule(owner_name)
        if leaf in owner._buffers:
            owner.register_parameter(leaf, nn.Parameter(owner._buffers.pop(leaf)))


def _use_conv2d(module: torch.fx.GraphModule) -> None:
    """Rewrite ``aten.convolution`` of 2-D, non-transposed convs as the equal ``aten.conv2d``."""
    aten = torch.ops.aten
    for node in module.graph.nodes:
        if node.op == "call_function" and node.target is aten.convolution.default:
            x, weight, bias, stride, padding, dilation, transposed, _, groups = node.args
            if not transposed and len(stride) == 2:
                node.target = aten.conv2d.default
                node.args = (x, weight, bias, stride, padding, dilation, groups)
    module.recompile()


def _load_exported(path: Path, name: str, input_shape: tuple[int, ...] | None) -> ModelBundle:
    """A ``torch.export`` program; one with a static batch size is re-exported if it can be."""
    try:
        with _quiet_torch():
            program = torch.export.load(str(path))
    except Exception as exc:  # serialisation errors come in many types
        raise ModelError(
            f"{name}: {_corrupt(exc)} (a torch.export program must also come from a "
            f"compatible torch version; this is {torch.__version__})"
        ) from None
    shape = _program_input_shape(program, name, input_shape)
    _check_finite({**program.state_dict, **program.constants}, name)
    module = program.module(check_guards=False)
    if not isinstance(shape[0], torch.SymInt):
        example = torch.zeros((2, *shape[1:]))
        try:
            module = _reexport(module, example, name)
        except ModelError:
            raise ModelError(
                f"{name} was exported with a fixed batch size of {shape[0]}, and its graph "
                f"cannot run on other batch sizes; {DYNAMIC_BATCH_HINT}."
            ) from None
    module = _plain(module)
    card = {"file": name, "format": "torch.export"}
    return _checked(bundle_from_module(module, name, shape[1:], card, "file", module))


def _program_input_shape(
    program: torch.export.ExportedProgram, name: str, input_shape: tuple[int, ...] | None
) -> tuple:
    """The user input's shape, batch first: the batch as exported (int or SymInt), the rest
    as ints (dynamic ones from ``input_shape`` or the saved example input)."""
    user = [
        s.arg.name
        for s in program.graph_signature.input_specs
        if s.kind == torch.export.graph_signature.InputKind.USER_INPUT
    ]
    vals = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder"}
    if len(user) != 1 or not isinstance(vals.get(user[0]), torch.Tensor):
        raise ModelError(
            f"{name}: the program takes {len(user)} inputs; Pruning Explorer needs a model "
            "with exactly one input tensor (a batch of samples)."
        )
    shape = tuple(vals[user[0]].shape)
    if len(shape) < 2:
        raise ModelError(
            f"{name}: the program's input has shape {shape}; expected a batch of samples, "
            "(batch, *sample_shape)."
        )
    examples = program.example_inputs[0] if program.example_inputs else ()
    sample = []
    for i, dim in enumerate(shape[1:]):
        if isinstance(dim, int):
            sample.append(dim)
        elif input_shape is not None and len(input_shape) == len(shape) - 1:
            sample.append(int(input_shape[i]))
        elif examples and isinstance(examples[0], torch.Tensor):
            sample.append(int(examples[0].shape[i + 1]))
        else:
            raise ModelError(
                f"{name}: dimension {i + 1} of the program's input is dynamic and no example "
                "input was saved; give input_shape, one sample's shape (e.g. (1, 8, 8))."
            )
    return (shape[0], *sample)


def _reexport(module: nn.Module, example: torch.Tensor, name: str) -> torch.fx.GraphModule:
    """Export ``module`` with a dynamic batch; a clear error says why it cannot be."""
    try:
        with _quiet_torch():
            return export_module(module, example)
    except ModelError as exc:
        cause = str(exc.__cause__ or exc)
        if "Constraints violated" in cause or "specialized" in cause:
            raise ModelError(
                f"{name}: the model only works for one batch size (torch.export found the "
                f"batch dimension fixed to a constant); {DYNAMIC_BATCH_HINT}."
            ) from None
        raise ModelError(f"{name}: {exc}. From the model's code, {EXPORT_HINT}.") from None


def _plain(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``ExportedProgram.module()`` forbids ``eval()``/``train()`` by instance overrides.

    ``bundle_from_module`` calls ``model.eval()``; the exported graph has its mode baked in,
    so nn.Module's own methods (which only set ``training`` flags) are harmless.
    """
    for attr in ("eval", "train"):
        if attr in vars(module):
            delattr(module, attr)
    return module


def _checked(bundle: ModelBundle) -> ModelBundle:
    """Refuse models whose output rows do not follow their input rows (one logit row each)."""
    probe = torch.zeros((3, *bundle.input_shape))
    try:
        logits, _ = bundle.program.run(probe)
    except Exception as exc:  # the user's graph may raise anything
        raise ModelError(
            f"{bundle.name}: the model fails on a batch of 3 samples: {_first_line(exc)}. "
            f"It must accept any batch size; {DYNAMIC_BATCH_HINT}."
        ) from None
    if logits.shape[0] != 3:
        raise ModelError(
            f"{bundle.name}: on a batch of 3 samples the model returns {logits.shape[0]} rows "
            "of logits; it must return one row per sample."
        )
    return bundle


def _check_finite(tensors: Mapping[str, object], name: str) -> None:
    for key, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise ModelError(
                    f"{name}: '{key}' has {bad} NaN or infinite value(s); the model cannot be "
                    "evaluated. Check the training run that produced it (a diverged loss?) "
                    "and save the weights again."
                )


# --------------------------------------------------------------------------- data


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
    with _temp_file(data, filename) as path:
        return _load_data(path, path.name, num_classes)


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
    kind = _sniff(path, name, DataError)
    if kind == "npz":
        x, y = _read_npz(path, name)
    elif kind in ("torch", "pickle"):
        obj = _torch_load(path, name, DataError)
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
        raise DataError(f"{name}: {_corrupt(exc)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{name}: {_corrupt(exc)}") from None


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


# --------------------------------------------------------------------------- files


def _sniff(path: Path, name: str, error: type[Exception]) -> str:
    """What the file holds, from its first bytes: 'torchscript', 'export', 'torch' (a
    ``torch.save`` zip), 'pickle' (legacy ``torch.save``), 'npz', 'safetensors', 'unknown'."""
    if not path.is_file():
        raise error(f"{name}: no such file.")
    size = path.stat().st_size
    if size == 0:
        raise error(f"{name}: the file is empty (0 bytes); the upload or save did not finish.")
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise error(f"{name}: {_corrupt(exc)}") from None
        if any(n.endswith("/archive_format") for n in names):
            return "export"
        if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        if names and all(n.endswith(".npy") for n in names):
            return "npz"
        return "unknown"
    if head.startswith(b"\x80"):  # a pickle: torch.save's legacy (non-zip) format
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        header = int.from_bytes(head[:8], "little")
        if 8 + header > size:
            raise error(
                f"{name}: the file is truncated (its safetensors header says "
                f"{header} bytes, the file has {size}); save or upload it again."
            )
        return "safetensors"
    return "unknown"


def _torch_load(path: Path, name: str, error: type[Exception]) -> object:
    """``torch.load(weights_only=True)``: tensors and plain containers, never other objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise error(f"{name}: {_corrupt(exc)}") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        raise error(
            f"{name} holds a pickled Python object{what}, such as a whole nn.Module saved "
            "with torch.save(model). It is not loaded, because unpickling can run arbitrary "
            f"code. Instead, {SAVE_HINT}."
        ) from None
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, ... on damage
        raise error(f"{name}: {_corrupt(exc)}") from None


def _corrupt(exc: BaseException) -> str:
    return f"the file is corrupt or truncated ({_first_line(exc)}); save or upload it again."


def _first_line(exc: BaseException) -> str:
    """The gist of ``exc``: its first line (the last for a TorchScript traceback)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
    return line.rstrip(".")


def _some(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


@contextmanager
def _temp_file(data: bytes, filename: str) -> Iterator[Path]:
    """``data`` written to a private temporary file named like ``filename`` (no folders)."""
    safe = Path(filename).name or "upload"
    with tempfile.TemporaryDirectory(prefix="pruning-explorer-") as folder:
        path = Path(folder) / safe
        path.write_bytes(data)
        yield path


@contextmanager
def _quiet_torch() -> Iterator[None]:
    """Silence torch's export logs and warnings: the user gets one ModelError instead."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
