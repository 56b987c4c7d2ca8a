"""Loading the user's validation data, safely, and checking that it fits a model.

Validation data: ``.npz`` with arrays ``x`` and ``y``, or ``torch.save({"x": x, "y": y})``.
A file with ``x`` alone is data without labels: no accuracy, but fidelity to the dense model.
Token-id data (``x`` of shape (N, L)) may name its padding token as ``pad_id``, a single
integer beside ``x`` (``np.savez(path, x=ids, y=y, pad_id=tokenizer.pad_token_id)``):
per-token statistics then leave the padding out (:func:`with_padding`).

A data file is untrusted and may be crafted to be small on disk and huge in memory: an
``.npy`` header that claims 10^12 images, a compressed member that inflates to gigabytes, a
tensor expanded with stride 0 (one stored value that claims 10^8 images), sparse, quantized
or meta tensors. So every file is judged from its headers before a byte of data is read
(:func:`peek_data` gives its :class:`DataShape`, which callers check against the model's
memory needs, :func:`explorer.load.memory.check_memory`); only then are the values copied in:

* ``.npz``: each member's ``.npy`` header gives dtype and shape; the archive's declared size
  of the member must equal what the header claims (no stream longer than its header says),
  and the decoded data (``x`` as float32, ``y`` as int64) must stay under
  :data:`~explorer.limits.MAX_DATA_TENSOR_BYTES`. Values are read into an array of exactly
  the vetted size, never by ``np.load``.
* ``.pt``: the archive's members must be stored as ``torch.save`` writes them (uncompressed,
  a small pickle), then ``torch.load(weights_only=True, mmap=True)`` maps the tensors without
  reading them; dense, non-quantized CPU tensors whose values fit their storage are copied.

Nothing is unpickled beyond tensors. Every failure is a :class:`DataError` that says what is
wrong and what to do.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from explorer.bundle import ModelBundle
from explorer.data import ValidationSet
from explorer.errors import DataError, name_some, short
from explorer.limits import (
    MAX_DATA_ARCHIVE_MEMBERS,
    MAX_DATA_FILE_BYTES,
    MAX_DATA_PICKLE_BYTES,
    MAX_DATA_TENSOR_BYTES,
)
from explorer.load.files import (
    corrupt,
    quiet_torch,
    sniff,
    temp_file,
    torch_load,
    view_reach,
    zip_directory,
)

DATA_FORMATS = (
    "an .npz file with arrays x and y (np.savez(path, x=x, y=y)) or a .pt file holding "
    'a dict of tensors (torch.save({"x": x, "y": y}, path))'
)
X_BYTES, Y_BYTES = 4, 8  # decoded: x as float32, y as int64
PAD_KEY = "pad_id"  # token-id data's padding token: one integer
READ_CHUNK = 4 << 20  # bytes read from a member at a time
FINITE_CHUNK = 1 << 20  # values checked for NaN at a time
NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
TORCH_KINDS = {
    **dict.fromkeys([torch.float64, torch.float32, torch.float16, torch.bfloat16], "f"),
    **dict.fromkeys([torch.int8, torch.int16, torch.int32, torch.int64], "i"),
    **dict.fromkeys([torch.uint8, torch.uint16, torch.uint32, torch.uint64], "u"),
    torch.bool: "b",
}
Reader = Callable[[], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class DataShape:
    """What a data file holds, known from its headers alone: ``samples`` inputs of
    ``sample_shape`` stored as ``dtype`` (x's), in the file called ``name``; ``pad_id``:
    the padding token of token-id data, where the file names one (its one value is read
    with the headers)."""

    samples: int
    sample_shape: tuple[int, ...]
    dtype: str
    name: str = "data"
    pad_id: int | None = None

    @property
    def sample_bytes(self) -> int:
        """Memory one sample takes once loaded: its x as float32 and its label as int64."""
        return math.prod(self.sample_shape) * X_BYTES + Y_BYTES

    @property
    def nbytes(self) -> int:
        return self.samples * self.sample_bytes

    @classmethod
    def of(cls, data: ValidationSet) -> DataShape:
        return cls(len(data), tuple(data.x.shape[1:]), str(data.x.dtype), data.name)


def bytes_text(n: int) -> str:
    """``n`` bytes for a person: '512 B', '12.3 MiB', '1.5 TiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def peek_data(path: str | os.PathLike) -> DataShape:
    """The :class:`DataShape` of the data file at ``path``, from its headers: nothing is
    decoded, and a file that is malformed, inconsistent or over the limits is refused."""
    path = Path(path)
    return _open(path, path.name)[0]


def peek_data_bytes(data: bytes, filename: str) -> DataShape:
    """:func:`peek_data` for uploaded bytes."""
    with temp_file(data, filename) as path:
        return _open(path, path.name)[0]


def load_data(path: str | os.PathLike, num_classes: int | None = None) -> ValidationSet:
    """Load validation data: ``x`` (N, *sample_shape) and integer labels ``y`` (N,).

    Integer (or boolean) ``x`` becomes float32; float labels that are whole numbers become
    int64. ``num_classes`` defaults to the largest label + 1; pass the model's
    ``bundle.num_classes`` when a class may be absent from the data. The file is vetted as
    :func:`peek_data` does before its values are read.
    """
    path = Path(path)
    return _load_data(path, path.name, num_classes)


def load_data_bytes(data: bytes, filename: str, num_classes: int | None = None) -> ValidationSet:
    """:func:`load_data` for uploaded bytes; ``filename`` names the set and messages."""
    with temp_file(data, filename) as path:
        return _load_data(path, path.name, num_classes)


def with_padding(bundle: ModelBundle, shape: DataShape) -> ModelBundle:
    """``bundle`` with the data's padding token (``shape.pad_id``) in its card, so that
    per-token statistics leave the padding out (:meth:`ModelBundle.real_tokens`); as it is
    where the file names none. A ``pad_id`` needs token ids, (N, L) integers, and must agree
    with a padding token the model already has."""
    if shape.pad_id is None:
        return bundle
    if len(shape.sample_shape) != 1:
        raise DataError(
            f"{shape.name} names a padding token (pad_id {shape.pad_id}) but x has "
            f"{short(shape.sample_shape)} per sample: pad_id is for token ids, x of shape "
            "(N, L). Leave pad_id out for other data.")
    own = bundle.card.get("pad_id", getattr(bundle.model, "pad_id", None))
    if own is not None and int(own) != shape.pad_id:
        raise DataError(f"{shape.name} names padding token {shape.pad_id}, but {bundle.name} "
                        f"pads with {int(own)}; save the data with pad_id={int(own)} or "
                        "without pad_id.")
    return replace(bundle, card={**bundle.card, "pad_id": shape.pad_id})


def require_digits_input(bundle: ModelBundle, what: str = "validation data") -> None:
    """Raise unless ``bundle`` takes 8x8 digits, so the bundled digits ``what`` (validation
    or training data) can stand in."""
    if tuple(bundle.input_shape) != (1, 8, 8) or bundle.num_classes != 10:
        raise DataError(
            f"'{bundle.name}' does not take 8x8 digits (it expects {tuple(bundle.input_shape)} "
            f"per sample and predicts {bundle.num_classes} classes): give its {what} "
            "too (.npz with arrays x, y; or .pt with tensors x, y)."
        )


def check_sample_shape(bundle: ModelBundle, shape: DataShape) -> None:
    """Raise a :class:`DataError` unless one sample of ``shape`` is what ``bundle`` takes."""
    sample = tuple(shape.sample_shape)
    if sample != tuple(bundle.input_shape):
        hint = ""
        if math.prod(sample) == math.prod(bundle.input_shape):
            hint = f" Reshape x to (N, {', '.join(map(str, bundle.input_shape))})."
        raise DataError(
            f"{shape.name} does not fit {bundle.name}: the model expects {bundle.input_shape} "
            f"per sample, the data has {short(sample)}.{hint}"
        )


def check_compatible(bundle: ModelBundle, data: ValidationSet) -> None:
    """Raise a :class:`DataError` unless ``data`` fits ``bundle``: sample shape and classes.

    Labels must be below the model's output width; a validation set in which some classes
    are absent is fine.
    """
    check_sample_shape(bundle, DataShape.of(data))
    top = -1 if data.y is None else int(data.y.max())
    if top >= bundle.num_classes:
        raise DataError(
            f"{data.name} has labels the model cannot predict: model output width "
            f"{bundle.num_classes} vs labels up to {top}."
        )


def _load_data(path: Path, name: str, num_classes: int | None) -> ValidationSet:
    _, read = _open(path, name)
    x, y = read()
    return _validation_set(x, y, num_classes, name)


def _open(path: Path, name: str) -> tuple[DataShape, Reader]:
    """The file's shape from its headers, and a function that reads its vetted values."""
    if path.is_file() and path.stat().st_size > MAX_DATA_FILE_BYTES:
        raise DataError(
            f"{name} is {bytes_text(path.stat().st_size)}; a data file may be at most "
            f"{bytes_text(MAX_DATA_FILE_BYTES)} here. Pass a subset of the samples."
        )
    _check_zip_directory(path, name)
    kind = sniff(path, name, DataError)
    if kind == "npz":
        return _open_npz(path, name)
    if kind == "torch":
        return _open_torch(path, name)
    if kind == "pickle":
        raise DataError(
            f"{name} is in torch's legacy (before 1.6) format, whose tensors cannot be "
            "checked before they are read. Save it again with torch.save({'x': x, 'y': y}, "
            "path) from a current PyTorch."
        )
    raise DataError(f"{name}: not a data file Pruning Explorer can read. Expected {DATA_FORMATS}.")


def _check_zip_directory(path: Path, name: str) -> None:
    """Refuse a zip archive listing more members, or a larger central directory, than a
    data file has (read from its end records, before any zip reader parses it)."""
    found = zip_directory(path)
    if found is None:
        return  # not a zip: sniff says what it is
    members, directory = found
    if members > MAX_DATA_ARCHIVE_MEMBERS or directory > MAX_DATA_ARCHIVE_MEMBERS * 1024:
        raise DataError(
            f"{name}: the archive lists {members:,} members in a directory of "
            f"{bytes_text(directory)}; a data file has a few (x and y). The file is refused."
        )


# ----------------------------------------------------------------- the checks both formats share


def _shape_of(x: _NpyHeader | torch.Tensor, y: _NpyHeader | torch.Tensor | None,
              name: str) -> DataShape:
    """The :class:`DataShape` of ``x`` and ``y`` (tensors or headers; ``y`` None: no
    labels), or why they are refused."""
    x_shape = tuple(x.shape)
    y_shape = (x_shape[0] if x_shape else 0,) if y is None else tuple(y.shape)
    if len(x_shape) < 2:
        raise DataError(
            f"{name}: x has shape {x_shape}; expected (N, *sample_shape), one row "
            "per sample, e.g. (N, 1, 8, 8)."
        )
    if len(y_shape) != 1:
        raise DataError(
            f"{name}: y has shape {short(y_shape)}; expected (N,) integer class labels "
            "(for one-hot labels use y.argmax(1))."
        )
    if x_shape[0] != y_shape[0]:
        raise DataError(
            f"{name}: x has {x_shape[0]} samples but y has {y_shape[0]} labels; "
            "they must have the same length."
        )
    if x_shape[0] == 0:
        raise DataError(f"{name}: the data set is empty; it needs at least one sample.")
    dtype = str(x.dtype).removeprefix("torch.")
    shape = DataShape(int(x_shape[0]), tuple(int(s) for s in x_shape[1:]), dtype, name)
    if shape.nbytes > MAX_DATA_TENSOR_BYTES:
        fit = MAX_DATA_TENSOR_BYTES // shape.sample_bytes
        raise DataError(
            f"{name}: x and y claim {shape.samples:,} samples of {short(shape.sample_shape)}, "
            f"{bytes_text(shape.nbytes)} once loaded (x as float32, y as int64); validation "
            f"data may take at most {bytes_text(MAX_DATA_TENSOR_BYTES)} here. Pass a subset "
            f"(at most {fit:,} samples of this size)."
        )
    return shape


def _check_dtype(dtype: np.dtype | torch.dtype, key: str, name: str) -> None:
    if isinstance(dtype, np.dtype):
        kind = dtype.kind if not dtype.hasobject else "O"
    else:
        kind = "c" if dtype.is_complex else TORCH_KINDS.get(dtype, "?")
    if kind == "O":
        raise DataError(
            f"{name}: x or y is stored as Python objects, which are not loaded (unpickling "
            "can run code). Save numeric arrays: np.savez(path, x=x.astype('float32'), "
            "y=y.astype('int64'))."
        )
    if kind == "c":
        raise DataError(f"{name}: {key} has dtype {dtype}; expected real numbers.")
    if kind not in "biuf":
        raise DataError(f"{name}: {key} has dtype {dtype}; expected numbers.")


def _pick_xy(found: Mapping, name: str) -> tuple:
    """``found['x'], found['y']`` (``y`` None where ``x`` is all the file holds, besides a
    ``pad_id``: data without labels); a clear error names the keys that are there instead."""
    if "x" in found and len(set(found) - {PAD_KEY}) == 1:
        return found["x"], None
    missing = [key for key in ("x", "y") if key not in found]
    if missing:
        keys = name_some([str(k) for k in found]) or "none"
        raise DataError(
            f"{name}: missing {' and '.join(repr(k) for k in missing)}; the file has keys "
            f"{keys}. Save inputs as 'x' and labels as 'y' (or 'x' alone for data without "
            f"labels): {DATA_FORMATS}."
        )
    return found["x"], found["y"]


# ----------------------------------------------------------------- .npz


@dataclass(frozen=True)
class _NpyHeader:
    """An ``.npy`` member's header, and where in the member its values start."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    offset: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


_AGAIN = "Save it again with np.savez(path, x=x, y=y)."


def _open_npz(path: Path, name: str) -> tuple[DataShape, Reader]:
    with _zip(path, name) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        x_info, y_info = _pick_xy(members, name)
        x = _npy_header(archive, x_info.filename, "x", name)
        y = None if y_info is None else _npy_header(archive, y_info.filename, "y", name)
        pad_id = _npz_pad_id(archive, members, name)
    shape = replace(_shape_of(x, y, name), pad_id=pad_id)
    _check_member_size(x_info, x, "x", name)
    if y_info is not None:
        _check_member_size(y_info, y, "y", name)

    def read() -> tuple[torch.Tensor, torch.Tensor | None]:
        with _zip(path, name) as archive:
            return (_read_npy(archive, x_info.filename, x, name),
                    None if y_info is None else _read_npy(archive, y_info.filename, y, name))

    return shape, read


def _npz_pad_id(archive: zipfile.ZipFile, members: Mapping[str, zipfile.ZipInfo],
                name: str) -> int | None:
    """The ``pad_id`` member's one integer (vetted like x and y: its shape and size before
    its value is read), or None without one."""
    info = members.get(PAD_KEY)
    if info is None:
        return None
    header = _npy_header(archive, info.filename, PAD_KEY, name)
    _check_member_size(info, header, PAD_KEY, name)
    _check_one_value(header.shape, name)
    return _pad_value(_read_npy(archive, info.filename, header, name), name)


def _check_one_value(shape: tuple[int, ...], name: str) -> None:
    if math.prod(shape) != 1:
        raise DataError(f"{name}: pad_id has shape {short(shape)}; expected one integer, the "
                        "padding token's id.")


def _pad_value(value: torch.Tensor, name: str) -> int:
    """A ``pad_id`` tensor's one value, which must be a whole number >= 0."""
    number = value.reshape(-1)[0].item()
    if isinstance(number, bool) or not float(number).is_integer() or number < 0:
        raise DataError(f"{name}: pad_id is {number!r}; expected the padding token's id, a "
                        "whole number >= 0.")
    return int(number)


