"""What the model and data loaders share: a file's format from its bytes, safe loading.

A format is recognised by content, never by extension (:func:`sniff`). ``torch.save`` files are
read with ``torch.load(weights_only=True)`` (:func:`torch_load`): tensors and plain containers,
never other pickled objects. Damaged files get one wording (:func:`corrupt`); the caller passes
the exception type, :class:`ModelError` or :class:`DataError`, so each loader keeps its own.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch

from explorer.limits import MAX_ARCHIVE_MEMBERS

EOCD_SEARCH = 22 + 65535  # a zip's end record and the longest comment it may carry
SAVE_HINT = (
    "save the weights with torch.save(model.state_dict(), path) or "
    "safetensors.torch.save_file(model.state_dict(), path), or the whole model as "
    "TorchScript (torch.jit.script(model).save(path)) or a torch.export program "
    "(torch.export.save(torch.export.export(model, (x,)), path))"
)


def sniff(path: Path, name: str, error: type[Exception]) -> str:
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
        found = zip_directory(path)
        if found and (found[0] > MAX_ARCHIVE_MEMBERS or found[1] > MAX_ARCHIVE_MEMBERS * 1024):
            raise error(
                f"{name}: the archive lists {found[0]:,} members in a directory of "
                f"{found[1]:,} bytes, more than a model or data file has "
                f"({MAX_ARCHIVE_MEMBERS:,}); the file is refused."
            )
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise error(f"{name}: {corrupt(exc)}") from None
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


def zip_directory(path: Path) -> tuple[int, int] | None:
    """(members, central directory bytes) as a zip archive's end records say (the plain one,
    and the zip64 one zipfile prefers), read from the file's last bytes before any zip reader
    parses the directory (parsing a huge one takes memory); None for a file that is no zip."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(max(0, end - EOCD_SEARCH))
        tail = f.read()
    at = len(tail) - 22  # where zipfile looks first: an archive without a comment
    if at < 0 or not tail.startswith(b"PK\x05\x06", at):
        at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    members, directory = struct.unpack_from("<HI", tail, at + 10)
    record = at - 20 - 56  # a zip64 end record just before its locator
    if record >= 0 and tail.startswith(b"PK\x06\x07", at - 20) and tail.startswith(
            b"PK\x06\x06", record):
        members64, directory64 = struct.unpack_from("<QQ", tail, record + 32)
        members, directory = max(members, members64), max(directory, directory64)
    return members, directory


def view_reach(sizes: Sequence[int], strides: Sequence[int], offset: int) -> int:
    """How many storage elements a strided view needs (its last element's index + 1; 0 for
    an empty view): a view reaching past its storage, or with more elements than it reaches
    (stride 0, overlaps), claims values a file does not hold."""
    if any(n == 0 for n in sizes):
        return 0
    return offset + sum((n - 1) * st for n, st in zip(sizes, strides, strict=True)) + 1


def torch_load(path: Path, name: str, error: type[Exception], mmap: bool = False) -> object:
    """``torch.load(weights_only=True)``: tensors and plain containers, never other objects.
    With ``mmap`` the tensors are mapped from the file, not read (their sizes can be checked
    before a byte is copied)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" not in text:
            raise error(f"{name}: {corrupt(exc)}") from None
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        raise error(
            f"{name} holds a pickled Python object{what}, such as a whole nn.Module saved "
            "with torch.save(model). It is not loaded, because unpickling can run arbitrary "
            f"code. Instead, {SAVE_HINT}."
        ) from None
    except Exception as exc:  # torch.load raises RuntimeError, EOFError, ... on damage
        raise error(f"{name}: {corrupt(exc)}") from None


def corrupt(exc: BaseException) -> str:
    """The one message for a damaged file, with the gist of ``exc``."""
    return f"the file is corrupt or truncated ({first_line(exc)}); save or upload it again."


def first_line(exc: BaseException) -> str:
    """The gist of ``exc``: its first line (the last for a TorchScript traceback)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if lines[0].startswith("The following operation failed") else lines[0]
    return line.rstrip(".")


@contextmanager
def temp_file(data: bytes, filename: str) -> Iterator[Path]:
    """``data`` written to a private temporary file named like ``filename`` (no folders)."""
    safe = Path(filename).name or "upload"
    with tempfile.TemporaryDirectory(prefix="pruning-explorer-") as folder:
        path = Path(folder) / safe
        path.write_bytes(data)
        yield path


@contextmanager
def quiet_torch() -> Iterator[None]:
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
