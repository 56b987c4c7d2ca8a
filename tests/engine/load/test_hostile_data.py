"""Hostile validation data (issue 9, class 6): files small on disk that claim, or inflate to,
gigabytes; tensors that claim more values than the file stores; layouts and dtypes that are
not plain numbers. Each is refused from its headers with one DataError, before its values are
read (the process's peak memory barely moves), and the CLI exits 2 with one line.

Every file is built for real in ``tmp_path`` (see ``tests/hostile_files.py``).
"""

from __future__ import annotations

import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_files import (
    Member,
    deflated,
    npy_header,
    peak_growth,
    stored,
    write_zip,
    zeros_npz,
)

from explorer.cli import main
from explorer.errors import DataError
from explorer.limits import MAX_DATA_FILE_BYTES, MAX_DATA_TENSOR_BYTES
from explorer.load.data_file import DataShape, load_data, peek_data

GROWTH_LIMIT = 200 << 20  # what refusing (or reading a small file) may cost, at most


def refused(path: Path, match: str) -> str:
    """Assert that both peeking and loading ``path`` raise a DataError matching ``match``
    while the process's peak memory grows by under GROWTH_LIMIT; the message."""
    with peak_growth() as growth:
        with pytest.raises(DataError, match=match):
            peek_data(path)
        with pytest.raises(DataError, match=match) as caught:
            load_data(path)
    assert growth.bytes < GROWTH_LIMIT, f"refusing took {growth.mib:.0f} MiB"
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    return message


# ----------------------------------------------------------------- .npz


def test_header_claiming_a_trillion_images(tmp_path):
    path = write_zip(tmp_path / "trillion.npz", [
        stored(npy_header((10**12, 1, 8, 8)) + bytes(16), "x.npy"),
        stored(npy_header((10**12,), "<i8"), "y.npy"),
    ])
    assert path.stat().st_size < 1000
    message = refused(path, r"claim 1,000,000,000,000 samples of \(1, 8, 8\)")
    assert "at most 1 GiB" in message.replace(".0 GiB", " GiB")
    assert f"at most {MAX_DATA_TENSOR_BYTES // (256 + 8):,} samples" in message


def test_two_megabyte_npz_that_inflates_to_gigabytes(tmp_path):
    samples = 75_497_472  # x: 1.1 GiB of float32 zeros, y: 0.6 GiB of int64 zeros
    path = zeros_npz(tmp_path / "bomb.npz", samples, (1, 2, 2), y_descr="<i8")
    assert path.stat().st_size < 2.5e6
    with zipfile.ZipFile(path) as archive:  # the archive itself is consistent and honest
        assert sum(i.file_size for i in archive.infolist()) > 1.7e9
    refused(path, r"claim 75,497,472 samples .* 1\.7 GiB once loaded")


def test_stream_longer_than_its_header_says_is_refused(tmp_path):
    x_head = npy_header((10, 1, 8, 8))  # 2,560 bytes of values claimed...
    path = write_zip(tmp_path / "liar.npz", [
        deflated(x_head, 64 << 20, "x.npy"),  # ...but the member inflates to 64 MiB
        stored(npy_header((10,), "|i1") + bytes(10), "y.npy"),
    ])
    refused(path, r"x's header claims 2,560 bytes of values but the archive member holds "
                  r"67,108,864; the file is inconsistent")


def test_stream_longer_than_its_declared_size_is_read_only_as_far_as_declared(tmp_path):
    values = np.arange(640, dtype="<f4").reshape(10, 1, 8, 8)
    head = npy_header(values.shape)
    bomb = deflated(head + values.tobytes(), 512 << 20, "x.npy")  # 512 MiB more in the stream
    honest = stored(head + values.tobytes(), "x.npy")
    x = replace(bomb, size=honest.size, crc=honest.crc)  # declared: the honest size
    path = write_zip(tmp_path / "tail.npz", [x, stored(npy_header((10,), "|i1") + bytes(10),
                                                       "y.npy")])
    with peak_growth() as growth:
        data = load_data(path)
    assert growth.bytes < GROWTH_LIMIT
    assert torch.equal(data.x, torch.from_numpy(values))


def test_truncated_stream_is_a_message(tmp_path):
    head = npy_header((10, 1, 8, 8))
    cut = Member("x.npy", head + bytes(100), len(head) + 2560, 0, method=0)  # 2,460 missing
    path = write_zip(tmp_path / "short.npz", [
        cut, stored(npy_header((10,), "|i1") + bytes(10), "y.npy")])
    refused(path, "corrupt or truncated")