def _zip(path: Path, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"{name}: {corrupt(exc)}") from None


def _npy_header(archive: zipfile.ZipFile, member: str, key: str, name: str) -> _NpyHeader:
    """The header of ``key``'s member (nothing else is read): numeric dtype, sane shape."""
    try:
        with archive.open(member) as f:
            version = np.lib.format.read_magic(f)
            parse = NPY_HEADERS.get(version)
            if parse is None:
                raise DataError(f"{name}: {key} is an .npy of version {version}, not read "
                                f"here. {_AGAIN}")
            shape, fortran, dtype = parse(f)
            header = _NpyHeader(tuple(shape), dtype, bool(fortran), f.tell())
    except DataError:
        raise
    except Exception as exc:  # zipfile and numpy raise many types on damage
        raise DataError(f"{name}: {corrupt(exc)}") from None
    _check_dtype(header.dtype, key, name)
    if any(s < 0 for s in header.shape):
        raise DataError(f"{name}: {key} has a negative dimension {header.shape}; {_AGAIN}")
    return header


def _check_member_size(info: zipfile.ZipInfo, header: _NpyHeader, key: str, name: str) -> None:
    """The archive's declared size of the member must be what its header claims: a stream
    that inflates to more than the header says is a decompression bomb or damage."""
    if header.offset + header.nbytes != info.file_size:
        raise DataError(
            f"{name}: {key}'s header claims {header.nbytes:,} bytes of values but the archive "
            f"member holds {max(info.file_size - header.offset, 0):,}; the file is "
            f"inconsistent (damaged or crafted). {_AGAIN}"
        )


