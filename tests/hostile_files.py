"""Crafted data files for the hostile-input tests: small on disk, huge (or lying) in headers.

Each is built for real, byte by byte where ``np.savez`` cannot write it: ``.npy`` headers
written by numpy's own ``write_array_header_1_0``, zip archives laid out by hand (local
headers, central directory, end record) so that a member's declared size, its stream and its
``.npy`` header can disagree, and deflate streams of gigabytes of zeros assembled from one
compressed 16 MiB segment (a full flush makes each segment independent), so a test never
compresses or holds the gigabytes it describes. :func:`peak_growth` measures what a call
really allocated (the kernel's peak RSS, reset before the call).
"""

from __future__ import annotations

import ctypes
import gc
import io
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEGMENT = 16 << 20  # bytes of zeros per repeated deflate segment
CRC_UP_TO = 256 << 20  # larger streams get crc 0: they are meant to be refused unread


@dataclass(frozen=True)
class Member:
    """One zip member: ``stream`` as stored, ``size`` as declared (uncompressed), its crc."""

    name: str
    stream: bytes
    size: int
    crc: int
    method: int = 8  # 0 stored, 8 deflated


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """The magic and header numpy writes for an array of ``shape`` and dtype ``descr``."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def deflated(head: bytes, zeros: int, name: str) -> Member:
    """A deflated member whose content is ``head`` then ``zeros`` zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [compressor.compress(head), compressor.flush(zlib.Z_FULL_FLUSH)]
    full, rest = divmod(zeros, SEGMENT)
    if full:
        segment = compressor.compress(bytes(SEGMENT)) + compressor.flush(zlib.Z_FULL_FLUSH)
        parts.append(segment * full)
    parts += [compressor.compress(bytes(rest)), compressor.flush()]
    crc = 0
    if zeros <= CRC_UP_TO:
        crc = zlib.crc32(head)
        for _ in range(full):
            crc = zlib.crc32(bytes(SEGMENT), crc)
        crc = zlib.crc32(bytes(rest), crc)
    return Member(name, b"".join(parts), len(head) + zeros, crc)


def stored(content: bytes, name: str) -> Member:
    return Member(name, content, len(content), zlib.crc32(content), method=0)


def write_zip(path: Path, members: list[Member], listed: int | None = None,
              listed64: int | None = None) -> Path:
    """A zip archive of ``members`` exactly as given (declared sizes are not checked).

    ``listed`` overrides the member count of the end record; ``listed64`` adds a zip64 end
    record (which zipfile prefers) with that count.
    """
    out, central = bytearray(), bytearray()
    for m in members:
        name = m.name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, m.method, 0, 0x21, m.crc,
                           len(m.stream), m.size, len(name), 0) + name + m.stream
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, m.method, 0,
                               0x21, m.crc, len(m.stream), m.size, len(name), 0, 0, 0, 0, 0,
                               offset) + name
    start = len(out)
    out += central
    if listed64 is not None:
        record = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, listed64, listed64,
                           len(central), start)
        out += struct.pack("<IIQI", 0x07064B50, 0, record, 1)
    count = len(members) if listed is None else listed
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), start, 0)
    path.write_bytes(bytes(out))
    return path


def zeros_npz(path: Path, samples: int, sample_shape: tuple[int, ...],
              x_descr: str = "<f4", y_descr: str = "|i1") -> Path:
    """A consistent ``.npz`` of ``samples`` zero images and zero labels: headers, declared
    sizes and streams agree; the file is about a thousandth of what it decodes to."""
    x_shape = (samples, *sample_shape)
    x_bytes = int(np.prod(x_shape)) * np.dtype(x_descr).itemsize
    y_bytes = samples * np.dtype(y_descr).itemsize
    return write_zip(path, [deflated(npy_header(x_shape, x_descr), x_bytes, "x.npy"),
                            deflated(npy_header((samples,), y_descr), y_bytes, "y.npy")])


def _status(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", text).group(1)) * 1024


@dataclass
class Growth:
    bytes: int = 0

    @property
    def mib(self) -> float:
        return self.bytes / (1 << 20)


@contextmanager
def peak_growth() -> Iterator[Growth]:
    """How far this process's peak resident memory rose above its resident memory at the
    start, over the ``with`` block (Linux, glibc: memory freed earlier is first handed back
    with ``malloc_trim``, so that reusing it is not missed; ``clear_refs`` 5 resets the peak)."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what earlier tests freed leaves the RSS
    Path("/proc/self/clear_refs").write_text("5")
    before = _status("VmRSS")
    growth = Growth()
    try:
        yield growth
    finally:
        growth.bytes = _status("VmHWM") - before