@pytest.mark.parametrize(("descr", "match"), [
    ("|O", "stored as Python objects"),
    ("<c8", "expected real numbers"),
    ("<U3", "expected numbers"),
    ("|V8", "expected numbers"),
])
def test_non_numeric_dtypes_are_refused_from_the_header(tmp_path, descr, match):
    path = write_zip(tmp_path / "odd.npz", [
        stored(npy_header((2, 3), descr), "x.npy"),  # header only: values never needed
        stored(npy_header((2,), "|i1") + bytes(2), "y.npy"),
    ])
    refused(path, match)


def test_a_shape_of_thousands_of_dimensions_is_quoted_briefly(tmp_path):
    path = write_zip(tmp_path / "dims.npz", [
        stored(npy_header((2, 1)) + bytes(8), "x.npy"),
        stored(npy_header((2,) + (1,) * 2000, "|i1") + bytes(2), "y.npy"),
    ])
    refused(path, r"y has shape \(2, 1, 1, \.\.\.\); expected \(N,\)")


def test_big_endian_and_fortran_order_load_exactly(tmp_path, digits):
    x = np.asfortranarray(digits.x.numpy().reshape(-1, 64).astype(">f4"))
    path = tmp_path / "odd_order.npz"
    np.savez_compressed(path, x=x, y=digits.y.numpy().astype(">i2"))
    data = load_data(path)
    assert torch.equal(data.x, digits.x.reshape(-1, 64)) and torch.equal(data.y, digits.y)


def test_peek_reads_headers_only(tmp_path, digits):
    path = tmp_path / "val.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy())
    assert peek_data(path) == DataShape(360, (1, 8, 8), "float32", "val.npz")
    big = zeros_npz(tmp_path / "big.npz", 2_000_000, (1, 8, 8))  # 512 MB of x, unread
    with peak_growth() as growth:
        shape = peek_data(big)
    assert shape == DataShape(2_000_000, (1, 8, 8), "float32", "big.npz")
    assert shape.nbytes == 2_000_000 * (64 * 4 + 8)
    assert growth.bytes < 20 << 20


def test_file_over_the_size_limit_is_refused_by_its_size(tmp_path):
    path = tmp_path / "huge.npz"
    with path.open("wb") as f:
        f.truncate(MAX_DATA_FILE_BYTES + 1)  # a sparse file: no disk, no memory
    refused(path, r"a data file may be at most 200\.0 MiB here")


def test_many_keys_are_named_briefly(tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, **{f"k{i}": np.zeros(1) for i in range(200)})
    message = refused(path, "missing 'x' and 'y'")
    assert "and 195 more" in message


def test_archive_listing_many_members_is_refused_before_it_is_parsed(tmp_path):
    members = [stored(b"", f"{i:06d}.npy") for i in range(20_000)]
    counted = write_zip(tmp_path / "many.npz", members)
    refused(counted, "the archive lists 20,000 members")
    lying = write_zip(tmp_path / "lying.npz", members, listed=2)  # its directory says 2
    refused(lying, r"lists 2 members in a directory of 1\.1 MiB")
    zip64 = write_zip(tmp_path / "zip64.npz", [stored(npy_header((1, 1)) + bytes(4), "x.npy"),
                                              stored(npy_header((1,), "|i1") + b"\0", "y.npy")],
                      listed64=10**9)
    refused(zip64, "the archive lists 1,000,000,000 members")


# ----------------------------------------------------------------- .pt


def test_stride_zero_tensor_claiming_a_hundred_million_images(tmp_path):
    path = tmp_path / "expanded.pt"
    torch.save({"x": torch.zeros(1, 1, 8, 8).expand(10**8, 1, 8, 8),
                "y": torch.zeros(1, dtype=torch.int64).expand(10**8)}, path)
    assert path.stat().st_size < 5000
    message = refused(path, r"x claims 6,400,000,000 values \(100,000,000 samples\) but the "
                            r"file stores 64")
    assert "expanded (stride 0)" in message and "x.contiguous()" in message