def _read_npy(archive: zipfile.ZipFile, member: str, vetted: _NpyHeader, name: str) -> torch.Tensor:
    """The member's values, read into a buffer of the vetted size (the header is read again
    and must not have changed)."""
    if _npy_header(archive, member, "x or y", name) != vetted:
        raise DataError(f"{name} changed while it was being read; load it again.")
    raw = np.empty(vetted.nbytes, dtype=np.uint8)
    try:
        with archive.open(member) as f:
            f.seek(vetted.offset)
            done = 0
            while done < raw.size:
                got = f.readinto(memoryview(raw[done : done + READ_CHUNK]))
                if not got:
                    raise EOFError(f"{member} ends after {done:,} of {raw.size:,} bytes")
                done += got
    except Exception as exc:  # truncated stream, bad CRC, ...
        raise DataError(f"{name}: {corrupt(exc)}") from None
    values = raw.view(vetted.dtype).reshape(vetted.shape, order="F" if vetted.fortran else "C")
    if not values.dtype.isnative:
        values = values.astype(values.dtype.newbyteorder("="))
    return torch.from_numpy(np.ascontiguousarray(values))


# ----------------------------------------------------------------- .pt (torch.save)


def _open_torch(path: Path, name: str) -> tuple[DataShape, Reader]:
    _check_torch_archive(path, name)
    x, y, pad_id = _mapped_xy(path, name)
    shape = replace(_shape_of(x, y, name), pad_id=pad_id)

    def read() -> tuple[torch.Tensor, torch.Tensor | None]:
        x, y, pad_id = _mapped_xy(path, name)
        if replace(_shape_of(x, y, name), pad_id=pad_id) != shape:
            raise DataError(f"{name} changed while it was being read; load it again.")
        return (x.clone(memory_format=torch.contiguous_format),
                None if y is None else y.clone(memory_format=torch.contiguous_format))

    return shape, read


