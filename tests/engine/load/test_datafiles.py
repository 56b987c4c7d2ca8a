"""Loading validation data: every format round-trips, every bad file gets one clear error,
and a loaded set is checked against the model it will evaluate.

Files are written in ``tmp_path`` from the digits validation set (the shared ``digits``
fixture), which is also the reference each loaded set is compared with.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from explorer.errors import DataError
from explorer.load.data_file import check_compatible, load_data, load_data_bytes
from explorer.load.demos import load_demo

# ----------------------------------------------------------------- data that loads


def test_npz_data_loads(tmp_path, digits):
    path = tmp_path / "val.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy())
    data = load_data(path)
    assert torch.equal(data.x, digits.x) and torch.equal(data.y, digits.y)
    assert data.num_classes == 10 and data.name == "val.npz"


def test_pt_data_loads(tmp_path, digits):
    path = tmp_path / "val.pt"
    torch.save({"x": digits.x, "y": digits.y}, path)
    data = load_data(path, num_classes=10)
    assert torch.equal(data.x, digits.x) and torch.equal(data.y, digits.y)


def test_integer_x_and_whole_float_y_are_converted(tmp_path, digits):
    path = tmp_path / "ints.npz"
    pixels = (digits.x.numpy() * 16).round().astype(np.uint8)
    np.savez(path, x=pixels, y=digits.y.numpy().astype(np.float64))
    data = load_data(path)
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.int64
    assert torch.equal(data.x, torch.from_numpy(pixels).float())
    assert torch.equal(data.y, digits.y)


def test_data_bytes_upload(tmp_path, digits):
    path = tmp_path / "val.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy())
    data = load_data_bytes(path.read_bytes(), "val.npz")
    assert torch.equal(data.x, digits.x) and data.name == "val.npz"


def test_loaded_model_and_data_are_compatible(tmp_path, digits):
    path = tmp_path / "val.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy())
    check_compatible(load_demo("digits-cnn"), load_data(path))


# ----------------------------------------------------------------- data that does not


def save_npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_empty_data_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_data(path)


def test_truncated_npz(tmp_path, digits):
    path = save_npz(tmp_path, x=digits.x.numpy(), y=digits.y.numpy())
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_data(path)


def test_unknown_data_format(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(DataError, match="not a data file"):
        load_data(path)


def test_missing_keys_lists_found_keys(tmp_path, digits):
    path = save_npz(tmp_path, images=digits.x.numpy(), y=digits.y.numpy())
    with pytest.raises(DataError, match="missing 'x'; the file has keys 'images', 'y'"):
        load_data(path)


def test_pt_data_missing_keys(tmp_path, digits):
    path = tmp_path / "val.pt"
    torch.save({"inputs": digits.x, "labels": digits.y}, path)
    with pytest.raises(
        DataError, match="missing 'x' and 'y'; the file has keys 'inputs', 'labels'"
    ):
        load_data(path)


def test_pt_data_that_is_not_a_dict(tmp_path, digits):
    path = tmp_path / "val.pt"
    torch.save([digits.x, digits.y], path)
    with pytest.raises(DataError, match="expected a dict"):
        load_data(path)


def test_pt_data_with_pickled_object_is_refused(tmp_path, digits):
    path = tmp_path / "val.pt"
    torch.save({"x": digits.x, "y": digits.y, "model": nn.Linear(2, 2)}, path)
    with pytest.raises(DataError, match="pickled Python object"):
        load_data(path)


def test_object_arrays_are_not_unpickled(tmp_path, digits):
    path = save_npz(tmp_path, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(DataError, match="stored as Python objects"):
        load_data(path)


def test_x_must_be_numbers(tmp_path):
    path = save_npz(tmp_path, x=np.array([["a"], ["b"]]), y=np.array([0, 1]))
    with pytest.raises(DataError, match="expected numbers"):
        load_data(path)


def test_fractional_labels(tmp_path, digits):
    y = digits.y.numpy().astype(np.float32)
    y[5] = 2.5
    path = save_npz(tmp_path, x=digits.x.numpy(), y=y)
    with pytest.raises(DataError, match="integer class labels but has values like 2.5"):
        load_data(path)


def test_one_hot_labels(tmp_path, digits):
    path = save_npz(tmp_path, x=digits.x.numpy(), y=np.eye(10)[digits.y.numpy()])
    with pytest.raises(DataError, match=r"y has shape \(360, 10\).*argmax"):
        load_data(path)


def test_lengths_differ(tmp_path, digits):
    path = save_npz(tmp_path, x=digits.x.numpy(), y=digits.y.numpy()[:-1])
    with pytest.raises(DataError, match="x has 360 samples but y has 359 labels"):
        load_data(path)


def test_nan_in_x(tmp_path, digits):
    x = digits.x.numpy().copy()
    x[3, 0, 2, 2] = np.nan
    path = save_npz(tmp_path, x=x, y=digits.y.numpy())
    with pytest.raises(DataError, match="x has 1 NaN"):
        load_data(path)


def test_negative_labels(tmp_path, digits):
    y = digits.y.numpy().copy()
    y[0] = -1
    path = save_npz(tmp_path, x=digits.x.numpy(), y=y)
    with pytest.raises(DataError, match="negative labels"):
        load_data(path)


def test_labels_beyond_num_classes(tmp_path, digits):
    path = save_npz(tmp_path, x=digits.x.numpy(), y=digits.y.numpy())
    with pytest.raises(DataError, match="labels go up to 9 but num_classes is 5"):
        load_data(path, num_classes=5)


# ----------------------------------------------------------------- compatibility


def test_sample_shape_mismatch(tmp_path, digits):
    path = save_npz(tmp_path, x=digits.x.reshape(-1, 64).numpy(), y=digits.y.numpy())
    with pytest.raises(
        DataError,
        match=r"the model expects \(1, 8, 8\) per sample, the data has "
        r"\(64,\)",
    ):
        check_compatible(load_demo("digits-mlp"), load_data(path))


def test_labels_beyond_model_output(tmp_path, digits):
    y = digits.y.numpy().copy()
    y[0] = 11
    path = save_npz(tmp_path, x=digits.x.numpy(), y=y)
    with pytest.raises(DataError, match="model output width 10 vs labels up to 11"):
        check_compatible(load_demo("digits-cnn"), load_data(path))


def test_data_missing_some_classes_still_fits(tmp_path, digits):
    keep = digits.y < 9
    path = save_npz(tmp_path, x=digits.x[keep].numpy(), y=digits.y[keep].numpy())
    check_compatible(load_demo("digits-cnn"), load_data(path))
    check_compatible(load_demo("digits-cnn"), load_data(path, num_classes=10))
