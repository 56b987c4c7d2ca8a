"""Uploads and memory in the app (issue 9, class 6): data over one session's ceiling, or over
what the server has left for uploads, is refused in an error box before it is read, the page
stays usable, and an upload's memory goes back to the server when its session is gone.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from hostile_files import peak_growth, zeros_npz
from pagetest import open_url
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from explorer.load.memory import UPLOADS


@pytest.fixture
def weights(mlp) -> bytes:
    return save({k: v.contiguous() for k, v in mlp.model.state_dict().items()})


def upload(at: AppTest, model: tuple[str, bytes], data: tuple[str, bytes]) -> AppTest:
    at.file_uploader(key="upload_model").set_value((*model, "application/octet-stream"))
    at.file_uploader(key="upload_data").set_value((*data, "application/octet-stream"))
    next(b for b in at.button if b.label == "Load").click().run()
    return at


def digits_npz(tmp_path, digits) -> bytes:
    path = tmp_path / "val.npz"
    np.savez(path, x=digits.x.numpy(), y=digits.y.numpy())
    return path.read_bytes()


def test_data_over_the_session_ceiling_is_refused_before_it_is_read(tmp_path, weights):
    path = zeros_npz(tmp_path / "million.npz", 4_000_000, (1, 8, 8))  # 1 GB decoded
    at = open_url("model", model="digits-cnn")
    gc.collect()  # an earlier test's finished session frees its upload now, not mid-test
    used = UPLOADS.used
    with peak_growth() as growth:
        upload(at, ("mlp.safetensors", weights), ("million.npz", path.read_bytes()))
    assert not at.exception
    assert at.error and "at most" in at.error[0].value and "images" in at.error[0].value
    assert at.session_state["model"] == "digits-cnn"
    assert at.dataframe, "the page below the error is drawn"
    assert UPLOADS.used == used
    assert growth.bytes < 400 << 20  # the model and the page, not 1 GB of zeros


def test_server_at_its_upload_limit_refuses_then_accepts(tmp_path, weights, digits):
    at = open_url("model", model="digits-cnn")
    blocker = UPLOADS.reserve(UPLOADS.limit - UPLOADS.used - 1024)
    try:
        upload(at, ("mlp.safetensors", weights), ("val.npz", digits_npz(tmp_path, digits)))
        assert not at.exception
        assert at.error and "server is at its memory limit for uploads" in at.error[0].value
        assert at.session_state["model"] == "digits-cnn"
    finally:
        blocker.release()
    upload(at, ("mlp.safetensors", weights), ("val.npz", digits_npz(tmp_path, digits)))
    assert not at.error and at.session_state["model"].startswith("upload:")


def test_an_upload_holds_memory_until_its_session_is_gone(tmp_path, weights, digits):
    gc.collect()
    before = UPLOADS.used
    at = upload(open_url("model", model="digits-cnn"), ("mlp.safetensors", weights),
                ("val.npz", digits_npz(tmp_path, digits)))
    assert not at.error and at.session_state["model"].startswith("upload:")
    assert UPLOADS.used > before
    del at
    gc.collect()
    assert UPLOADS.used == before