_TORCH_AGAIN = 'the file is damaged or crafted. Save it with torch.save({"x": x, "y": y}, path).'


def _check_torch_archive(path: Path, name: str) -> None:
    """Members stored as ``torch.save`` writes them: uncompressed, and a small pickle (a
    large or compressed one could unpickle into gigabytes of Python objects)."""
    with _zip(path, name) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise DataError(
                    f"{name}: the archive has compressed members, which torch.save never "
                    'writes; the file is refused. Save it with torch.save({"x": x, "y": y}, '
                    "path)."
                )
            if info.filename.endswith("data.pkl") and info.file_size > MAX_DATA_PICKLE_BYTES:
                raise DataError(
                    f"{name}: its pickle is {bytes_text(info.file_size)}, more than the "
                    f"{bytes_text(MAX_DATA_PICKLE_BYTES)} a dict of tensors takes; save only "
                    'the tensors: torch.save({"x": x, "y": y}, path).'
                )


def _mapped_xy(path: Path, name: str) -> tuple[torch.Tensor, torch.Tensor | None, int | None]:
    """``x`` and ``y`` (None: no labels) memory-mapped from the file (nothing read yet),
    each vetted, and the ``pad_id`` (None without one)."""
    with quiet_torch():  # torch warns about sparse and quantized tensors: one message instead
        found = torch_load(path, name, DataError, mmap=True)
    if not isinstance(found, Mapping):
        raise DataError(
            f"{name}: expected a dict with tensors 'x' and 'y' but the file holds "
            f"{type(found).__name__}. Save it as {DATA_FORMATS}."
        )
    x, y = _pick_xy(found, name)
    pad_id = found.get(PAD_KEY)
    if pad_id is not None:
        if isinstance(pad_id, int):  # torch.save({..., "pad_id": 0})
            pad_id = torch.tensor(pad_id)
        pad_id = _vet_tensor(pad_id, PAD_KEY, name)
        _check_one_value(tuple(pad_id.shape), name)
        pad_id = _pad_value(pad_id, name)
    return (_vet_tensor(x, "x", name), None if y is None else _vet_tensor(y, "y", name),
            pad_id)