def test_overlapping_view_is_refused(tmp_path):
    path = tmp_path / "overlap.pt"
    x = torch.arange(1009.0).as_strided((1000, 10), (1, 1))  # 10,000 values over 1,009
    torch.save({"x": x, "y": torch.zeros(1000, dtype=torch.int64)}, path)
    refused(path, "x claims 10,000 values .* stores 1,009")


def test_a_slice_of_a_bigger_tensor_loads(tmp_path, digits):
    path = tmp_path / "slice.pt"
    torch.save({"x": digits.x[::2], "y": digits.y[::2]}, path)  # views on whole storages
    data = load_data(path)
    assert torch.equal(data.x, digits.x[::2]) and torch.equal(data.y, digits.y[::2])


@pytest.mark.parametrize(("make", "match"), [
    (lambda: torch.eye(4).reshape(4, 4).to_sparse(), r"x is a sparse_coo tensor; save it dense"),
    (lambda: torch.eye(4).to_sparse_csr(), r"x is a sparse_csr tensor"),
    (lambda: torch.quantize_per_tensor(torch.rand(4, 4), 0.1, 0, torch.quint8),
     r"x is quantized \(torch.quint8\); save x.dequantize\(\)"),
    (lambda: torch.empty(10**9, 4, device="meta"), r"x is a meta tensor, which has a shape "
                                                   "but no values"),
    (lambda: torch.zeros(4, 4, dtype=torch.complex64), "expected real numbers"),
])
def test_tensors_that_are_not_plain_numbers(tmp_path, make, match):
    path = tmp_path / "odd.pt"
    with warnings.catch_warnings():  # torch warns that sparse CSR and quantization are beta
        warnings.simplefilter("ignore")
        torch.save({"x": make(), "y": torch.zeros(4, dtype=torch.int64)}, path)
    refused(path, match)


def test_legacy_torch_format_is_refused(tmp_path, digits):
    path = tmp_path / "legacy.pt"
    torch.save({"x": digits.x, "y": digits.y}, path, _use_new_zipfile_serialization=False)
    refused(path, r"legacy \(before 1.6\) format")


def test_compressed_torch_archive_is_refused(tmp_path, digits):
    saved = tmp_path / "val.pt"
    torch.save({"x": digits.x, "y": digits.y}, saved)
    path = tmp_path / "deflated.pt"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    refused(path, "compressed members, which torch.save never writes")


def test_huge_pickle_is_refused_before_unpickling(tmp_path, digits):
    path = tmp_path / "lists.pt"
    torch.save({"x": digits.x, "y": digits.y, "notes": list(range(400_000))}, path)
    refused(path, r"its pickle is 1\.\d MiB, more than the 1\.0 MiB")


# ----------------------------------------------------------------- the CLI


@pytest.mark.parametrize("build", [
    lambda p: write_zip(p / "t.npz", [stored(npy_header((10**12, 1, 8, 8)), "x.npy"),
                                      stored(npy_header((10**12,), "<i8"), "y.npy")]),
    lambda p: zeros_npz(p / "bomb.npz", 75_497_472, (1, 2, 2), y_descr="<i8"),
    lambda p: _save(p / "expanded.pt", torch.zeros(1, 1, 8, 8).expand(10**8, 1, 8, 8),
                    torch.zeros(1, dtype=torch.int64).expand(10**8)),
    lambda p: _save(p / "sparse.pt", torch.eye(4).reshape(4, 1, 2, 2).to_sparse(),
                    torch.zeros(4, dtype=torch.int64)),
], ids=["trillion", "bomb", "stride0", "sparse"])
def test_cli_refuses_with_one_line(tmp_path, capsys, build):
    path = build(tmp_path)
    with peak_growth() as growth:
        code = main(["evaluate", "--model", "digits-cnn", "--data", str(path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert growth.bytes < GROWTH_LIMIT


def _save(path: Path, x: torch.Tensor, y: torch.Tensor) -> Path:
    torch.save({"x": x, "y": y}, path)
    return path



def test_loading_costs_about_what_the_data_decodes_to(tmp_path):
    path = zeros_npz(tmp_path / "million.npz", 1_000_000, (1, 8, 8))  # 256 MB of float32
    with peak_growth() as growth:
        data = load_data(path)
    decoded = data.x.nbytes + data.y.nbytes
    assert decoded == peek_data(path).nbytes
    assert growth.bytes < 1.25 * decoded, f"{growth.mib:.0f} MiB for {decoded >> 20} MiB"