def _vet_tensor(value: object, key: str, name: str) -> torch.Tensor:
    """``value`` if it is a dense CPU tensor of real numbers whose values are all in its
    storage, each stored once; a :class:`DataError` saying what it is otherwise."""
    if not isinstance(value, torch.Tensor):
        raise DataError(f"{name}: {key} is a {type(value).__name__}; expected a tensor or array.")
    if value.layout != torch.strided or value.is_nested:
        raise DataError(f"{name}: {key} is a {str(value.layout).removeprefix('torch.')} tensor; "
                        f"save it dense: {key}.to_dense().")
    if value.is_quantized:
        raise DataError(f"{name}: {key} is quantized ({value.dtype}); save {key}.dequantize().")
    if value.device.type != "cpu":
        raise DataError(
            f"{name}: {key} is a {value.device.type} tensor, which has a shape but no values "
            "in the file; save real values (a CPU tensor)."
        )
    _check_dtype(value.dtype, key, name)
    stored = value.untyped_storage().nbytes() // value.element_size()
    if view_reach(value.shape, value.stride(), value.storage_offset()) > stored:
        raise DataError(f"{name}: {key} reaches past the values stored for it; {_TORCH_AGAIN}")
    if value.numel() > max(stored - value.storage_offset(), 0):
        raise DataError(
            f"{name}: {key} claims {value.numel():,} values ({len(value):,} "
            f"{'samples' if key == 'x' else 'labels'}) but the file stores {stored:,}: it is "
            "an expanded (stride 0) or overlapping view, which claims more "
            f"data than the file holds. Save a real copy: {key}.contiguous()."
        )
    return value.detach()


# ----------------------------------------------------------------- the loaded set


def _validation_set(
    x: torch.Tensor, y: torch.Tensor | None, num_classes: int | None, name: str
) -> ValidationSet:
    x = x.to(torch.float32)
    bad = _non_finite(x)
    if bad:
        raise DataError(
            f"{name}: x has {bad} NaN or infinite value(s); replace or drop those samples."
        )
    if y is None:  # no labels: the classes are the model's
        return ValidationSet(x.contiguous(), None, int(num_classes or 0), name)
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


def _non_finite(x: torch.Tensor) -> int:
    """How many values of ``x`` are NaN or infinite, counted in chunks (``isfinite`` on the
    whole tensor would allocate temporaries as large as ``x``)."""
    flat = x.reshape(-1)
    return sum(int((~torch.isfinite(part)).sum()) for part in flat.split(FINITE_CHUNK))


def _as_labels(y: torch.Tensor, name: str) -> torch.Tensor:
    if y.is_floating_point():
        whole = torch.isfinite(y) & (y == y.round())
        if not bool(whole.all()):
            example = y[~whole][0].item()
            raise DataError(
                f"{name}: y must hold integer class labels but has values like {example}."
            )
    return y.to(torch.int64)
